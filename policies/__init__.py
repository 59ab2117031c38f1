"""Swappable policies, one family a sub-package, one policy a module.

Policies never import the engine; the engine calls them through the narrow interfaces in each
family's ``base.py`` and documents there what it guarantees.
"""

from policies.registry import FAMILIES, UnknownPolicyError, available, resolve

__all__ = ["FAMILIES", "UnknownPolicyError", "available", "resolve"]
