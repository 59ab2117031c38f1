"""Checks a policy's constructor makes of its own parameters.

A policy's parameters come from a command line (``kvsim eviction.ghost_ratio=-5``), a sweep or
a notebook, and nothing else looks at them before the run: a value of the wrong type or out of
range would crash the run once replicas are built (a float as a slice index, a negative queue
size) or, worse, be taken silently (``prefetch.evict=maybe`` as true). So each constructor
checks its parameters with these and raises :class:`PolicyParameterError`, which names the
parameter; the build check (:func:`sim.build.check_policy_builds`) turns it into a one-line
config error naming ``<family>.<param>``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


class PolicyParameterError(TypeError, ValueError):
    """A policy parameter of the wrong type or out of range; ``param`` names it. Both a
    ``TypeError`` and a ``ValueError``, so that code catching either from a constructor (as
    Python's own conventions would have it raise) catches it."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}")

    def __reduce__(self) -> tuple:
        # Parallel sweep launchers pickle a failed job's exception back to the parent.
        return (type(self), (self.param, self.message))


def integer(param: str, value: Any, *, least: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (NumPy's too, not a bool or a float: 2.5
    requests of lookahead mean nothing, and 2.0 is refused as config keys refuse it) ``>= least``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or (least is not None and value < least):
        wanted = "" if least is None else f" >= {least}"
        raise PolicyParameterError(param, f"must be an integer{wanted}, got {value!r}")
    return int(value)


def number(
    param: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
) -> float:
    """``value`` as a ``float`` if it is a finite real number (not a bool) within the bounds:
    ``> above``, ``>= at_least``, ``< below``. NaN is refused by name, as every comparison
    with it is false and it would pass a range check written the other way round."""
    parts = [f"> {above:g}" if above is not None else "", f">= {at_least:g}" if at_least is not None else ""]
    if below is not None:
        parts.append(f"< {below:g}")
    wanted = " and ".join(part for part in parts if part)
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or (above is not None and not value > above)
        or (at_least is not None and not value >= at_least)
        or (below is not None and not value < below)
    ):
        raise PolicyParameterError(param, f"must be a finite number{' ' + wanted if wanted else ''}, got {value!r}")
    return float(value)


def boolean(param: str, value: Any) -> bool:
    """``value`` if it is a bool: any other value would be taken for its truth, so that
    ``maybe``, ``0.5`` or ``"false"`` would all mean true."""
    if not isinstance(value, bool):
        raise PolicyParameterError(param, f"must be true or false, got {value!r}")
    return value


def integer_mapping(param: str, value: Any) -> dict[str, int]:
    """``value`` as a plain dict if it maps names to integers (a hydra ``DictConfig`` too)."""
    if not isinstance(value, Mapping):
        raise PolicyParameterError(param, f"must be a mapping of names to integers, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, numbers.Integral) or isinstance(item, bool):
            raise PolicyParameterError(param, f"must be a mapping of names to integers, got {key!r}: {item!r}")
    return {key: int(item) for key, item in value.items()}
