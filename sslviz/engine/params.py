"""Declarative parameter constraints with scikit-learn's error wording.

scikit-learn's ``_param_validation`` is private, so this is a small equivalent:
each constraint knows how to test a value and how to describe itself, and
``check_params`` turns the first violation into one message that names the
field, the allowed values and what was given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real


class InvalidParameterError(ValueError, TypeError):
    """Raised when a parameter is outside its declared constraints.

    Subclasses both ValueError and TypeError, as scikit-learn's does, so callers
    catching either keep working.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Interval:
    """Numbers of ``type_`` in ``[left, right]`` (``closed`` picks open ends; None = unbounded)."""

    type_: type
    left: float | None
    right: float | None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def is_satisfied_by(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.type_):
            return False
        if isinstance(value, float) and not math.isfinite(value):  # NaN and +-inf are never a valid knob
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        kind = "an int" if self.type_ is Integral else "a float"
        lo = "-inf" if self.left is None else _number(self.left)
        hi = "inf" if self.right is None else _number(self.right)
        lb = "[" if self.closed in ("both", "left") and self.left is not None else "("
        rb = "]" if self.closed in ("both", "right") and self.right is not None else ")"
        return f"{kind} in the range {lb}{lo}, {hi}{rb}"


def real(lo, hi=None, closed: str = "both") -> Interval:
    """Real numbers in ``[lo, hi]`` (``closed`` picks open ends; None = unbounded)."""
    return Interval(Real, lo, hi, closed)


def integer(lo, hi=None) -> Interval:
    """Integers in ``[lo, hi]`` (None = unbounded)."""
    return Interval(Integral, lo, hi, "both")


def _number(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings here)."""

    options: tuple

    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return "a str among {" + ", ".join(repr(o) for o in self.options) + "}"


class Bool:
    """True or False (not 0/1: YAML's `3` for a flag is a mistake worth reporting)."""

    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "a bool"


class Str:
    """Any string."""

    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, str)

    def __str__(self) -> str:
        return "a str"


class NoneOK:
    """The value None."""

    def is_satisfied_by(self, value) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


def describe(constraints) -> str:
    """Join constraint descriptions as scikit-learn does: 'a, b or c'."""
    parts = [str(c) for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def check_params(values: dict, constraints: dict, caller: str) -> None:
    """Raise InvalidParameterError for the first value that satisfies none of its constraints."""
    for name, allowed in constraints.items():
        value = values[name]
        if not any(c.is_satisfied_by(value) for c in allowed):
            raise InvalidParameterError(
                f"The {name!r} parameter of {caller} must be {describe(allowed)}. Got {value!r} instead."
                + _number_hint(value, allowed),
                field=name,
            )


def _number_hint(value, allowed) -> str:
    # YAML 1.1 reads 3e-2 (no dot) as a string; say so instead of leaving the user puzzled.
    if isinstance(value, str) and any(isinstance(c, Interval) for c in allowed):
        try:
            float(value)
        except ValueError:
            return ""
        return f" (YAML reads {value} as text; write it with a dot, e.g. {float(value)!r})"
    return ""
