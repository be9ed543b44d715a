"""How each chat-template family writes tool calls: detection from the template's source,
the grammar that constrains a call, the parser that reads calls back, and the stream
filter that keeps call markup out of what a user sees.

The families, their markers and the detection order are those of llama.cpp's
``common/chat.cpp`` (before its PEG rewrite). Grammars are GBNF with root rule ``root``;
arguments follow each tool's JSON Schema through llama-cpp-python's ``SchemaConverter``
(imported only when a grammar is built). Triggers are regexes as llama.cpp's lazy grammar
takes them; each matches only text its grammar accepts from the match on, since the
sampler replays that text into the grammar (and llama.cpp throws on a piece it refuses).
Those that must match at the reply's start are ``^``-anchored searches rather than
``^...$`` whole-text matches, which std::regex would re-run, recursively, over the whole
reply after every token.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, ClassVar, Protocol

from ..errors import InvalidInputError
from ..json_grammar import schema_converter
from .types import Constraint, Tool, ToolCall, ToolRequest

__all__ = [
    "EncodingFormat",
    "GenericFormat",
    "ToolFormat",
    "ToolStream",
    "detect_format",
    "encoding_format",
]


class ToolStream(Protocol):
    """Filters one reply's text as it streams."""

    def feed(self, piece: str) -> str:
        """The part of the text so far that can be shown to the user now (maybe empty):
        text before any call markup; held back while it could still be the start of it.
        The pieces joined are a prefix of :meth:`finish`'s content; text held back that
        turned out not to be markup (JSON a Llama 3 reply starts with, a call that does
        not parse) comes only in that content."""
        ...

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """At the end: the reply's content (markup removed, stripped) and its calls.
        Never raises: output that does not parse is content."""
        ...


class ToolFormat(Protocol):
    name: str
    """``generic``, ``hermes``, ``llama3``, ``mistral``, ``functionary_v3_1``,
    ``functionary_v3_2``, ``command_r7b``, ``deepseek_r1`` or ``encoding``."""

    def instructions(self, request: ToolRequest) -> str:
        """Text to add to the system prompt, for formats whose template does not show the
        tools to the model (generic); empty otherwise."""
        ...

    def constraint(self, request: ToolRequest) -> Constraint | None:
        """The grammar for ``request`` (None for ``choice == "none"``)."""
        ...

    def stream(self, request: ToolRequest) -> ToolStream:
        """A filter for one reply."""
        ...

    def parse(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """A finished reply's content (stripped) and calls. Never raises: text that does
        not parse stays content. Calls naming unknown tools are kept; the caller checks."""
        ...

    def after_prompt(self, prompt: str) -> ToolFormat:
        """This format for a reply that follows ``prompt``: a prompt ending in an opened
        thinking block (``<think>\\n``) makes the reply start inside it, as llama.cpp
        decides from the rendered prompt."""
        ...


# --- JSON read leniently, with the source text of each value ----------------------------

_DECODER = json.JSONDecoder(strict=False)  # models write raw newlines inside strings
_WS = re.compile(r"\s*")
_ALNUM = string.ascii_letters + string.digits


def _new_id() -> str:
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def _mistral_id() -> str:
    """Mistral's templates refuse ids other than 9 alphanumerics."""
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _value(text: str, i: int) -> tuple[Any, int] | None:
    try:
        return _DECODER.raw_decode(text, i)
    except (ValueError, RecursionError):
        return None


def _members(text: str, i: int) -> tuple[dict[str, tuple[Any, str]], int] | None:
    """The object at ``text[i]``: each member's value with its source text, and the end."""
    if not text.startswith("{", i):
        return None
    out: dict[str, tuple[Any, str]] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        return out, i + 1
    while True:
        key = _value(text, i)
        if key is None or not isinstance(key[0], str):
            return None
        i = _skip(text, key[1])
        if not text.startswith(":", i):
            return None
        start = _skip(text, i + 1)
        val = _value(text, start)
        if val is None:
            return None
        out[key[0]] = (val[0], text[start : val[1]])
        i = _skip(text, val[1])
        if text.startswith(",", i):
            i = _skip(text, i + 1)
        elif text.startswith("}", i):
            return out, i + 1
        else:
            return None


def _items(text: str, i: int) -> tuple[list[str], int] | None:
    """The source text of each item of the array at ``text[i]``, and the end."""
    if not text.startswith("[", i):
        return None
    out: list[str] = []
    i = _skip(text, i + 1)
    if text.startswith("]", i):
        return out, i + 1
    while True:
        val = _value(text, i)
        if val is None:
            return None
        out.append(text[i : val[1]])
        i = _skip(text, val[1])
        if text.startswith(",", i):
            i = _skip(text, i + 1)
        elif text.startswith("]", i):
            return out, i + 1
        else:
            return None


_NewId = Callable[[], str]


def _make_call(
    name: Any, args: Any, raw: str, call_id: Any = None, new_id: _NewId = _new_id
) -> ToolCall | None:
    """A call from parsed parts; arguments may be a JSON object or its text."""
    if not isinstance(name, str) or not name:
        return None
    if isinstance(args, str):
        raw = args
        parsed = _value(args.strip() or "{}", 0)
        args = parsed[0] if parsed is not None else None
    if not isinstance(args, dict):
        return None
    if not isinstance(call_id, str) or not call_id:
        call_id = new_id()
    return ToolCall(id=call_id, name=name, arguments=args, raw=raw)


def _json_call(
    raw: str,
    name_key: str = "name",
    args_keys: Sequence[str] = ("arguments", "parameters"),
    id_key: str = "id",
    new_id: _NewId = _new_id,
) -> ToolCall | None:
    """The call written as one JSON object (nothing but whitespace around it)."""
    start = _skip(raw, 0)
    found = _members(raw, start)
    if found is None or raw[found[1] :].strip():
        return None
    members = found[0]
    args, args_raw = next((members[k] for k in args_keys if k in members), ({}, ""))
    name = members.get(name_key, (None, ""))[0]
    return _make_call(name, args, args_raw, members.get(id_key, (None, ""))[0], new_id)


def _json_calls(raw: str, new_id: _NewId = _new_id) -> list[ToolCall] | None:
    """Calls written as a JSON array of call objects, or as one object."""
    start = _skip(raw, 0)
    found = _items(raw, start)
    if found is None:
        one = _json_call(raw, new_id=new_id)
        return None if one is None else [one]
    if raw[found[1] :].strip() or not found[0]:
        return None
    calls = [_json_call(item, new_id=new_id) for item in found[0]]
    return None if any(c is None for c in calls) else [c for c in calls if c is not None]


# --- GBNF -------------------------------------------------------------------------------


def _lit(text: str) -> str:
    """A GBNF string literal."""
    for a, b in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(a, b)
    return f'"{text}"'


def _rx(text: str) -> str:
    """``text`` as a literal in a regex (ECMAScript, as llama.cpp's std::regex reads it)."""
    return re.sub(r"[.^$|()*+?\[\]{}\\]", r"\\\g<0>", text).replace("\n", "\\n")


def _names_rx(tools: Sequence[Tool]) -> str:
    return "(?:" + "|".join(_rx(t.name) for t in tools) + ")"


class _Grammar:
    """A grammar being built: JSON Schema rules (:mod:`llm_inproc.json_grammar`), plus a
    format's own rules."""

    def __init__(self) -> None:
        self._conv: Any = schema_converter()

    def params(self, tool: Tool) -> dict[str, Any]:
        """The tool's parameters schema, its ``$ref``s resolved (relative to it)."""
        schema = json.loads(json.dumps(dict(tool.parameters)))
        try:
            return dict(self._conv.resolve_refs(schema, f"{tool.name}-params"))
        except (AssertionError, ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"tool {tool.name!r}: unusable parameters schema ({e})") from e

    def schema(self, schema: Mapping[str, Any], name: str) -> str:
        """The rule for a schema whose ``$ref``s came from :meth:`params`."""
        try:
            return str(self._conv.visit(dict(schema), name))
        except (AssertionError, ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"{name}: this JSON Schema has no grammar ({e})") from e

    def args(self, tool: Tool) -> str:
        return self.schema(self.params(tool), f"{tool.name}-args")

    def call_object(self, tool: Tool, keys: Sequence[str], extra: Mapping[str, Any]) -> str:
        """``{"<name key>": "<name>", "<args key>": {...}, ...extra}``, keys in this order."""
        props: dict[str, Any] = {keys[0]: {"const": tool.name}, keys[1]: self.params(tool)}
        props.update(extra)
        schema = {"type": "object", "properties": props, "required": list(props)}
        return self.schema(schema, f"{tool.name}-call")

    def rule(self, name: str, body: str) -> str:
        return str(self._conv._add_rule(name, body))

    def text(self, root: str) -> str:
        self._conv._add_rule("root", root)
        return str(self._conv.format_grammar())


def _alt(rules: Sequence[str]) -> str:
    return "( " + " | ".join(rules) + " )"


def _repeat(item: str, parallel: bool, sep: str = "") -> str:
    return f"{item} ( {sep} {item} )*" if parallel else item


# --- formats whose calls sit in marked regions of the reply ------------------------------


@dataclass(frozen=True)
class _Region:
    opens: tuple[str, ...]
    close: str | None
    """None: the region runs to the end of the reply."""
    think: bool = False


def _held(text: str, markers: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could begin one of ``markers``."""
    longest = max((len(m) for m in markers), default=1)
    for n in range(min(len(text), longest - 1), 0, -1):
        if any(m.startswith(text[-n:]) for m in markers):
            return n
    return 0


@dataclass(frozen=True)
class _TagFormat:
    """Calls inside marked regions; the text outside them is the content."""

    think_open: bool = False
    """The prompt opened a thinking block: the reply starts inside it."""

    name = ""
    _think: ClassVar[tuple[str, str] | None] = None
    """The markers of a thinking block, left out of the content."""

    def instructions(self, request: ToolRequest) -> str:
        return ""

    def constraint(self, request: ToolRequest) -> Constraint | None:
        if request.choice == "none" or not request.offered:
            return None
        g = _Grammar()
        root, triggers = self._grammar(g, request)
        if self.think_open and self._think is not None:
            root = f"( {_lit(self._think[1])} [ \\n]{{0,4}} )? {root}"
        return Constraint(g.text(root), () if request.choice == "required" else triggers)

    def stream(self, request: ToolRequest) -> ToolStream:
        return _Stream(self)

    def parse(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        content, calls = self._assemble(text, final=True)
        return content.strip(), tuple(calls)

    def after_prompt(self, prompt: str) -> ToolFormat:
        if self._think is None:
            return self
        return replace(self, think_open=prompt.rstrip().endswith(self._think[0]))

    # What a format defines:

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        """The root rule's body and the triggers (for ``auto``)."""
        raise NotImplementedError

    def _regions(self) -> tuple[_Region, ...]:
        return ()

    def _marks(self) -> tuple[str, ...]:
        """Markers removed from the content (their text kept)."""
        return ()

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        """The calls of one region (None: it stays content, markup and all)."""
        raise NotImplementedError

    # The scanner shared by parse and stream:

    @cached_property
    def _scan(self) -> tuple[re.Pattern[str], dict[str, _Region | None], tuple[str, ...]]:
        regions = self._regions()
        if self._think is not None:
            regions = (_Region((self._think[0],), self._think[1], think=True), *regions)
        table: dict[str, _Region | None] = {m: None for m in self._marks()}
        for region in regions:
            table.update(dict.fromkeys(region.opens, region))
        markers = tuple(sorted(table, key=len, reverse=True))
        return re.compile("|".join(map(re.escape, markers))), table, markers

    def _assemble(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        """The content (unstripped) and calls of ``text``; while not ``final``, the content
        stops where markup is in progress or might begin."""
        out: list[str] = []
        calls: list[ToolCall] = []
        pos = 0
        if self.think_open and self._think is not None:
            end = text.find(self._think[1])
            if end >= 0:
                pos = end + len(self._think[1])
            elif not final:
                return "", []
            # else never closed: the thinking was switched off after all; all is reply
        pattern, table, markers = self._scan
        while True:
            m = pattern.search(text, pos)
            if m is None:
                tail = text[pos:]
                out.append(tail if final else tail[: len(tail) - _held(tail, markers)])
                break
            out.append(text[pos : m.start()])
            region = table[m.group(0)]
            pos = m.end()
            if region is None:
                continue
            end = text.find(region.close, pos) if region.close else -1
            body = text[pos : end if end >= 0 else len(text)]
            pos = end + len(region.close or "") if end >= 0 else len(text)
            if region.think:
                continue
            if end < 0 and not final:
                break  # a call being written
            found = self._calls(m.group(0), body)
            if found is None:
                out.append(text[m.start() : pos])
            else:
                calls.extend(found)
        return "".join(out), calls


class _Stream:
    """Shows what the format's content is so far, minus a tail that may become markup."""

    def __init__(self, fmt: _TagFormat | GenericFormat) -> None:
        self._fmt = fmt
        self._text = ""
        self._shown = ""

    def feed(self, piece: str) -> str:
        self._text += piece
        visible = self._fmt._assemble(self._text, final=False)[0].strip()
        if not visible.startswith(self._shown):
            return ""
        new, self._shown = visible[len(self._shown) :], visible
        return new

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        return self._fmt.parse(self._text)


@dataclass(frozen=True)
class _Hermes(_TagFormat):
    """Hermes 2 Pro, Qwen 2.5:
    ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``."""

    name = "hermes"
    _think = ("<think>", "</think>")

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        objs = [g.call_object(t, ("name", "arguments"), {}) for t in request.offered]
        call = g.rule("tool-call", f'"<tool_call>\\n" {_alt(objs)} "\\n</tool_call>"')
        return _repeat(call, request.parallel, '"\\n"'), (_rx("<tool_call>"),)

    def _regions(self) -> tuple[_Region, ...]:
        return (_Region(("<tool_call>",), "</tool_call>"),)

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        call = _json_call(body)
        return None if call is None else [call]


_BUILTIN = ("wolfram_alpha", "web_search", "brave_search", "python", "code_interpreter")
_BUILTIN_CALL = re.compile(r"\s*([\w.-]+)\.call\(")
_KWARG = re.compile(r"\s*(\w+)\s*=\s*")


def _builtin_call(body: str) -> ToolCall | None:
    """``name.call(key=<JSON value>, ...)``, Llama 3.1's form for its built-in tools."""
    m = _BUILTIN_CALL.match(body)
    if m is None:
        return None
    args: dict[str, Any] = {}
    pos = _skip(body, m.end())
    while not body.startswith(")", pos):
        kw = _KWARG.match(body, pos)
        val = _value(body, kw.end()) if kw else None
        if kw is None or val is None:
            return None
        args[kw.group(1)] = val[0]
        pos = _skip(body, val[1])
        if body.startswith(",", pos):
            pos += 1
        elif not body.startswith(")", pos):
            return None
    if body[pos + 1 :].strip():
        return None
    return ToolCall(id=_new_id(), name=m.group(1), arguments=args)


@dataclass(frozen=True)
class _Llama3(_TagFormat):
    """Llama 3.x: the reply is ``{"name": ..., "parameters": {...}}``; built-in tools are
    called as ``<|python_tag|>name.call(...)``. One call per reply (the templates refuse
    more)."""

    builtin: bool = False
    """The template knows ``<|python_tag|>``."""

    name = "llama3"

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        alts = []
        for t in request.offered:
            alts.append(
                g.rule(
                    f"{t.name}-call",
                    '"{" space ( "\\"type\\"" space ":" space "\\"function\\"" space "," space )? '
                    f'"\\"name\\"" space ":" space {_lit(json.dumps(t.name))} space "," space '
                    f'"\\"parameters\\"" space ":" space {g.args(t)} "}}" space',
                )
            )
        json_call = g.rule("json-call", _alt(alts))
        roots = [json_call]
        triggers = [
            r'^\s*(\{ ?(?:"type" ?: ?"function" ?, ?)?"name" ?: ?"'
            + _names_rx(request.offered)
            + r'")'
        ]
        if self.builtin:
            roots.append(f'"<|python_tag|>" {json_call}')
            for t in request.offered:
                props = g.params(t).get("properties", {})
                if t.name in _BUILTIN and props:
                    kvs = [
                        f"{_lit(k + '=')} {g.schema(v, f'{t.name}-kw-{k}')}"
                        for k, v in props.items()
                    ]
                    body = " " + ' ", " '.join(kvs) + ' ")"'
                    roots.append(_lit(f"<|python_tag|>{t.name}.call(") + body)
            triggers.append(_rx("<|python_tag|>"))
        return _alt(roots), tuple(triggers)

    def _regions(self) -> tuple[_Region, ...]:
        return (_Region(("<|python_tag|>",), None),)

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        call = _json_call(body) or _builtin_call(body)
        return None if call is None else [call]

    def _assemble(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        if text.lstrip().startswith("{"):  # likely a call: decided at the end
            if not final:
                return "", []
            call = _json_call(text)
            if call is not None:
                return "", [call]
        return super()._assemble(text, final)


@dataclass(frozen=True)
class _FunctionaryV31(_TagFormat):
    """Functionary v3.1 (Llama 3.1 based): ``<function=NAME>{...}</function>``."""

    name = "functionary_v3_1"

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        alts = [
            g.rule(f"{t.name}-call", f'{_lit(f"<function={t.name}>")} {g.args(t)} "</function>"')
            for t in request.offered
        ]
        trigger = "<function=" + _names_rx(request.offered) + ">"
        return _repeat(g.rule("tool-call", _alt(alts)), request.parallel), (trigger,)

    def _regions(self) -> tuple[_Region, ...]:
        return (_Region(("<function=",), "</function>"), _Region(("<|python_tag|>",), None))

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        if marker == "<|python_tag|>":  # raw code for the python tool
            code = _value(body.strip(), 0)
            args = code[0] if code and isinstance(code[0], dict) else {"code": body.strip()}
            return [ToolCall(id=_new_id(), name="python", arguments=args)] if body.strip() else None
        m = re.match(r"([\w.-]+)>", body)
        if m is None:
            return None
        val = _value(body, m.end())
        if val is None or body[val[1] :].strip():
            return None
        call = _make_call(m.group(1), val[0], body[m.end() : val[1]])
        return None if call is None else [call]


_DS_BEGINS = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool_calls_begin｜>",
    "<｜tool calls begin｜>",
    "<｜tool▁calls｜>",
)
_DS_CALL = re.compile(
    r"\s*(?:<｜tool▁call▁begin｜>)?(?:function)?<｜tool▁sep｜>([^\n]+)\n```(?:json)?\s*"
)
_DS_MARKER = re.compile(r"<｜[^｜<>]{1,40}｜>")


def _unspaced(m: re.Match[str]) -> str:
    return (
        m.group(0).replace(" ", "\u2581") if m.group(0) != "<｜tool calls begin｜>" else m.group(0)
    )


_DS_END = re.compile(r"\s*```\s*<｜tool▁call▁end｜>")


@dataclass(frozen=True)
class _DeepSeekR1(_TagFormat):
    """DeepSeek R1 (and its distills): calls in fenced JSON between full-width markers,
    after the thinking."""

    name = "deepseek_r1"
    _think = ("<think>", "</think>")

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        alts = [
            g.rule(
                f"{t.name}-call",
                _lit(f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{t.name}\n```json\n")
                + f" {g.args(t)} "
                + _lit("\n```<｜tool▁call▁end｜>"),
            )
            for t in request.offered
        ]
        calls = _repeat(g.rule("tool-call", _alt(alts)), request.parallel, '"\\n"?')
        begin = _alt([_lit(b) for b in _DS_BEGINS])
        root = f'{begin} {calls} "<｜tool▁calls▁end｜>"'
        return root, ("(?:" + "|".join(map(_rx, _DS_BEGINS)) + ")",)

    def _regions(self) -> tuple[_Region, ...]:
        return (_Region(_DS_BEGINS, "<｜tool▁calls▁end｜>"),)

    def _assemble(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        # The reply's cleaner maps SentencePiece's "▁" to a space, inside markers too.
        return super()._assemble(_DS_MARKER.sub(_unspaced, text), final)

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        calls: list[ToolCall] = []
        pos = 0
        while m := _DS_CALL.match(body, pos):
            val = _value(body, m.end())
            if val is None:
                return None
            call = _make_call(m.group(1).strip(), val[0], body[m.end() : val[1]])
            if call is None:
                return None
            calls.append(call)
            end = _DS_END.match(body, val[1])
            if end is None:  # cut short after the JSON: still a call
                pos = len(body) if not body[val[1] :].strip().strip("`") else val[1]
                break
            pos = end.end()
        return calls if calls and not body[pos:].strip() else None


@dataclass(frozen=True)
class _CommandR7B(_TagFormat):
    """Command R7B: ``<|START_ACTION|>[{"tool_call_id": "0", "tool_name": ..., "parameters":
    {...}}]<|END_ACTION|>``; text inside ``<|START_RESPONSE|>...<|END_RESPONSE|>``."""

    name = "command_r7b"
    _think = ("<|START_THINKING|>", "<|END_THINKING|>")

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        call_id = {"type": "string", "pattern": "^[0-9]{1,10}$"}
        objs = [
            g.schema(
                {
                    "type": "object",
                    "properties": {
                        "tool_call_id": call_id,
                        "tool_name": {"const": t.name},
                        "parameters": g.params(t),
                    },
                    "required": ["tool_call_id", "tool_name", "parameters"],
                },
                f"{t.name}-action",
            )
            for t in request.offered
        ]
        ws = g.rule("action-space", "[ \\n]{0,12}")  # the template writes the list one per line
        items = _repeat(g.rule("action", _alt(objs)), request.parallel, f'"," {ws}')
        root = f'"<|START_ACTION|>[" {ws} {items} {ws} "]<|END_ACTION|>"'
        return root, (_rx("<|START_ACTION|>"),)

    def _regions(self) -> tuple[_Region, ...]:
        return (_Region(("<|START_ACTION|>",), "<|END_ACTION|>"),)

    def _marks(self) -> tuple[str, ...]:
        return ("<|START_RESPONSE|>", "<|END_RESPONSE|>")

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        found = _items(body, _skip(body, 0))
        if found is None or body[found[1] :].strip() or not found[0]:
            return None
        calls = [_json_call(i, "tool_name", ("parameters",), "tool_call_id") for i in found[0]]
        return None if any(c is None for c in calls) else [c for c in calls if c is not None]


_MISTRAL_NAMED = re.compile(r"([^\s\[\]{]+)(?:\[CALL_ID\]([A-Za-z0-9]+))?\[ARGS\]")


@dataclass(frozen=True)
class _Mistral(_TagFormat):
    """Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "abcdefghi"}]``
    (Nemo), or ``[TOOL_CALLS]NAME[CALL_ID]id[ARGS]{...}`` per call where the template
    writes ``[ARGS]`` (Small 3.2, Devstral, Ministral). Both are always parsed."""

    args_form: bool = False
    call_id: bool = False
    """The template writes ``[CALL_ID]`` (optional in the grammar)."""

    name = "mistral"

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        if self.args_form:
            id_part = '( "[CALL_ID]" [a-zA-Z0-9]{9} )? ' if self.call_id else ""
            alts = [
                g.rule(
                    f"{t.name}-call",
                    f'{_lit("[TOOL_CALLS]" + t.name)} {id_part}"[ARGS]" {g.args(t)}',
                )
                for t in request.offered
            ]
            root = _repeat(g.rule("tool-call", _alt(alts)), request.parallel)
        else:
            nine = {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}
            objs = [g.call_object(t, ("name", "arguments"), {"id": nine}) for t in request.offered]
            items = _repeat(g.rule("tool-call", _alt(objs)), request.parallel, '"," space')
            root = f'"[TOOL_CALLS][" space {items} "]" space'
        return root, (_rx("[TOOL_CALLS]"),)

    def _regions(self) -> tuple[_Region, ...]:
        return (_Region(("[TOOL_CALLS]",), None),)

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        calls: list[ToolCall] = []
        for part in body.split("[TOOL_CALLS]"):
            part = part.strip()
            m = _MISTRAL_NAMED.match(part)
            if m is None:
                found = _json_calls(part, new_id=_mistral_id)
                if found is None:
                    return None
                calls.extend(found)
                continue
            val = _value(part, m.end())
            if val is None or part[val[1] :].strip():
                return None
            call = _make_call(m.group(1), val[0], part[m.end() : val[1]], m.group(2), _mistral_id)
            if call is None:
                return None
            calls.append(call)
        return calls


@dataclass(frozen=True)
class EncodingFormat(_TagFormat):
    """Calls in a raw ``PromptEncoding``: a JSON list (or one object) of ``{"name",
    "arguments"}`` after the tool-call start marker. SentencePiece's ``▁`` in a marker is
    the space the model writes."""

    start: str = ""
    end: str = ""
    available_start: str = ""
    available_end: str = ""

    name = "encoding"

    @property
    def _head(self) -> str:
        return self.start.replace("\u2581", " ").strip()

    def tools_block(self, request: ToolRequest) -> str:
        """The JSON to put between ``available_start`` and ``available_end``: the offered
        tools as OpenAI tool objects (compact ``json.dumps``)."""
        tools = [t.to_openai() for t in request.offered]
        return json.dumps(tools, ensure_ascii=False, separators=(",", ":"))

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        objs = [g.call_object(t, ("name", "arguments"), {}) for t in request.offered]
        items = _repeat(g.rule("tool-call", _alt(objs)), request.parallel, '"," space')
        tail = self.end.replace("\u2581", " ").strip()
        root = f'{_lit(self._head)} " "? "[" space {items} "]" space' + (
            f" {_lit(tail)}?" if tail else ""
        )
        return root, (_rx(self._head),)

    def _regions(self) -> tuple[_Region, ...]:
        return (_Region((self._head,), None),) if self._head else ()

    def _calls(self, marker: str, body: str) -> list[ToolCall] | None:
        body = body.replace("\u2581", " ").strip()
        tail = self.end.replace("\u2581", " ").strip()
        if tail and body.endswith(tail):
            body = body[: -len(tail)]
        mistral = "[TOOL_CALLS]" in self.start
        return _json_calls(body, new_id=_mistral_id if mistral else _new_id)


@dataclass(frozen=True)
class _FunctionaryV32(_TagFormat):
    """Functionary v3.2: after the prompt's ``>>>``, ``all\\n`` and text, or ``NAME\\n{...}``;
    further messages each start ``>>>``."""

    name = "functionary_v3_2"

    def _grammar(self, g: _Grammar, request: ToolRequest) -> tuple[str, tuple[str, ...]]:
        first = [
            g.rule(f"{t.name}-call", f"{_lit(t.name + chr(10))} {g.args(t)}")
            for t in request.offered
        ]
        first_rule = g.rule("first-call", _alt(first))
        later = g.rule("later-call", f'">>>" {first_rule}')
        start = first_rule if request.choice == "required" else f"( {first_rule} | {later} )"
        names = _names_rx(request.offered)
        triggers = (f"^{names}\\n", f">>>{names}\\n")
        return (f"{start} {later}*" if request.parallel else start), triggers

    def _assemble(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        out: list[str] = []
        calls: list[ToolCall] = []
        pos = 0
        while pos < len(text):
            m = _RECIPIENT.match(text, pos)
            if m is None and not final and _RECIPIENT_SO_FAR.fullmatch(text, pos):
                break  # "all" or a tool's name, not finished
            if m is not None and m.group(1) != "all":
                start = _skip(text, m.end())
                if start == len(text) and not final:
                    break
                if text.startswith("{", start):
                    val = _value(text, start)
                    if val is None and not final:
                        break  # a call being written
                    call = val and _make_call(m.group(1), val[0], text[start : val[1]])
                    if val is not None and call:
                        calls.append(call)
                        pos = _skip(text, val[1])
                        continue
            seg = m.end() if m is not None and m.group(1) == "all" else pos
            end = text.find(">>>", seg + 3 if text.startswith(">>>", seg) else seg)
            end = len(text) if end < 0 else end
            part = text[seg:end]
            out.append(
                part if final or end < len(text) else part[: len(part) - _held(part, (">>>",))]
            )
            pos = end
        return "".join(out), calls


_RECIPIENT = re.compile(r"(?:>>>)?([\w.-]+)\n")
_RECIPIENT_SO_FAR = re.compile(r">{1,3}|(?:>>>)?[\w.-]*")


# --- generic: the whole reply is JSON ----------------------------------------------------

_RESPONSE = re.compile(r'\s*\{\s*"response"\s*:\s*"')
_STRING_SO_FAR = re.compile(r'(?:[^"\\]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*')


def _response_so_far(text: str) -> str | None:
    """The decoded ``response`` string of ``{"response": "...`` written so far."""
    m = _RESPONSE.match(text)
    if m is None:
        return None
    body = _STRING_SO_FAR.match(text, m.end())
    decoded = str(_DECODER.decode('"' + (body.group(0) if body else "") + '"'))
    return decoded[:-1] if decoded and "\ud800" <= decoded[-1] <= "\udbff" else decoded


@dataclass(frozen=True)
class GenericFormat:
    """For templates without tool syntax (llama.cpp's generic format): the tools and this
    format are described in the system prompt, and the whole reply is JSON:
    ``{"tool_call": {"name": ..., "arguments": {...}}}`` (``{"tool_calls": [...]}`` when
    parallel) or ``{"response": "text"}``. The grammar applies from the first token."""

    name = "generic"

    def instructions(self, request: ToolRequest) -> str:
        if not request.offered:
            return ""
        if request.choice == "none":  # a conversation with calls in it: answer in kind
            return 'Reply with only this JSON object: {"response": "<your answer>"}'
        tools = json.dumps([t.to_openai() for t in request.offered], ensure_ascii=False)
        call = '{"name": "<tool name>", "arguments": {<the arguments>}}'
        calls = (
            f'{{"tool_calls": [{call}, ...]}}' if request.parallel else f'{{"tool_call": {call}}}'
        )
        what = "call tools" if request.parallel else "call a tool"
        lines = [
            "You can call these tools (the arguments of each follow the JSON Schema under "
            '"parameters"):',
            tools,
            "",
        ]
        if request.choice == "required":
            lines.append(f"Reply with only this JSON object, to {what}: {calls}")
        else:
            lines.append(
                f"Reply with only one JSON object: {calls} to {what}, or "
                '{"response": "<your answer>"} to answer directly.'
            )
        return "\n".join(lines)

    def constraint(self, request: ToolRequest) -> Constraint | None:
        if not request.offered:
            return None
        g = _Grammar()
        response = {"type": "object", "properties": {"response": {"type": "string"}}}
        if request.choice == "none":
            # Only asked for where the history holds calls written as this JSON: without
            # it the model would answer with one more call, as text.
            return Constraint(g.text(g.schema({**response, "required": ["response"]}, "reply")))
        objs = [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": g.params(t)},
                "required": ["name", "arguments"],
            }
            for t in request.offered
        ]
        one = objs[0] if len(objs) == 1 else {"anyOf": objs}
        key, value = (
            ("tool_calls", {"type": "array", "items": one, "minItems": 1})
            if request.parallel
            else ("tool_call", one)
        )
        schema: dict[str, Any] = {"type": "object", "properties": {key: value}, "required": [key]}
        if request.choice != "required":
            schema = {"anyOf": [schema, {**response, "required": ["response"]}]}
        return Constraint(g.text(g.schema(schema, "reply")))

    def stream(self, request: ToolRequest) -> ToolStream:
        return _Stream(self)

    def parse(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        content, calls = self._assemble(text, final=True)
        return content.strip(), tuple(calls)

    def after_prompt(self, prompt: str) -> ToolFormat:
        return self

    def _assemble(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        if not text.lstrip().startswith("{"):
            return text, []
        if final:
            found = _members(text, _skip(text, 0))
            if found is not None and not text[found[1] :].strip():
                return self._reply(found[0], text)
        response = _response_so_far(text)
        if response is not None:
            return response, []
        return (text, []) if final else ("", [])

    @staticmethod
    def _reply(obj: dict[str, tuple[Any, str]], text: str) -> tuple[str, list[ToolCall]]:
        calls: list[ToolCall] | None = []
        if "tool_call" in obj:
            one = _json_call(obj["tool_call"][1])
            calls = None if one is None else [one]
        elif "tool_calls" in obj:
            found = _items(obj["tool_calls"][1], 0)
            each = [_json_call(i) for i in found[0]] if found else [None]
            calls = None if any(c is None for c in each) else [c for c in each if c]
        response = obj.get("response", ("", ""))[0]
        if calls is None or (not calls and "response" not in obj):
            return text, []
        return (response if isinstance(response, str) else json.dumps(response)), calls


# --- detection ---------------------------------------------------------------------------

_THINK_OPENED = re.compile(r"<think>(?:\\n|\n)['\"]\s*-?\}\}")


def detect_format(template: str | None) -> ToolFormat:
    """The format a chat template speaks, as llama.cpp's ``common/chat.cpp`` detects it;
    the generic JSON format when it has no tool syntax (or there is no template)."""
    src = template or ""
    think_open = bool(_THINK_OPENED.search(src))
    if "<｜tool▁calls▁begin｜>" in src:
        return _DeepSeekR1(think_open=think_open)
    if "<|END_THINKING|><|START_ACTION|>" in src:
        return _CommandR7B()
    if "<tool_call>" in src:
        return _Hermes(think_open=think_open)
    if ">>>all" in src:
        return _FunctionaryV32()
    if "<|start_header_id|>" in src and "<function=" in src:
        return _FunctionaryV31()
    if "<|start_header_id|>ipython<|end_header_id|>" in src:
        return _Llama3(builtin="<|python_tag|>" in src)
    if "[TOOL_CALLS]" in src:
        return _Mistral(args_form="[ARGS]" in src, call_id="[CALL_ID]" in src)
    return GenericFormat()


def encoding_format(start: str, end: str, available_start: str, available_end: str) -> ToolFormat:
    """The format of a raw ``PromptEncoding`` with tool tokens: calls between
    ``tool_call_token_start`` and ``_end``."""
    return EncodingFormat(
        start=start, end=end, available_start=available_start, available_end=available_end
    )
