"""The command-line layer: hydra config groups and the kvsim apps (the only hydra user)."""
