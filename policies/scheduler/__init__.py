"""Scheduling policies: admission order and preemption victims."""
