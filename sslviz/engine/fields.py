"""A config field declared once: type, allowed values, default, help and where it shows.

Every ``TrainConfig`` field is a :class:`Field`, either in ``config.BASE_FIELDS``
(data, model, budget) or in a technique's declaration (``registry``). The
dataclass, its validation, the CLI flags, the Setup widgets, the YAML keys and
the README's knob table are all read from these objects, so a new knob is one
``Field(...)`` and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

from .params import Bool, Interval, NoneOK, Options, Str, describe


@dataclass(frozen=True)
class Field:
    """One knob of a run."""

    name: str
    default: object
    constraints: tuple  # params constraints; the value must satisfy at least one
    help: str  # one line: what it does, in the user's words
    group: str  # Setup section (and CLI help group) it belongs to
    label: str = ""  # widget label; the name with spaces when empty
    step: float | None = None  # number-input step for float fields
    placeholder: str | None = None  # shown in an empty (None) number input

    @property
    def kind(self) -> str:
        """'options', 'bool', 'int', 'float' or 'str': what widget and CLI type the field takes."""
        for c in self.constraints:
            if isinstance(c, Options):
                return "options"
            if isinstance(c, Bool):
                return "bool"
            if isinstance(c, Interval):
                return "int" if c.type_ is Integral else "float"
            if isinstance(c, Str):
                return "str"
        raise TypeError(f"Field {self.name!r} has no constraint a widget can show: {self.constraints!r}")

    @property
    def choices(self) -> tuple | None:
        """The allowed values of an options field, else None."""
        return next((tuple(c.options) for c in self.constraints if isinstance(c, Options)), None)

    @property
    def optional(self) -> bool:
        """Whether None is allowed (an empty widget means "the default of the dataset")."""
        return any(isinstance(c, NoneOK) for c in self.constraints)

    @property
    def annotation(self) -> type:
        base = {"options": str, "bool": bool, "int": int, "float": float, "str": str}[self.kind]
        return base | None if self.optional else base

    @property
    def widget_label(self) -> str:
        return self.label or self.name.replace("_", " ")

    def coerce(self, value):
        """A value as its widget holds it: floats for float fields, ints for whole-number int fields.

        >>> Field("lr", 0.03, (Interval(float, 0, 1),), "", "g").coerce(1)
        1.0
        """
        if value is None or isinstance(value, bool):
            return value
        if self.kind == "float" and isinstance(value, (int, float)):
            return float(value)
        if self.kind == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    def allowed(self) -> str:
        """The allowed values in words, as error messages say them ("a float in the range [0, 1]")."""
        return describe(self.constraints)
