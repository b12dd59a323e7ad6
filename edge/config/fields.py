"""How a configuration key is declared, and how a TOML value is checked against its declaration.

A key is a dataclass field made with :func:`key` (or :func:`computed`): its description and
constraints go in the field's metadata, its type in the annotation. The type says what TOML
value is accepted: ``str``, ``int``, ``float`` (an integer is taken too), ``bool``,
``tuple[str, ...]`` (a list of strings), a ``Literal`` (one of its values), ``tuple[Literal,
...]`` (a list of its values), :data:`Points` (a list of [x, y] pairs of numbers, the corners of
a polygon), any of them ``| None`` (leaving the key out means unset: TOML cannot say null). A
list key declared with ``many`` also takes a single string, read as a list of one.
:func:`settings` resolves those annotations once per class.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Union, cast, get_args, get_origin, get_type_hints

Check = Callable[[Any], str | None]
Legacy = Callable[[Any], bool]

# A polygon's corners, [[x, y], ...]: each key of this type has a ``check`` for the shape.
Points = tuple[tuple[float, float], ...]

_WANT = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def key(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    check: Check | None = None,
    legacy: Legacy | None = None,
    many: bool = False,
) -> Any:
    """Declare one setting: its default (``MISSING``: the key is required), its description
    (it feeds the reference docs) and constraints. ``check`` returns a problem string or None.
    ``legacy`` recognises the value older files wrote for "unset" (an empty string, 0, a
    negative threshold): it is read as unset, with a warning to leave the key out instead.
    ``many``: a list key that also takes one string (``"a"`` is read as ``["a"]``)."""
    return field(default=default, metadata=_metadata(help, min, max, check, legacy, many))


def computed(
    factory: Callable[[], Any],
    help: str,
    *,
    check: Check | None = None,
    legacy: Legacy | None = None,
) -> Any:
    """Declare a setting whose value, when the key is left out, is worked out by ``factory``
    (the description says how, as "Unset = …")."""
    return field(default_factory=factory, metadata=_metadata(help, None, None, check, legacy))


def _metadata(
    help: str,
    min: float | None,
    max: float | None,
    check: Check | None,
    legacy: Legacy | None,
    many: bool = False,
) -> dict[str, Any]:
    return {"help": help, "min": min, "max": max, "check": check, "legacy": legacy, "many": many}


def was(*values: object) -> Legacy:
    """A ``legacy`` test: the value is one of ``values`` (after the type check, so ``0`` never
    matches ``False``)."""
    return lambda value: value in values


@dataclass(frozen=True, slots=True)
class Setting:
    """One declared key, its annotation resolved.

    base: the Python type a TOML value must have (``tuple``: a list of strings). choices: the
    ``Literal`` values (of each element, for a list), empty when any value of ``base`` goes.
    optional: ``None`` (the key left out) means unset. default: ``MISSING`` for a required key
    or a computed one. many: a list that also takes one string.
    """

    name: str
    help: str
    base: type
    choices: tuple[Any, ...]
    optional: bool
    default: Any
    computed: bool
    min: float | None
    max: float | None
    check: Check | None
    legacy: Legacy | None
    many: bool = False

    @property
    def required(self) -> bool:
        return self.default is MISSING and not self.computed

    @property
    def type_name(self) -> str:
        """The type in words, for the reference."""
        name = (
            "list of strings"
            if self.base is tuple
            else "list of [x, y] points"
            if self.base is list
            else self.base.__name__
        )
        if self.many:
            name = "string or list of strings"
        return f"{name}, optional" if self.optional else name


@functools.cache
def settings(cls: type) -> tuple[Setting, ...]:
    """The declared keys of ``cls`` in declaration order (fields without a description, such
    as nested sections, are not keys)."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        base, choices, optional = _resolve(hints[f.name])
        out.append(
            Setting(
                name=f.name,
                help=meta["help"],
                base=base,
                choices=choices,
                optional=optional,
                default=f.default,
                computed=f.default_factory is not MISSING,
                min=meta["min"],
                max=meta["max"],
                check=meta["check"],
                legacy=meta["legacy"],
                many=meta["many"],
            )
        )
    return tuple(out)


def _resolve(hint: Any) -> tuple[type, tuple[Any, ...], bool]:
    """(base type, Literal choices, optional) of an annotation."""
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"a setting has one type, or one type | None: {hint!r}")
        optional, hint = True, rest[0]
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        return type(choices[0]), choices, optional
    if hint == Points:
        return list, (), optional
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        return tuple, get_args(item) if get_origin(item) is Literal else (), optional
    if hint not in _WANT:
        raise TypeError(f"unsupported setting type {hint!r}")
    return hint, (), optional


def check_value(s: Setting, value: Any, path: str, problems: list[str], notes: list[str]) -> Any:
    """``value`` as the setting holds it (an int as a float, a list as a tuple), or None for
    "leave the default": a legacy "unset" (with a note) or a value of the wrong type (with a
    problem)."""
    if s.base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if s.many and isinstance(value, str):
        value = (value,)
    accepted = (list, tuple) if s.base in (tuple, list) else (s.base,)
    if not isinstance(value, accepted) or (isinstance(value, bool) and s.base is not bool):
        want = "a list" if s.base in (tuple, list) else _WANT[s.base]
        if s.many:
            want = "a string or a list of strings"
        problems.append(f"{path}: must be {want}, got {type(value).__name__} {value!r}")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{path}: must be a finite number")
        return None
    if s.base is list:
        problem = s.check(value) if s.check is not None else None
        if problem:
            problems.append(f"{path}: {problem}")
            return None
        corners: list[Any] = list(cast(Iterable[Any], value))
        return tuple((float(p[0]), float(p[1])) for p in corners)
    if isinstance(value, list | tuple):
        if not all(isinstance(v, str) for v in value):
            problems.append(f"{path}: must be a list of strings")
            return None
        value = tuple(str(v) for v in value)
    if s.legacy is not None and s.legacy(value):
        notes.append(
            f"{path} = {value!r} is the old spelling of unset and is read as such; "
            "leave the key out instead"
        )
        return None
    if s.choices:
        shown = ", ".join(repr(c) for c in s.choices)
        for item in value if isinstance(value, tuple) else (value,):
            if item not in s.choices:
                problems.append(f"{path}: {item!r} is not one of {shown}{_unset_hint(s)}")
    if s.min is not None and isinstance(value, int | float) and value < s.min:
        problems.append(f"{path}: must be at least {s.min:g}, got {value}{_unset_hint(s)}")
    if s.max is not None and isinstance(value, int | float) and value > s.max:
        problems.append(f"{path}: must be at most {s.max:g}, got {value}")
    if s.check is not None:
        problem = s.check(value)
        if problem:
            problems.append(f"{path}: {problem} (got {value!r})")
    return value


def _unset_hint(s: Setting) -> str:
    return "; or leave the key out (unset)" if s.optional else ""
