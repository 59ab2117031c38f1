"""GPU microbenchmarks (torch) and the fitting that turns them into cost profiles."""
