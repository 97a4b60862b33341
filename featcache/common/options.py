"""One declaration per option: flag, type, choices or range, default and help live on the config field.

In the spirit of scikit-learn's ``_parameter_constraints``: a stage's config dataclass declares
each option once, with :func:`option` as the field's default, and everything else is generated
from it: the argparse flags (:func:`add_arguments`), the YAML/JSON config keys and their
coercion (:func:`values_from_mapping`), and the checks (:func:`check`), whose one-line errors
name the option as the caller spelled it (``--batch-size`` on the command line, ``batch_size``
in a config file or from Python).

Flags default to None in argparse, so "not given" stays distinguishable and the default is
declared once, on the dataclass; help strings get "(default X)" from the same place.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from featcache.common.errors import BadInput

Kind = Literal["value", "list", "paths", "bool", "pair"]
Spelling = Literal["flag", "key", "field"]


@dataclass(frozen=True)
class Opt:
    """The constraints and CLI spelling of one option (kept in the field's metadata)."""

    help: str
    kind: Kind = "value"  # value | list (comma list or YAML list) | paths (repeated flag or YAML list; commas
    # are a path's) | bool (--x/--no-x) | pair (MIN[,MAX] floats)
    type: type | None = None  # int, float or str for "value" options (None: str)
    choices: tuple | None = None
    low: float | None = None  # inclusive bounds of a number
    high: float | None = None
    flag: str | None = None  # default: --field-name
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    group: str | None = None  # argparse group title
    cli: bool = True  # False: Python and config files only
    nullable: bool = False  # None is a valid value (besides the default)
    default_text: str | None = None  # how help states the default, when its value says too little
    check: Callable[[Any], str | None] | None = None  # extra rule: the problem as text, or None


def option(default: Any = MISSING, *, help: str, kw_only: bool = False, **constraints: Any) -> Any:  # noqa: A002
    """A dataclass field declaring one option; see :class:`Opt` for the constraints."""
    meta = {"option": Opt(help=help, **constraints)}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, kw_only=kw_only)
    return field(default=default, metadata=meta, kw_only=kw_only)


def engine_option() -> Any:
    """``--engine``: declared once for both stages (``run`` sends extraction and sweeps to one cluster)."""
    return option("local", help="local, or ray: extraction on Ray Data actors and classifier sweeps through "
                                "joblib's Ray backend, on --address", choices=("local", "ray"), group="engine")


def address_option() -> Any:
    return option(None, help="Ray cluster address", nullable=True, default_text="start a local Ray instance",
                  group="engine")


def fraction_range(value: tuple[float, float]) -> str | None:
    """The check of a MIN,MAX area range (RandomResizedCrop's scale)."""
    lo, hi = value
    return None if 0 < lo <= hi <= 1 else "expected 0 < min <= max <= 1 (fractions of the image area)"


def declared(cls: type) -> list[tuple[dataclasses.Field, Opt]]:
    """The options of a config dataclass, in declaration order."""
    return [(f, f.metadata["option"]) for f in fields(cls) if "option" in f.metadata]


def flag_of(f: dataclasses.Field, opt: Opt) -> str:
    return opt.flag or "--" + f.name.replace("_", "-")


def spell(f: dataclasses.Field, opt: Opt, how: Spelling) -> str:
    return flag_of(f, opt) if how == "flag" else f.name


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def help_text(f: dataclasses.Field, opt: Opt) -> str:
    default = _default(f)
    if opt.default_text is not None:
        said = opt.default_text
    elif default is MISSING or default is None:
        said = ""
    else:
        said = _show(default)
    return f"{opt.help} (default {said})" if said else opt.help


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _pair(text: str) -> tuple[float, float]:
    try:
        parts = [float(t) for t in str(text).split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN or MIN,MAX, e.g. 0.35 or 0.35,1") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN or MIN,MAX, e.g. 0.35 or 0.35,1")
    return (parts[0], parts[1] if len(parts) == 2 else 1.0)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (),
                  only: Iterable[str] | None = None, required: Iterable[str] = ()) -> None:
    """Flags for ``cls``'s options (all defaulting to None: "not given"), grouped as declared."""
    skip, keep, needed = set(exclude), set(only) if only is not None else None, set(required)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f, opt in declared(cls):
        if not opt.cli or f.name in skip or (keep is not None and f.name not in keep):
            continue
        target: Any = parser
        if opt.group:
            target = groups.get(opt.group) or groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        names = [flag_of(f, opt), *opt.aliases]
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text(f, opt)}
        if f.name in needed:
            kw["required"] = True
        if opt.metavar:
            kw["metavar"] = opt.metavar
        if opt.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif opt.kind == "list":
            kw["type"] = _csv
        elif opt.kind == "paths":
            kw["action"] = "append"
        elif opt.kind == "pair":
            kw["type"] = _pair
            kw.setdefault("metavar", "MIN[,MAX]")
        else:
            if opt.type in (int, float):
                kw["type"] = opt.type
            if opt.choices:
                kw["choices"] = opt.choices
        target.add_argument(*names, **kw)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` given on the command line (those left None are not given)."""
    return {f.name: getattr(args, f.name) for f, _ in declared(cls) if getattr(args, f.name, None) is not None}


def _problem(opt: Opt, value: Any) -> str | None:
    """What is wrong with ``value`` (already coerced), or None."""
    if value is None:
        return None if opt.nullable else "expected a value"
    if opt.kind == "bool":
        return None if isinstance(value, bool) else "expected true or false"
    if opt.kind == "paths":
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
            return "expected a path or a list of paths"
        return opt.check(value) if opt.check else None
    if opt.kind == "list":
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
            return "expected a list of names or a comma-separated string"
        bad = [v for v in value if opt.choices and v not in opt.choices]
        if bad:
            return f"unknown {', '.join(map(repr, bad))}; expected names among {', '.join(opt.choices)}"
        return opt.check(value) if opt.check else None
    if opt.kind == "pair":
        ok = (isinstance(value, tuple) and len(value) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
        if not ok:
            return "expected MIN or MIN,MAX"
        return opt.check(value) if opt.check else None
    if opt.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "expected an integer"
    if opt.type is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value)):
        return "expected a number"
    if opt.type in (None, str) and not isinstance(value, str):
        return "expected a string"
    if opt.choices and value not in opt.choices:
        return f"expected one of {', '.join(map(str, opt.choices))}"
    if opt.low is not None and value < opt.low:
        return f"must be >= {opt.low:g}"
    if opt.high is not None and value > opt.high:
        return f"must be <= {opt.high:g}"
    return opt.check(value) if opt.check else None


def _coerce(opt: Opt, value: Any) -> Any:
    """A config file's (or Python caller's) spelling of a value as the CLI would have parsed it."""
    if value is None:
        return None
    if opt.kind == "paths":
        if isinstance(value, str):
            return (value,)
        return tuple(value) if isinstance(value, list) else value
    if opt.kind == "list":
        if isinstance(value, str):
            return _csv(value)
        return tuple(value) if isinstance(value, (list, tuple)) else value
    if opt.kind == "pair":
        if isinstance(value, str):
            try:
                return _pair(value)
            except argparse.ArgumentTypeError:
                return value
        if isinstance(value, (list, tuple)) and len(value) in (1, 2):
            return (value[0], value[1] if len(value) == 2 else 1.0)
        return value
    if opt.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_value(f: dataclasses.Field, opt: Opt, value: Any, how: Spelling = "field", where: str = "") -> Any:
    """``value`` coerced, or :class:`BadInput` naming the option as ``how`` spells it."""
    value = _coerce(opt, value)
    problem = _problem(opt, value)
    if problem:
        shown = _show(value) if isinstance(value, tuple) else repr(value)
        raise BadInput(f"{where + ': ' if where else ''}{spell(f, opt, how)} {shown}: {problem}")
    return value


def check(obj: Any, how: Spelling = "field") -> None:
    """Check every option of a config instance (its ``__post_init__`` calls this)."""
    for f, opt in declared(type(obj)):
        value = getattr(obj, f.name)
        if value is MISSING:
            continue
        coerced = check_value(f, opt, value, how)
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)


def values_from_mapping(cls: type, values: dict[str, Any], how: Spelling = "key", where: str = "",
                        unknown: Literal["raise", "ignore"] = "raise") -> dict[str, Any]:
    """Checked and coerced option values of ``cls`` from a mapping (config file keys, with dashes or
    underscores, or argparse's given values); a key ``cls`` does not declare is refused by name."""
    by_name = {f.name: (f, opt) for f, opt in declared(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in by_name:
            if unknown == "raise":
                raise BadInput(f"{where + ': ' if where else ''}unknown option {key!r}; "
                               f"valid: {', '.join(sorted(by_name))}")
            continue
        f, opt = by_name[name]
        out[name] = check_value(f, opt, value, how, where)
    return out


def option_names(cls: type) -> set[str]:
    return {f.name for f, _ in declared(cls)}


def defaults(cls: type) -> dict[str, Any]:
    return {f.name: _default(f) for f, _ in declared(cls) if _default(f) is not MISSING}


def build(cls: type, values: dict[str, Any], how: Spelling = "flag", **fixed: Any) -> Any:
    """``cls(**values, **fixed)`` with each given value checked first and named as ``how`` spells it
    (a rule across options, raised by the constructor, is re-spelled the same way)."""
    checked = values_from_mapping(cls, values, how)
    try:
        return cls(**{**checked, **fixed})
    except BadInput as e:
        if how != "flag":
            raise
        message = str(e)
        for f, opt in declared(cls):
            if message.startswith(f"{f.name} "):
                message = flag_of(f, opt) + message[len(f.name):]
                break
        raise BadInput(message) from None
