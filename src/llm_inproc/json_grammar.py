"""JSON Schema to GBNF through llama-cpp-python's ``SchemaConverter``, with JSON's string
rule as llama.cpp's own converter writes it.

llama-cpp-python 0.3's converter lets a string hold raw control characters (its ``char``
rule is ``[^"\\]``), which ``json.loads`` rejects: constrained output came back with a
newline inside a string (seen in CI at temperature 1). llama.cpp's converter
(``common/json-schema-to-grammar.cpp``) leaves out U+0000-U+001F and U+007F, so a
constrained reply always parses; ours does the same.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["JSON_CHAR", "json_schema_grammar", "schema_converter"]

JSON_CHAR = (
    r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] '
    r"[0-9a-fA-F])"
)
"""One character of a JSON string: anything but a quote, a backslash or a control
character, or an escape."""


@functools.cache
def _converter_class() -> type:
    from llama_cpp import llama_grammar

    base: Any = llama_grammar.SchemaConverter  # untyped upstream

    class _Converter(base):  # type: ignore[misc]
        def _add_primitive(self, name: str, rule: Any) -> Any:
            if name == "char":
                rule = llama_grammar.BuiltinRule(JSON_CHAR, [])
            return super()._add_primitive(name, rule)

    return _Converter


def schema_converter() -> Any:
    """A fresh converter (its ``space`` is one optional space, which keeps small models
    from wandering)."""
    return _converter_class()(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def json_schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar of JSON documents that ``schema`` accepts."""
    conv = schema_converter()
    resolved = conv.resolve_refs(json.loads(json.dumps(dict(schema))), "stdin")
    conv.visit(resolved, "")
    return str(conv.format_grammar())
