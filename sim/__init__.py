"""The simulation engine: SimPy event loop, tiered KV cache, links, batching, metrics."""
