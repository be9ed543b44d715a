"""A :class:`~.types.Tool` from a Python function's signature, type hints and docstring,
and :func:`call_tool`, which runs one with the arguments a model wrote.

The schemas are written so that llama.cpp's JSON-Schema-to-grammar converter can constrain a
call with them: ``X | None`` is ``anyOf [X, {"type": "null"}]`` (a ``type`` list would drop
X's ``items``/``enum``), ``Any`` is a list of every JSON type (``{}`` means "an object"
there), and an ``enum`` mixing JSON types has no ``type`` (the converter reads a ``type``
list before the ``enum`` and would lose it).
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import functools
import inspect
import json
import re
import types
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from ..errors import InvalidInputError
from .types import Tool

__all__ = ["call_tool", "tool_from_function"]

_ANY: dict[str, Any] = {"type": ["string", "number", "boolean", "object", "array", "null"]}
"""Any JSON value. Compared against, never handed out: :func:`_any` gives a fresh copy."""
_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}
_SETS = (set, frozenset, abc.Set, abc.MutableSet)
_ARRAYS = (list, tuple, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection, *_SETS)
_OBJECTS = (dict, abc.Mapping, abc.MutableMapping)
_KEY_WRAPPERS = {"Required", "NotRequired", "ReadOnly"}  # TypedDict key qualifiers
_SUPPORTED = (
    "str, int, float, bool, list[...], dict[str, ...], Literal, an Enum, a dataclass or a TypedDict"
)

_SECTION = re.compile(r"^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*$")
_ARG_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_OTHER_SECTIONS = {"returns", "return", "yields", "raises", "examples", "example", "notes"}
_OTHER_SECTIONS |= {"note", "attributes", "see also", "warnings", "warning", "todo"}
_GOOGLE_ARG = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")
_REST_PARAM = re.compile(
    r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:.*\s)?(\w+)\s*:(.*)$"
)


class _NoSchema(Exception):
    """``hint`` has no JSON Schema; re-raised as InvalidInputError naming the parameter."""

    def __init__(self, hint: Any, why: str = "") -> None:
        super().__init__(hint, why)
        self.hint, self.why, self.param = hint, why, ""


def tool_from_function(fn: Callable[..., Any]) -> Tool:
    """The tool ``fn`` describes: its ``__name__``, its docstring's first paragraph, and a
    JSON Schema of its parameters from their type hints (descriptions from ``Args:`` or
    ``:param:``). Raises :class:`InvalidInputError` for what a model could not be told."""
    if not callable(fn):
        raise InvalidInputError(f"a tool needs a function, not {type(fn).__name__}")
    target, bound = _unwrap(fn)
    name = getattr(target, "__name__", None)
    if not isinstance(name, str):
        raise InvalidInputError(f"{fn!r} has no __name__; wrap it in a `def` to make it a tool")
    if name == "<lambda>":
        raise InvalidInputError(
            "a lambda cannot be a tool: a tool needs a name; use `def name(...)`"
        )
    doc = inspect.getdoc(target) or ""
    hints = _hints(target, f"tool {name!r}")
    notes = _arg_docs(doc)
    fields: list[tuple[str, Any, Any]] = []
    for p in _parameters(fn, bound):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star, like = (
                ("*", "list[str]") if p.kind is p.VAR_POSITIONAL else ("**", "dict[str, str]")
            )
            raise InvalidInputError(
                f"tool {name!r}: {star}{p.name} cannot be described to the model; replace it "
                f"with named, typed parameters (e.g. `{p.name}: {like}`)"
            )
        if p.name in ("self", "cls") and p.name not in hints:
            raise InvalidInputError(
                f"tool {name!r}: its first parameter is {p.name!r}; pass the bound method "
                "(obj.method), not the function from the class"
            )
        if p.name not in hints:
            raise InvalidInputError(
                f"tool {name!r}: parameter {p.name!r} has no type hint; add one "
                f"(e.g. `{p.name}: str`) so the model knows what to send"
            )
        fields.append((p.name, hints[p.name], p.default))
    try:
        params = _object(fields, notes, ())
    except _NoSchema as e:
        kind = repr(e.hint) if get_args(e.hint) else getattr(e.hint, "__name__", repr(e.hint))
        raise InvalidInputError(
            f"tool {name!r}: parameter {e.param!r} uses {kind}, which has no JSON Schema; "
            f"{e.why or 'use ' + _SUPPORTED}"
        ) from None
    return Tool(name=name, description=_summary(doc), parameters=params, function=fn)


def call_tool(tool: Tool, arguments: Mapping[str, Any]) -> str:
    """Run ``tool.function(**arguments)`` and give the text of the tool result: a str as is,
    anything else as JSON. Enum parameters are made from their values, dataclasses from
    objects. A failing tool or bad arguments give ``error: ...`` (never an exception), so
    the model can read what went wrong and try again."""
    fn = tool.function
    if fn is None:
        raise InvalidInputError(
            f"tool {tool.name!r} has no Python function to run; make it with "
            "Tool.from_function(fn) or Tool(..., function=fn)"
        )
    try:
        args, kwargs = _bind(tool.name, fn, arguments)
    except _BadArguments as e:
        return f"error: {e}"
    try:
        result = fn(*args, **kwargs)
        return result if isinstance(result, str) else _text(result)
    except Exception as e:
        return f"error: {type(e).__name__}: {e}"


# --- the function ---------------------------------------------------------------------


def _unwrap(fn: Callable[..., Any]) -> tuple[Callable[..., Any], frozenset[str]]:
    """The function behind ``functools.partial`` layers, and the names they bind by keyword."""
    bound: set[str] = set()
    while isinstance(fn, functools.partial):
        bound |= set(fn.keywords)
        fn = fn.func
    return fn, frozenset(bound)


def _parameters(fn: Callable[..., Any], bound: frozenset[str]) -> list[inspect.Parameter]:
    """What a caller passes: ``self``/``cls`` of bound methods and partial's bound names out."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"cannot read the signature of {fn!r} ({e})") from None
    return [p for p in sig.parameters.values() if p.name not in bound]


def _hints(target: Any, where: str) -> dict[str, Any]:
    try:
        return get_type_hints(target, include_extras=True)
    except Exception as e:  # NameError for a type it cannot find, TypeError for odd objects
        raise InvalidInputError(
            f"{where}: cannot resolve its type hints ({type(e).__name__}: {e}); "
            "define the types they name where the function's module can see them"
        ) from None


def _summary(doc: str) -> str:
    """The docstring's first paragraph, on one line; what the model reads about the tool."""
    lines: list[str] = []
    for line in doc.splitlines():
        if not line.strip() or _section(line) is not None or line.lstrip().startswith(":"):
            break
        lines.append(line)
    return " ".join(" ".join(lines).split())


def _section(line: str) -> str | None:
    """The lower-cased name of the docstring section ``line`` opens (``args``), if any."""
    m = _SECTION.match(line)
    name = m.group(1).lower() if m else None
    return name if name in _ARG_SECTIONS | _OTHER_SECTIONS else None


def _arg_docs(doc: str) -> dict[str, str]:
    """Each parameter's description from a Google ``Args:`` section or reST ``:param x:``
    fields; continuation lines are the ones indented deeper than the entry."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    entry_indent = section_indent = -1  # -1: not inside an Args section
    in_args = False
    for line in doc.splitlines():
        text, indent = line.strip(), len(line) - len(line.lstrip())
        rest, section = _REST_PARAM.match(text), _section(line)
        google = _GOOGLE_ARG.match(text) if in_args else None
        if rest:
            current, entry_indent, in_args = rest.group(1), indent, False
            out[current] = [rest.group(2)]
        elif section is not None and (not in_args or indent <= section_indent):
            in_args, section_indent, entry_indent = section in _ARG_SECTIONS, indent, -1
            current = None
        elif not text:
            continue
        elif current is not None and indent > entry_indent:
            out[current].append(text)
        elif google and indent >= section_indent and entry_indent in (-1, indent):
            # entries level with "Args:" only happen when it opens the docstring (the
            # first line's indentation is gone), so they are taken only there
            current, entry_indent = google.group(1), indent
            out[current] = [google.group(2)]
        else:  # an entry that is not "name: text", or text after the section
            current = None
            in_args = in_args and indent > section_indent
    return {k: " ".join(" ".join(v).split()) for k, v in out.items()}


# --- type hints to JSON Schema -------------------------------------------------------


def _object(
    fields: list[tuple[str, Any, Any]], notes: Mapping[str, str], seen: tuple[Any, ...]
) -> dict[str, Any]:
    """An object schema of ``(name, hint, default)`` fields; ``inspect.Parameter.empty``
    as the default marks a required one."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, hint, default in fields:
        try:
            schema = _schema(hint, seen)
        except _NoSchema as e:
            e.param = name  # the outermost call's name stays: the tool's parameter
            raise
        if name in notes and "description" not in schema:
            schema["description"] = notes[name]
        if default is inspect.Parameter.empty:
            required.append(name)
        else:
            if default is None and not _accepts_null(schema):
                schema = _nullable([schema])
            ok, value = _json_value(default)
            if ok:
                schema["default"] = value
        props[name] = schema
    return {"type": "object", "properties": props, "required": required}


def _schema(hint: Any, seen: tuple[Any, ...]) -> dict[str, Any]:
    """The JSON Schema of one type hint; raises :class:`_NoSchema` for what has none."""
    if hint is Any or hint is object:
        return _any()
    if hint is None or hint is type(None):
        return {"type": "null"}
    if isinstance(hint, type) and hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if hasattr(hint, "__supertype__"):  # typing.NewType
        return _schema(hint.__supertype__, seen)
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        schema = _schema(args[0], seen)
        note = next((m for m in hint.__metadata__ if isinstance(m, str)), None)
        if note:
            schema["description"] = " ".join(note.split())
        return schema
    if getattr(origin, "_name", None) in _KEY_WRAPPERS:
        return _schema(args[0], seen)
    if origin is Union or origin is types.UnionType:
        arms = [a for a in args if a is not type(None)]
        schemas = [_schema(a, seen) for a in arms]
        if _ANY in schemas:
            return _any()
        return _nullable(schemas) if len(arms) < len(args) else {"anyOf": schemas}
    if origin is Literal:
        return _enum([a.value if isinstance(a, Enum) else a for a in args], hint)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum([m.value for m in hint], hint)
    kind = origin or hint
    if kind in _ARRAYS:
        return _array(kind, args, seen)
    if kind in _OBJECTS:
        if args and args[0] is not str:
            raise _NoSchema(hint, "JSON object keys are strings; use dict[str, ...]")
        value = _schema(args[1], seen) if len(args) == 2 else _ANY
        return (
            {"type": "object"}
            if value == _ANY
            else {"type": "object", "additionalProperties": value}
        )
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or _is_typeddict(hint)):
        return _record(hint, seen)
    raise _NoSchema(hint)


def _any() -> dict[str, Any]:
    return {"type": list(_ANY["type"])}


def _array(kind: Any, args: tuple[Any, ...], seen: tuple[Any, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array"}
    if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        schema["prefixItems"] = [_schema(a, seen) for a in args]
        schema["minItems"] = schema["maxItems"] = len(args)
        return schema
    items = _schema(args[0], seen) if args else _ANY
    if items != _ANY:  # "items": {} would mean "objects" to llama.cpp's converter
        schema["items"] = items
    if kind in _SETS:
        schema["uniqueItems"] = True
    return schema


def _record(cls: type, seen: tuple[Any, ...]) -> dict[str, Any]:
    """A dataclass or TypedDict as an object schema of its fields."""
    if cls in seen:
        raise _NoSchema(cls, f"{cls.__name__} refers to itself, which a tool cannot describe")
    try:
        hints = get_type_hints(cls, include_extras=True)
    except Exception as e:
        raise _NoSchema(cls, f"cannot resolve its type hints ({type(e).__name__}: {e})") from None
    fields: list[tuple[str, Any, Any]] = []
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.init:
                empty = (
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                )
                default = inspect.Parameter.empty if empty else f.default
                fields.append((f.name, hints[f.name], default))
    else:
        required = getattr(cls, "__required_keys__", frozenset(hints))
        for key, hint in hints.items():
            fields.append((key, hint, inspect.Parameter.empty if key in required else ...))
    return _object(fields, {}, (*seen, cls))  # MISSING and ... defaults are not JSON: left out


def _is_typeddict(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, dict) and hasattr(cls, "__required_keys__")


def _enum(values: list[Any], hint: Any) -> dict[str, Any]:
    """An ``enum`` schema, typed when all its values share one JSON type."""
    kinds = {_json_type(v) for v in values}
    if not values or None in kinds:
        raise _NoSchema(hint, "its values must be strings, numbers, booleans or None")
    schema: dict[str, Any] = {"enum": values}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _json_type(value: Any) -> str | None:
    return "null" if value is None else _SIMPLE.get(type(value))


def _accepts_null(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    arms = schema.get("anyOf", ())
    return (
        kind == "null"
        or (isinstance(kind, list) and "null" in kind)
        or None in schema.get("enum", ())
        or any(_accepts_null(a) for a in arms)
    )


def _nullable(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """``anyOf [X..., null]``; the one arm's description moves up, where models read it."""
    out: dict[str, Any] = {"anyOf": [*schemas, {"type": "null"}]}
    if len(schemas) == 1 and "description" in schemas[0]:
        out["description"] = schemas[0].pop("description")
    return out


def _json_value(value: Any) -> tuple[bool, Any]:
    """``(True, value as JSON)`` when it can be written as JSON, else ``(False, None)``."""
    try:
        return True, json.loads(json.dumps(value, allow_nan=False, default=_plain))
    except (TypeError, ValueError):
        return False, None


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON")


# --- calling -------------------------------------------------------------------------


class _BadArguments(Exception):
    """The model's arguments do not fit the function (reported to it as text)."""


def _bind(name: str, fn: Callable[..., Any], arguments: object) -> tuple[list[Any], dict[str, Any]]:
    """Check ``arguments`` against ``fn``'s signature and coerce them to its hints."""
    if not isinstance(arguments, Mapping):
        raise _BadArguments(f"the arguments must be a JSON object, not {type(arguments).__name__}")
    target, bound = _unwrap(fn)
    try:
        params = _parameters(fn, bound)
    except InvalidInputError:
        return [], dict(arguments)  # a callable without a signature: let it judge
    try:
        hints = get_type_hints(target, include_extras=True)
    except Exception:
        hints = {}
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    names = [p.name for p in named]
    problems = []
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        unknown = [repr(k) for k in arguments if k not in names]
        if unknown:
            problems.append(f"unknown argument {', '.join(unknown)}")
    missing = [repr(p.name) for p in named if p.default is p.empty and p.name not in arguments]
    if missing:
        problems.append(f"missing required argument {', '.join(missing)}")
    if problems:
        takes = ", ".join(names) or "no arguments"
        raise _BadArguments(f"{'; '.join(problems)} (tool {name!r} takes: {takes})")
    kwargs: dict[str, Any] = {}
    for key, value in arguments.items():
        try:
            kwargs[key] = _coerce(value, hints.get(key, Any))
        except Exception as e:  # an Enum value it lacks, a dataclass's own checks
            raise _BadArguments(f"argument {key!r}: {e}") from None
    args: list[Any] = []
    for p in named:  # positional-only parameters cannot be passed by name
        if p.kind is not p.POSITIONAL_ONLY or p.name not in kwargs:
            break
        args.append(kwargs.pop(p.name))
    return args, kwargs


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` wants it where JSON cannot say it: an Enum from its value, a
    dataclass from an object, a tuple or set from an array; everything else as is."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated or getattr(origin, "_name", None) in _KEY_WRAPPERS:
        return _coerce(value, args[0])
    if origin is Union or origin is types.UnionType:
        arms = [a for a in args if a is not type(None)]
        return _coerce(value, arms[0]) if value is not None and len(arms) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Enum) and not isinstance(value, hint):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in hint)
            raise ValueError(f"{value!r} is not one of {choices}") from None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        fields = get_type_hints(hint, include_extras=True)
        return hint(**{k: _coerce(v, fields.get(k, Any)) for k, v in value.items()})
    kind = origin or hint
    if isinstance(value, list) and kind in _ARRAYS:
        if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=False))
        items = [_coerce(v, args[0] if args else Any) for v in value]
        return kind(items) if kind in (tuple, set, frozenset) else items
    if isinstance(value, dict) and kind in _OBJECTS and len(args) == 2:
        return {k: _coerce(v, args[1]) for k, v in value.items()}
    return value


def _text(result: Any) -> str:
    """A tool's result as JSON text (its ``str()`` if it cannot be: a circular structure)."""
    try:
        return json.dumps(result, ensure_ascii=False, default=_jsonable)
    except (TypeError, ValueError):
        return str(result)


def _jsonable(value: Any) -> Any:
    """What ``json.dumps`` writes for values it does not know."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)
