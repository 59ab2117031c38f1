"""Errors for bad trace input: every message names the file, the place and the field."""

from __future__ import annotations

from typing import Any


class TraceFormatError(ValueError):
    """A trace file or table that is not what it claims to be.

    The message reads ``FILE: line 17: field 'input_length': must be > 0 (got -3)`` so a user can
    jump straight to the offending place. ``unit`` is ``"line"`` (1-based, for text formats) or
    ``"row"`` (0-based request index, for tables).
    """

    def __init__(
        self,
        source: str,
        position: int | None,
        field: str | None,
        problem: str,
        *,
        unit: str = "row",
    ) -> None:
        self.source = source
        self.position = position
        self.field = field
        self.problem = problem
        self.unit = unit
        parts = [str(source)]
        if position is not None:
            parts.append(f"{unit} {position}")
        if field is not None:
            parts.append(f"field '{field}'")
        parts.append(problem)
        super().__init__(": ".join(parts))

    def __reduce__(self) -> tuple:
        # Parallel sweep launchers pickle a failed job's exception back to the parent.
        return (_rebuild, (self.source, self.position, self.field, self.problem, self.unit))


def shown(value: Any) -> str:
    """``value`` as a message quotes it: as written, or its start and length where it runs
    long (a 400-digit count would fill the terminal and bury the line number)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= 40:
        return repr(value) if isinstance(value, str) else text
    unit = "digits" if text.lstrip("+-").isdigit() else "characters"
    return f"{text[:20]}... ({len(text):,} {unit})"


def _rebuild(source: str, position: int | None, field: str | None, problem: str, unit: str) -> TraceFormatError:
    return TraceFormatError(source, position, field, problem, unit=unit)


class TraceSpecError(ValueError):
    """A trace choice that names no usable trace: no file and no generator, a generator that does
    not exist, or parameters it does not take. The message names the ``trace.*`` key to fix."""
