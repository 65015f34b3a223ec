"""One source per parameter: a stage's dataclass holds every option's default, bounds and help.

A stage declares its parameters once, as fields made by :func:`param`::

    @dataclass(frozen=True, kw_only=True)
    class TissueParams:
        detection_mpp: float = param(8.0, "µm per pixel of the image detection runs on", gt=0)

        def __post_init__(self) -> None:
            check_params(self, "tissue")

Everything else is derived from those fields:

* :func:`check_params` validates an instance (types, bounds, choices) and raises
  :class:`~pathpipe.errors.ConfigError` naming ``<block>.<field>``, the value
  received and what was expected;
* :func:`add_options` adds one ``--field-name`` option per field to an argparse
  parser, with the field's default, help and parser;
* :func:`params_from_args` builds the dataclass back from parsed arguments;
* :func:`schema_properties` gives the JSON-schema of the config block, which
  ``tests/workflow/test_config_schema.py`` holds ``workflow/schemas/config.schema.yaml`` to.

The command-line conventions (the Snakemake helper ``cli_options`` in
``workflow/rules/common.smk`` writes the same ones from a config block): a bool is
``--name`` / ``--no-name``; a list is comma-separated (``a,b``); a mapping is
``key=value`` pairs, comma-separated; ``none`` is None for a nullable field.

This module imports nothing of pathpipe but its errors, so every stage can use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pathpipe.errors import ConfigError

__all__ = [
    "add_options",
    "check_params",
    "comma_list",
    "comma_numbers",
    "key_integers",
    "key_values",
    "otsu_or_number",
    "param",
    "params_from_args",
    "schema_properties",
]

_KINDS = ("bool", "int", "float", "str", "list", "numbers", "mapping", "threshold")


def param(
    default: Any,
    help: str,
    *,
    kind: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    nullable: bool | None = None,
    items: Sequence[str] | None = None,
    values: str = "float",
    cli: bool = True,
) -> Any:
    """A dataclass field carrying its default, help text, type and bounds.

    Parameters
    ----------
    default
        The default value. Lists (``tuple``) and mappings (``dict``) are copied per
        instance.
    help
        One line for ``--help`` and the config schema's ``description``.
    kind
        ``"bool"``, ``"int"``, ``"float"``, ``"str"``, ``"list"`` (tuple of str),
        ``"numbers"`` (tuple of float; bounds apply to each), ``"mapping"`` (str to number) or ``"threshold"`` (``"otsu"`` or a number);
        guessed from ``default`` when omitted.
    ge, gt, le, lt
        Bounds of a number (of every number of a mapping).
    choices
        Allowed values (of every element, for a list).
    nullable
        Whether None is allowed; default: when ``default`` is None.
    items
        Allowed keys of a mapping; its schema then lists them, each with its
        default from ``default``.
    values
        ``"float"`` or ``"int"``: the numbers of a mapping.
    cli
        False for a field the command line does not set (it is passed otherwise).
    """
    if kind is None:
        kind = _guess_kind(default)
    if kind not in _KINDS:
        raise ValueError(f"param kind {kind!r}; expected one of {_KINDS}")
    if values not in ("float", "int"):
        raise ValueError(f"param values {values!r}; expected 'float' or 'int'")
    meta = {
        "help": help,
        "kind": kind,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "choices": tuple(choices) if choices is not None else None,
        "nullable": default is None if nullable is None else nullable,
        "items": tuple(items) if items is not None else None,
        "values": values,
        "cli": cli,
    }
    if isinstance(default, dict):
        frozen = dict(default)
        return dataclasses.field(default_factory=lambda: dict(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _guess_kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, tuple | list):
        if default and all(isinstance(v, int | float) and not isinstance(v, bool) for v in default):
            return "numbers"
        return "list"
    if isinstance(default, dict):
        return "mapping"
    raise ValueError(f"param default {default!r}: give kind= (e.g. kind='int' for None)")


def _fields(cls_or_obj: Any) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls_or_obj) if "kind" in f.metadata]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


# ---- validation -------------------------------------------------------------------


def _bounds_text(m: Mapping[str, Any]) -> str:
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if m[key] is not None:
            parts.append(f"{sym} {m[key]:g}")
    return " and ".join(parts)


def _expected(m: Mapping[str, Any]) -> str:
    kind = m["kind"]
    what = {
        "bool": "true or false",
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "list": "a list of names",
        "numbers": "a non-empty list of numbers",
        "mapping": f"a mapping of names to {'integers' if m['values'] == 'int' else 'numbers'}",
        "threshold": "'otsu' or a number",
    }[kind]
    bounds = _bounds_text(m)
    if bounds:
        what += f" {bounds}"
    if bounds and kind == "numbers":
        what = f"a non-empty list of numbers, each {bounds}"
    if m["choices"] is not None:
        what += f" ({'each ' if kind == 'list' else ''}one of {list(m['choices'])})"
    if m["items"] is not None:
        what += f" with keys among {list(m['items'])}"
    if m["nullable"]:
        what += ", or null"
    return what


def _number_ok(value: Any, m: Mapping[str, Any], *, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        if not isinstance(value, int):
            return False
    elif not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return not (
        (m["ge"] is not None and not value >= m["ge"])
        or (m["gt"] is not None and not value > m["gt"])
        or (m["le"] is not None and not value <= m["le"])
        or (m["lt"] is not None and not value < m["lt"])
    )


def _value_ok(value: Any, m: Mapping[str, Any]) -> bool:
    kind = m["kind"]
    if value is None:
        return m["nullable"]
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        ok = _number_ok(value, m, integer=kind == "int")
    elif kind == "threshold":
        ok = value == "otsu" or _number_ok(value, m, integer=False)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "list":
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        if ok and m["choices"] is not None:
            ok = all(v in m["choices"] for v in value)
        return ok
    elif kind == "numbers":
        return (
            isinstance(value, tuple)
            and len(value) > 0
            and all(_number_ok(v, m, integer=False) for v in value)
        )
    else:  # mapping
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and _number_ok(v, m, integer=m["values"] == "int")
            for k, v in value.items()
        )
        if ok and m["items"] is not None:
            ok = all(k in m["items"] for k in value)
        return ok
    if ok and m["choices"] is not None:
        ok = value in m["choices"]
    return ok


def check_params(obj: Any, block: str) -> None:
    """Validate every :func:`param` field of a parameter dataclass instance.

    Lists given as Python lists are stored as tuples and integers given for a
    float field as floats (``object.__setattr__``, so frozen dataclasses work).

    Raises
    ------
    ConfigError
        Naming ``<block>.<field>``, the value received and the value expected.
    """
    for f in _fields(obj):
        m = f.metadata
        value = getattr(obj, f.name)
        if m["kind"] in ("list", "numbers") and isinstance(value, list):
            value = tuple(value)
            object.__setattr__(obj, f.name, value)
        if m["kind"] == "numbers" and isinstance(value, tuple):
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                value = tuple(float(v) for v in value)
                object.__setattr__(obj, f.name, value)
        if m["kind"] == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            object.__setattr__(obj, f.name, value)
        if not _value_ok(value, m):
            raise ConfigError(f"{block}.{f.name}={value!r}; expected {_expected(m)}")


# ---- command line -------------------------------------------------------------------


def otsu_or_number(value: str) -> str | float:
    """Command-line parser of a threshold: ``"otsu"`` or a number."""
    if value == "otsu":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'otsu' or a number, got {value!r}") from None


def comma_list(value: str) -> tuple[str, ...]:
    """Command-line parser of a list: ``"a,b"`` -> ``("a", "b")``; ``""`` is empty."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def comma_numbers(value: str) -> tuple[float, ...]:
    """Command-line parser of a list of numbers: ``"64,16"`` -> ``(64.0, 16.0)``."""
    try:
        return tuple(float(v) for v in comma_list(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as '64,16', got {value!r}"
        ) from None


def key_values(value: str) -> dict[str, float]:
    """Command-line parser of a mapping: ``"h=10,grey=8"`` -> ``{"h": 10.0, "grey": 8.0}``."""
    out: dict[str, float] = {}
    for item in comma_list(value):
        key, sep, number = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key.strip()] = float(number)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected name=number pairs such as 'h=10,grey=8', got {item!r}"
            ) from None
    return out


def key_integers(value: str) -> dict[str, int]:
    """Command-line parser of a mapping to integers: ``"h=16"`` -> ``{"h": 16}``."""
    out: dict[str, int] = {}
    for key, number in key_values(value).items():
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"expected an integer for {key!r}, got {number:g}")
        out[key] = int(number)
    return out


def _nullable(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(value: str) -> Any:
        return None if value.lower() in ("none", "null") else parse(value)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "list": comma_list,
    "numbers": comma_numbers,
    "mapping": key_values,
    "threshold": otsu_or_number,
}


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else v for v in value) or '""'
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" for k, v in value.items()) or '""'
    return "none" if value is None else str(value)


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Sequence[str] = (),
) -> None:
    """Add one ``--field-name`` option per :func:`param` field of ``cls``.

    The option's default, help and parser come from the field; values are
    validated when the dataclass is built (:func:`params_from_args`).
    """
    for f in _fields(cls):
        m = f.metadata
        if not m["cli"] or f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = _default(f)
        help_text = f"{m['help']} (default: {_default_text(default)})"
        if m["kind"] == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=m["help"]
            )
            continue
        parse = _PARSERS[m["kind"]]
        if m["kind"] == "mapping" and m["values"] == "int":
            parse = key_integers
        if m["nullable"]:
            parse = _nullable(parse)
        choices = m["choices"] if m["kind"] in ("str", "int") else None
        parser.add_argument(
            flag,
            type=parse,
            default=default,
            choices=choices,
            metavar=None if choices else f.name.upper(),
            help=help_text,
        )


def params_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from parsed options of the same names (and ``overrides``)."""
    kwargs = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.init and hasattr(args, f.name)
    }
    kwargs.update(overrides)
    return cls(**kwargs)


# ---- config schema ------------------------------------------------------------------


def schema_properties(cls: type) -> dict[str, dict[str, Any]]:
    """JSON-schema ``properties`` of a config block, from the :func:`param` fields.

    Each property has ``type`` (a list when nullable), ``default``, the bounds
    (``minimum``, ``exclusiveMinimum``, ``maximum``, ``exclusiveMaximum``) and
    ``enum`` (``items.enum`` for a list); a mapping with ``items`` lists each key
    (with its default, if the default mapping has one). The description is free
    text in the schema and is not compared.
    """
    out: dict[str, dict[str, Any]] = {}
    for f in _fields(cls):
        m = f.metadata
        kind = m["kind"]
        default = _default(f)
        prop: dict[str, Any] = {}
        jtype: Any = {
            "bool": "boolean",
            "int": "integer",
            "float": "number",
            "str": "string",
            "list": "array",
            "numbers": "array",
            "mapping": "object",
            "threshold": None,
        }[kind]
        if kind == "threshold":
            prop["oneOf"] = [
                {"type": "string", "enum": ["otsu"]},
                {"type": "number", **_bounds_schema(m)},
            ]
        else:
            prop["type"] = [jtype, "null"] if m["nullable"] else jtype
            if kind in ("int", "float"):
                prop.update(_bounds_schema(m))
            if kind == "mapping":
                number = "integer" if m["values"] == "int" else "number"
                value_schema = {"type": number, **_bounds_schema(m)}
                if m["items"] is not None:
                    prop["properties"] = {
                        k: {**value_schema, **({"default": default[k]} if k in default else {})}
                        for k in m["items"]
                    }
                    prop["additionalProperties"] = False
                else:
                    prop["additionalProperties"] = value_schema
        if m["choices"] is not None:
            if kind == "list":
                prop["items"] = {"type": "string", "enum": list(m["choices"])}
            else:
                prop["enum"] = list(m["choices"]) + ([None] if m["nullable"] else [])
        elif kind == "list":
            prop["items"] = {"type": "string"}
        if kind == "numbers":
            prop["items"] = {"type": "number", **_bounds_schema(m)}
            prop["minItems"] = 1
        prop["default"] = list(default) if isinstance(default, tuple) else default
        out[f.name] = prop
    return out


def _bounds_schema(m: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, word in (
        ("ge", "minimum"),
        ("gt", "exclusiveMinimum"),
        ("le", "maximum"),
        ("lt", "exclusiveMaximum"),
    ):
        if m[key] is not None:
            out[word] = m[key]
    return out
