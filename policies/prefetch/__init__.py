"""Prefetch policies: staging KV up the hierarchy ahead of need."""
