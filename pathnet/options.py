"""Typed option declarations: ``Opt`` (one option: type, default, help, allowed values) and ``Options``
(a method's or a command's options), from which come validation, ``--help`` text and sweep checks.

``Options.validate(values)`` coerces what it can (CLI strings such as ``"3"``, ``"true"``, ``"1e-3"``),
refuses unknown keys (listing the valid ones), wrong types and out-of-range values with a one-line
:class:`~pathnet.errors.OptionError` naming the key, the value and what is allowed, and returns every
option (defaults filled in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from .errors import OptionError

__all__ = ["Opt", "Options"]

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Opt:
    """One option: its type (int, float, bool, str or tuple), default, one-line help and allowed values.

    `min`/`max` bound numbers inclusively, `above` exclusively; `choices` lists the allowed values;
    `item` is the element type of a tuple; `nullable` allows None; `check(value) -> str | None` returns
    what is wrong with a value (for formats such as a step "2ep"), or None.
    """

    type: type
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    above: float | None = None
    item: type | None = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None

    def allowed(self) -> str:
        """What the option accepts, in words."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type is tuple:
            text = f"a list of {(self.item or str).__name__}"
        else:
            text = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(
                self.type, self.type.__name__)
            bounds = ([f"> {self.above:g}"] if self.above is not None else []) + \
                ([f"≥ {self.min:g}"] if self.min is not None else []) + ([f"≤ {self.max:g}"] if self.max is not None else [])
            if bounds:
                text += " " + " and ".join(bounds)
        return text + (" (or none)" if self.nullable else "")

    def coerce(self, key: str, value: Any, where: str = "") -> Any:
        """`value` as this option's type, or OptionError naming `key`, the value and what is allowed."""
        def bad(extra: str = "") -> OptionError:
            return OptionError(f"{where}{key}={value!r} is not allowed{extra}: {key} must be {self.allowed()}")

        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and self.nullable):
            if self.nullable:
                return None
            raise bad()
        if self.type is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            if not isinstance(value, (list, tuple)):
                raise bad()
            item = Opt(self.item or str, None, self.help, check=self.check)
            return tuple(item.coerce(key, v, where) for v in value)
        out = self._scalar(value, bad)
        if self.choices is not None and out not in self.choices:
            raise bad()
        if self.type in (int, float):
            if (self.min is not None and out < self.min) or (self.max is not None and out > self.max) or \
                    (self.above is not None and not out > self.above):
                raise bad()
        if self.check is not None:
            problem = self.check(out)
            if problem:
                raise OptionError(f"{where}{key}={value!r} is not allowed: {problem}")
        return out

    def _scalar(self, value: Any, bad: Callable[..., OptionError]) -> Any:
        t = self.type
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise bad()
        if t is str:
            if not isinstance(value, str):
                raise bad()
            return value
        if isinstance(value, bool):  # True is an int to Python, never a number to us
            raise bad()
        if isinstance(value, str):
            try:
                value = int(value.strip()) if t is int else float(value.strip())
            except ValueError:
                try:
                    value = float(value.strip())
                except ValueError:
                    raise bad() from None
        if t is int:
            if isinstance(value, float):
                if not (math.isfinite(value) and value.is_integer()):
                    raise bad()
                value = int(value)
            if not isinstance(value, int):
                raise bad()
            return value
        if t is float:
            if not isinstance(value, (int, float)):
                raise bad()
            value = float(value)
            if not math.isfinite(value):
                raise bad()
            return value
        raise TypeError(f"Opt type {t!r} is not supported")  # a declaration error, not a user's

    def describe(self) -> str:
        shown = list(self.default) if isinstance(self.default, tuple) else self.default
        return f"{self.type.__name__ if self.type is not tuple else 'list'} = {shown!r}: {self.help} ({self.allowed()})"


class Options(Mapping[str, Opt]):
    """A named set of :class:`Opt`: ``validate(values) -> dict`` of every option, defaults filled in."""

    def __init__(self, **opts: Opt):
        self._opts = dict(opts)

    def __getitem__(self, key: str) -> Opt:
        return self._opts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._opts)

    def __len__(self) -> int:
        return len(self._opts)

    def __or__(self, other: Options) -> Options:
        return Options(**self._opts, **other._opts)

    def without(self, *keys: str) -> Options:
        return Options(**{k: v for k, v in self._opts.items() if k not in keys})

    def defaults(self) -> dict[str, Any]:
        return {k: o.default for k, o in self._opts.items()}

    def validate(self, values: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
        """Every option: `values` coerced and checked, defaults for the rest. `where` prefixes messages
        (e.g. "snip option ")."""
        if values is not None and not isinstance(values, Mapping):
            raise OptionError(f"{where}options must be a table of key = value, got {type(values).__name__}")
        values = dict(values or {})
        unknown = [k for k in values if k not in self._opts]
        if unknown:
            valid = ", ".join(self._opts) if self._opts else "none (it takes no options)"
            raise OptionError(f"unknown {where}{unknown[0]!r}; valid: {valid}")
        out = self.defaults()
        for k, v in values.items():
            out[k] = self._opts[k].coerce(k, v, where)
        return out

    def describe(self, indent: str = "  ") -> str:
        """One line per option: name, type, default, help and what is allowed."""
        if not self._opts:
            return f"{indent}(no options)"
        return "\n".join(f"{indent}{k}: {o.describe()}" for k, o in self._opts.items())
