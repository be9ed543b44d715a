"""Tool-call formats: detection from real chat templates, parsing canned replies, stream
filtering, and the grammars (valid GBNF that accepts each format's canonical output).

A call naming a tool that was not offered is kept as a call: the parser reads syntax, and
the caller decides what an unknown tool means.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llm_inproc.backends.inproc.sampler import grammar_for
from llm_inproc.sampling import Sampling
from llm_inproc.tools.formats import ToolFormat, detect_format, encoding_format
from llm_inproc.tools.types import Tool, ToolCall, ToolRequest

TEMPLATES = Path(__file__).parent / "data" / "templates"

WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)
SEARCH = Tool(
    "brave_search",
    "Search the web.",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
TOOLS = (WEATHER, SEARCH)
AUTO = ToolRequest(TOOLS)


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


FORMATS: dict[str, ToolFormat] = {
    "hermes": detect_format(template("Qwen-Qwen2.5-7B-Instruct.jinja")),
    "llama3": detect_format(template("meta-llama-Llama-3.1-8B-Instruct.jinja")),
    "functionary_v3_1": detect_format(template("meetkai-functionary-medium-v3.1.jinja")),
    "functionary_v3_2": detect_format(template("meetkai-functionary-medium-v3.2.jinja")),
    "command_r7b": detect_format(template("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja")),
    "deepseek_r1": detect_format(template("llama-cpp-deepseek-r1.jinja")),
    "mistral": detect_format(template("mistralai-Mistral-Nemo-Instruct-2407.jinja")),
    "mistral_args": detect_format(template("Mistral-Small-3.2-24B-Instruct-2506.jinja")),
    "generic": detect_format(None),
    "encoding": encoding_format(
        "[TOOL_CALLS]\u2581", "</s>", "[AVAILABLE_TOOLS]\u2581", "[/AVAILABLE_TOOLS]"
    ),
}

# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "hermes"),
        ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes"),
        ("meta-llama-Llama-3.3-70B-Instruct.jinja", "llama3"),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3"),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral"),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral"),
        ("meetkai-functionary-medium-v3.2.jinja", "functionary_v3_2"),
        ("meetkai-functionary-medium-v3.1.jinja", "functionary_v3_1"),
        ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "command_r7b"),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek_r1"),
        ("llama-cpp-deepseek-r1.jinja", "deepseek_r1"),
        ("SmolLM2-135M-Instruct.jinja", "generic"),
    ],
)
def test_detects_the_format_of_real_templates(file: str, name: str) -> None:
    assert detect_format(template(file)).name == name


def test_no_template_is_generic() -> None:
    assert detect_format(None).name == "generic"
    assert detect_format("").name == "generic"


def test_the_template_decides_details() -> None:
    """DeepSeek's generation prompt opens ``<think>``; Mistral Small 3.2 writes calls as
    ``NAME[CALL_ID]id[ARGS]{...}``, Nemo as a JSON list."""
    distill = detect_format(template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"))
    assert getattr(distill, "think_open", None) is True
    assert getattr(FORMATS["mistral_args"], "args_form", None) is True
    assert getattr(FORMATS["mistral_args"], "call_id", None) is True
    assert getattr(FORMATS["mistral"], "args_form", None) is False
    assert getattr(FORMATS["llama3"], "builtin", None) is True
    assert getattr(FORMATS["hermes"], "think_open", None) is False


def test_after_prompt_follows_the_rendered_prompt() -> None:
    ds = FORMATS["deepseek_r1"]
    closed = ds.after_prompt("<｜Assistant｜><think>\n</think>")
    assert closed.parse("Paris is sunny.") == ("Paris is sunny.", ())
    assert ds.after_prompt("<｜Assistant｜><think>\n").parse("x</think>Hi") == ("Hi", ())
    assert FORMATS["generic"].after_prompt("<think>\n") is FORMATS["generic"]


# --- parsing and streaming ----------------------------------------------------------------

W = ("get_weather", {"city": "Paris"})
S = ("brave_search", {"query": "news"})
H_W = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
H_S = '<tool_call>\n{"name": "brave_search", "arguments": {"query": "news"}}\n</tool_call>'
L_W = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
F1_W = '<function=get_weather>{"city": "Paris"}</function>'
F1_S = '<function=brave_search>{"query": "news"}</function>'
R_THINK = "<|START_THINKING|>I will look up the weather.<|END_THINKING|>"
R_W = '{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}}'
R_S = '{"tool_call_id": "1", "tool_name": "brave_search", "parameters": {"query": "news"}}'
D_W = (
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    '{"city": "Paris"}\n```<｜tool▁call▁end｜>'
)
D_S = (
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>brave_search\n```json\n"
    '{"query": "news"}\n```<｜tool▁call▁end｜>'
)
M_W = '{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123XYZ"}'
M_S = '{"name": "brave_search", "arguments": {"query": "news"}, "id": "def456UVW"}'
G_W = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
G_S = '{"name": "brave_search", "arguments": {"query": "news"}}'


@dataclass
class Case:
    fmt: str
    text: str
    content: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    shown: str | None = None
    """What the stream shows; the content when None."""
    ids: list[str] | None = None
    """The ids the model wrote; None: generated ones."""


CASES: dict[str, Case] = {
    # Hermes 2 Pro / Qwen 2.5
    "hermes-one": Case("hermes", H_W, "", [W]),
    "hermes-two": Case("hermes", H_W + "\n" + H_S, "", [W, S]),
    "hermes-text-first": Case("hermes", "Let me check.\n" + H_W, "Let me check.", [W]),
    "hermes-think": Case("hermes", "<think>Paris, so.</think>\n" + H_W, "", [W]),
    "hermes-text-only": Case("hermes", "It is sunny in Paris.", "It is sunny in Paris."),
    "hermes-angle": Case("hermes", "a < b and c <tool x", "a < b and c <tool x"),
    "hermes-broken": Case(
        "hermes",
        'See: <tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',
        'See: <tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',
    ),
    "hermes-truncated": Case(
        "hermes",
        'One moment. <tool_call>\n{"name": "get_wea',
        'One moment. <tool_call>\n{"name": "get_wea',
        shown="One moment.",
    ),
    "hermes-unclosed": Case("hermes", H_W.removesuffix("\n</tool_call>"), "", [W]),
    "hermes-unknown-tool": Case(
        "hermes",
        '<tool_call>\n{"name": "fly_to", "arguments": {"planet": "Mars"}}\n</tool_call>',
        "",
        [("fly_to", {"planet": "Mars"})],
    ),
    "hermes-stringified-args": Case(
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n'
        "</tool_call>",
        "",
        [W],
    ),
    # Llama 3.x
    "llama3-one": Case("llama3", L_W, "", [W]),
    "llama3-typed": Case(
        "llama3",
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        [W],
    ),
    "llama3-builtin": Case("llama3", '<|python_tag|>brave_search.call(query="news")', "", [S]),
    "llama3-tag-json": Case("llama3", "<|python_tag|>" + L_W, "", [W]),
    "llama3-text": Case("llama3", "It is sunny in Paris.", "It is sunny in Paris."),
    "llama3-json-text": Case("llama3", '{"answer": 42}', '{"answer": 42}', shown=""),
    "llama3-truncated": Case(
        "llama3",
        "Checking.<|python_tag|>brave_search.call(query=",
        "Checking.<|python_tag|>brave_search.call(query=",
        shown="Checking.",
    ),
    # Functionary v3.1
    "functionary_v3_1-one": Case("functionary_v3_1", F1_W, "", [W]),
    "functionary_v3_1-two": Case("functionary_v3_1", F1_W + F1_S, "", [W, S]),
    "functionary_v3_1-text-first": Case("functionary_v3_1", "Sure. " + F1_W, "Sure.", [W]),
    "functionary_v3_1-broken": Case(
        "functionary_v3_1",
        '<function=get_weather>{"city": </function>',
        '<function=get_weather>{"city": </function>',
    ),
    "functionary_v3_1-python": Case(
        "functionary_v3_1", "<|python_tag|>print(6 * 7)", "", [("python", {"code": "print(6 * 7)"})]
    ),
    # Functionary v3.2 (the prompt ends with ">>>")
    "functionary_v3_2-one": Case("functionary_v3_2", 'get_weather\n{"city": "Paris"}', "", [W]),
    "functionary_v3_2-two": Case(
        "functionary_v3_2",
        'get_weather\n{"city": "Paris"}>>>brave_search\n{"query": "news"}',
        "",
        [W, S],
    ),
    "functionary_v3_2-text-first": Case(
        "functionary_v3_2",
        'all\nLet me check.>>>get_weather\n{"city": "Paris"}',
        "Let me check.",
        [W],
    ),
    "functionary_v3_2-text": Case("functionary_v3_2", "all\nHello there!", "Hello there!"),
    "functionary_v3_2-no-recipient": Case("functionary_v3_2", "Hello there!", "Hello there!"),
    "functionary_v3_2-arrows": Case("functionary_v3_2", "all\nx >> y", "x >> y"),
    "functionary_v3_2-truncated": Case(
        "functionary_v3_2", 'get_weather\n{"city": ', 'get_weather\n{"city":', shown=""
    ),
    # Command R7B
    "command_r7b-one": Case(
        "command_r7b",
        R_THINK + "<|START_ACTION|>[\n    " + R_W + "\n]<|END_ACTION|>",
        "",
        [W],
        ids=["0"],
    ),
    "command_r7b-two": Case(
        "command_r7b",
        R_THINK + "<|START_ACTION|>[\n    " + R_W + ",\n    " + R_S + "\n]<|END_ACTION|>",
        "",
        [W, S],
        ids=["0", "1"],
    ),
    "command_r7b-response": Case(
        "command_r7b",
        "<|START_THINKING|>Easy.<|END_THINKING|><|START_RESPONSE|>Hello!<|END_RESPONSE|>",
        "Hello!",
    ),
    "command_r7b-truncated-response": Case("command_r7b", "<|START_RESPONSE|>Hel", "Hel"),
    # DeepSeek R1 (the prompt opens <think>)
    "deepseek_r1-one": Case(
        "deepseek_r1",
        "The user wants the weather.\n</think>\n\n<｜tool▁calls▁begin｜>"
        + D_W
        + "<｜tool▁calls▁end｜>",
        "",
        [W],
    ),
    "deepseek_r1-two": Case(
        "deepseek_r1",
        "Two things.</think><｜tool▁calls▁begin｜>" + D_W + "\n" + D_S + "<｜tool▁calls▁end｜>",
        "",
        [W, S],
    ),
    "deepseek_r1-text": Case("deepseek_r1", "Hmm.\n</think>\n\nParis is sunny.", "Paris is sunny."),
    "deepseek_r1-never-closed": Case("deepseek_r1", "Paris is sunny.", "Paris is sunny.", shown=""),
    "deepseek_r1-broken": Case(
        "deepseek_r1",
        "</think>Look: <｜tool▁calls▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\n"
        "<｜tool▁calls▁end｜>",
        "Look: <｜tool▁calls▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\n"
        "<｜tool▁calls▁end｜>",
    ),
    # Mistral
    "mistral-one": Case("mistral", f"[TOOL_CALLS][{M_W}]", "", [W], ids=["abc123XYZ"]),
    "mistral-two": Case(
        "mistral", f"[TOOL_CALLS][{M_W}, {M_S}]", "", [W, S], ids=["abc123XYZ", "def456UVW"]
    ),
    "mistral-text-first": Case(
        "mistral", f"Sure. [TOOL_CALLS][{M_W}]", "Sure.", [W], ids=["abc123XYZ"]
    ),
    "mistral-no-id": Case("mistral", f"[TOOL_CALLS][{G_W}]", "", [W]),
    "mistral-args-form": Case("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "", [W]),
    "mistral-args-form-two": Case(
        "mistral_args",
        '[TOOL_CALLS]get_weather[CALL_ID]abc123XYZ[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]brave_search[ARGS]{"query": "news"}',
        "",
        [W, S],
    ),
    "mistral-broken": Case(
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {',
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {',
        shown="",
    ),
    # generic JSON
    "generic-one": Case("generic", f'{{"tool_call": {G_W}}}', "", [W]),
    "generic-two": Case(
        "generic",
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "w1"}, '
        f"{G_S}]}}",
        "",
        [W, S],
    ),
    "generic-response": Case(
        "generic",
        '{"response": "Hello \\"you\\", caf\\u00e9\\n\\ud83d\\ude00 bye"}',
        'Hello "you", café\n😀 bye',
    ),
    "generic-text": Case("generic", "Just text.", "Just text."),
    "generic-truncated-response": Case("generic", '{"response": "Hel', "Hel"),
    "generic-truncated-call": Case(
        "generic",
        '{"tool_call": {"name": "get_weather"',
        '{"tool_call": {"name": "get_weather"',
        shown="",
    ),
    "generic-broken-args": Case(
        "generic",
        '{"tool_call": {"name": "get_weather", "arguments": [1]}}',
        '{"tool_call": {"name": "get_weather", "arguments": [1]}}',
        shown="",
    ),
    # a raw prompt encoding (Mistral's)
    "encoding-list": Case("encoding", f"[TOOL_CALLS] [{G_W}]", "", [W]),
    "encoding-object-eos": Case("encoding", f"[TOOL_CALLS] {G_W}</s>", "", [W]),
    "encoding-text-first": Case(
        "encoding", f"Let me see. [TOOL_CALLS] [{G_W}, {G_S}]", "Let me see.", [W, S]
    ),
    "encoding-text": Case("encoding", "Paris is sunny.", "Paris is sunny."),
}

ID_SHAPE = {
    "mistral": r"[A-Za-z0-9]{9}",
    "mistral_args": r"[A-Za-z0-9]{9}",
    "encoding": r"[A-Za-z0-9]{9}",
}


def check_calls(case: Case, calls: tuple[ToolCall, ...]) -> None:
    assert [(c.name, dict(c.arguments)) for c in calls] == case.calls
    if case.ids is not None:
        assert [c.id for c in calls] == case.ids
    else:
        shape = ID_SHAPE.get(case.fmt, r"call_[A-Za-z0-9]{24}")
        for c in calls:
            assert re.fullmatch(shape, c.id) or c.id == "w1", c.id
    for c in calls:
        assert json.loads(c.raw) == dict(c.arguments)


@pytest.mark.parametrize("key", list(CASES))
def test_parse(key: str) -> None:
    case = CASES[key]
    content, calls = FORMATS[case.fmt].parse(case.text)
    assert content == case.content
    check_calls(case, calls)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("key", list(CASES))
def test_stream(key: str, size: int) -> None:
    case = CASES[key]
    stream = FORMATS[case.fmt].stream(AUTO)
    shown = "".join(stream.feed(case.text[i : i + size]) for i in range(0, len(case.text), size))
    assert shown == (case.content if case.shown is None else case.shown)
    content, calls = stream.finish()
    assert content == case.content
    assert content.startswith(shown)
    check_calls(case, calls)


FRAGMENTS = [
    "Hi ",
    "\n",
    "<",
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    "{",
    "}",
    "[",
    "]",
    '"name": "get_weather"',
    '"arguments": ',
    '"response": "',
    '"',
    "\\",
    "<|python_tag|>",
    "<function=",
    "</function>",
    ">>>",
    "all\n",
    "get_weather\n",
    "[TOOL_CALLS]",
    "[ARGS]",
    "<|START_ACTION|>",
    "<|END_ACTION|>",
    "<|START_RESPONSE|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁end｜>",
    "```",
    ", ",
    "get_weather",
    '{"city": "Paris"}',
    "</s>",
]


@pytest.mark.parametrize("key", list(FORMATS))
def test_never_raises_and_shows_a_prefix(key: str) -> None:
    """Random mixes of markup: parse and the stream never raise, and what the stream
    shows is the start of the final content."""
    rng = random.Random(key)
    for _ in range(300):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(1, 12)))
        content, _ = FORMATS[key].parse(text)
        stream = FORMATS[key].stream(AUTO)
        size = rng.randrange(1, 6)
        shown = "".join(stream.feed(text[i : i + size]) for i in range(0, len(text), size))
        assert stream.finish()[0] == content
        assert content.startswith(shown), (text, shown, content)


def test_raw_keeps_the_arguments_as_written() -> None:
    text = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris" ,"days": 2}}'
        "\n</tool_call>"
    )
    (call,) = FORMATS["hermes"].parse(text)[1]
    assert call.raw == '{"city":"Paris" ,"days": 2}'
    (call,) = FORMATS["generic"].parse(f'{{"tool_call": {G_W}}}')[1]
    assert call.raw == '{"city": "Paris"}'


def test_ids_are_new_for_each_call() -> None:
    calls = FORMATS["hermes"].parse(H_W + "\n" + H_W)[1]
    assert len({c.id for c in calls}) == 2


def test_stream_shows_text_after_a_finished_call() -> None:
    stream = FORMATS["hermes"].stream(AUTO)
    shown = "".join(stream.feed(c) for c in "Before. " + H_W + " After.")
    assert shown == "Before.  After."
    assert stream.finish()[0] == "Before.  After."


def test_stream_of_generic_response_decodes_escapes_as_they_come() -> None:
    stream = FORMATS["generic"].stream(AUTO)
    pieces = [stream.feed(p) for p in ['{"response": "caf', "\\u00", "e9 \\", 'n ok"}']]
    assert pieces == ["caf", "", "é", " \n ok"]


# --- instructions and the encoding's tools block ------------------------------------------


def test_only_generic_has_instructions() -> None:
    for name, fmt in FORMATS.items():
        text = fmt.instructions(AUTO)
        assert (text != "") == (name == "generic"), name
    text = FORMATS["generic"].instructions(AUTO)
    assert json.dumps(WEATHER.to_openai()["function"]["parameters"]) in text
    assert '"response"' in text and '"tool_call"' in text
    assert '"tool_calls"' in FORMATS["generic"].instructions(ToolRequest(TOOLS, parallel=True))
    required = FORMATS["generic"].instructions(ToolRequest(TOOLS, "required"))
    assert '"response"' not in required
    # "none" reaches the generic format only for a history with calls in its JSON: the
    # model is told (and held) to answer in kind, with a response and no call.
    none = FORMATS["generic"].instructions(ToolRequest(TOOLS, "none"))
    assert '"response"' in none and "tool_call" not in none


def test_tools_block() -> None:
    fmt = FORMATS["encoding"]
    block = fmt.tools_block(AUTO)  # type: ignore[attr-defined]
    assert json.loads(block) == [WEATHER.to_openai(), SEARCH.to_openai()]
    forced = fmt.tools_block(ToolRequest(TOOLS, "required", "brave_search"))  # type: ignore[attr-defined]
    assert json.loads(forced) == [SEARCH.to_openai()]


# --- grammars -----------------------------------------------------------------------------

REQUESTS = {
    "required": ToolRequest(TOOLS, "required"),
    "auto": ToolRequest(TOOLS, "auto"),
    "forced": ToolRequest(TOOLS, "required", "get_weather"),
    "parallel": ToolRequest(TOOLS, "auto", parallel=True),
    "parallel-required": ToolRequest(TOOLS, "required", parallel=True),
}


@pytest.mark.parametrize("req", list(REQUESTS))
@pytest.mark.parametrize("key", list(FORMATS))
def test_grammar_is_valid_gbnf(key: str, req: str) -> None:
    import llama_cpp

    request = REQUESTS[req]
    constraint = FORMATS[key].constraint(request)
    assert constraint is not None
    assert constraint.lazy == (request.choice == "auto" and key != "generic")
    for pattern in constraint.triggers:
        re.compile(pattern)
    sampler = llama_cpp.llama_sampler_init_grammar(None, constraint.grammar.encode(), b"root")
    assert sampler, constraint.grammar
    llama_cpp.llama_sampler_free(sampler)


ODD_TOOLS = (
    Tool("math.add-v2", "", {"type": "object", "properties": {"a": {"type": "number"}}}),
    Tool("now"),
    Tool("anything", "", {"type": "object"}),
    Tool("python", "", {"type": "object", "properties": {"code": {"type": "string"}}}),
)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("choice", ["auto", "required"])
@pytest.mark.parametrize("key", list(FORMATS))
def test_grammar_for_odd_tools(key: str, choice: str, parallel: bool) -> None:
    """Dots and dashes in names, no parameters, free-form objects, a built-in name."""
    import llama_cpp

    constraint = FORMATS[key].constraint(ToolRequest(ODD_TOOLS, choice, None, parallel))  # type: ignore[arg-type]
    assert constraint is not None
    sampler = llama_cpp.llama_sampler_init_grammar(None, constraint.grammar.encode(), b"root")
    assert sampler, constraint.grammar
    llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize("key", [k for k in FORMATS if k != "generic"])
def test_no_grammar_for_none(key: str) -> None:
    assert FORMATS[key].constraint(ToolRequest(TOOLS, "none")) is None


def test_generic_none_allows_only_a_response() -> None:
    constraint = FORMATS["generic"].constraint(ToolRequest(TOOLS, "none"))
    assert constraint is not None and not constraint.lazy
    assert "response" in constraint.grammar and "tool" not in constraint.grammar


def test_forced_name_and_offered_tools_only() -> None:
    grammar = FORMATS["hermes"].constraint(REQUESTS["forced"])
    assert grammar is not None
    assert "get_weather" in grammar.grammar and "brave_search" not in grammar.grammar
    llama = FORMATS["llama3"].constraint(ToolRequest(TOOLS, "auto", "brave_search"))
    assert llama is not None and "get_weather" not in "".join(llama.triggers)


def test_refs_in_parameters() -> None:
    tool = Tool(
        "locate",
        "",
        {
            "type": "object",
            "properties": {"where": {"$ref": "#/$defs/Place"}},
            "required": ["where"],
            "$defs": {"Place": {"type": "string", "enum": ["home", "work"]}},
        },
    )
    constraint = FORMATS["hermes"].constraint(ToolRequest((tool,), "required"))
    assert constraint is not None and '"\\"home\\""' in constraint.grammar


# Each case: the format, the request, the model's output, and whether the grammar (lazy
# where the request is "auto", replaying from the trigger as llama.cpp does) accepts it
# through to the end of generation.
ACCEPT: list[tuple[str, str, str, bool]] = [
    ("hermes", "required", H_W, True),
    ("hermes", "forced", H_W, True),
    ("hermes", "forced", H_S, False),
    ("hermes", "required", H_W + "\n" + H_S, False),
    ("hermes", "parallel-required", H_W + "\n" + H_S, True),
    ("hermes", "required", H_W.replace("get_weather", "fly_to"), False),
    ("hermes", "required", H_W.replace('"Paris"', "12"), False),
    # JSON strings: escapes yes, raw control characters no (json.loads refuses them)
    ("hermes", "required", H_W.replace('"Paris"', '"Pa\\nris \\u00e9"'), True),
    ("hermes", "required", H_W.replace('"Paris"', '"Pa\nris"'), False),
    ("hermes", "required", H_W.replace('"Paris"', '"Pa\tris"'), False),
    ("hermes", "auto", "Let me check.\n" + H_W, True),
    ("hermes", "parallel", "Let me check.\n" + H_W + "\n" + H_S, True),
    ("hermes", "auto", "It is sunny.", True),
    ("llama3", "required", L_W, True),
    ("llama3", "forced", L_W, True),
    ("llama3", "required", '{"type": "function", "name": "get_weather", "parameters": {}}', False),
    ("llama3", "auto", L_W, True),
    ("llama3", "auto", '<|python_tag|>brave_search.call(query="news")', True),
    ("llama3", "required", '<|python_tag|>brave_search.call(query="news")', True),
    ("functionary_v3_1", "required", F1_W, True),
    ("functionary_v3_1", "forced", F1_S, False),
    ("functionary_v3_1", "parallel-required", F1_W + F1_S, True),
    ("functionary_v3_1", "auto", "Sure. " + F1_W, True),
    ("functionary_v3_2", "required", 'get_weather\n{"city": "Paris"}', True),
    (
        "functionary_v3_2",
        "required",
        'get_weather\n{"city": "Paris"}>>>brave_search\n{"query": "news"}',
        False,
    ),
    (
        "functionary_v3_2",
        "parallel-required",
        'get_weather\n{"city": "Paris"}>>>brave_search\n{"query": "news"}',
        True,
    ),
    ("functionary_v3_2", "auto", 'get_weather\n{"city": "Paris"}', True),
    ("functionary_v3_2", "auto", 'all\nLet me check.>>>get_weather\n{"city": "Paris"}', True),
    ("functionary_v3_2", "auto", "all\nHello!", True),
    ("command_r7b", "required", "<|START_ACTION|>[\n    " + R_W + "\n]<|END_ACTION|>", True),
    ("command_r7b", "required", "<|START_ACTION|>[" + R_W + "]<|END_ACTION|>", True),
    (
        "command_r7b",
        "parallel-required",
        "<|START_ACTION|>[\n    " + R_W + ",\n    " + R_S + "\n]<|END_ACTION|>",
        True,
    ),
    ("command_r7b", "auto", R_THINK + "<|START_ACTION|>[\n    " + R_W + "\n]<|END_ACTION|>", True),
    ("deepseek_r1", "required", "<｜tool▁calls▁begin｜>" + D_W + "<｜tool▁calls▁end｜>", True),
    (
        "deepseek_r1",
        "required",
        "</think>\n\n<｜tool▁calls▁begin｜>" + D_W + "<｜tool▁calls▁end｜>",
        True,
    ),
    (
        "deepseek_r1",
        "parallel-required",
        "<｜tool▁calls▁begin｜>" + D_W + "\n" + D_S + "<｜tool▁calls▁end｜>",
        True,
    ),
    (
        "deepseek_r1",
        "auto",
        "Weather, so.\n</think>\n\n<｜tool▁calls▁begin｜>" + D_W + "<｜tool▁calls▁end｜>",
        True,
    ),
    ("mistral", "required", f"[TOOL_CALLS][{M_W}]", True),
    ("mistral", "required", f"[TOOL_CALLS][{G_W}]", False),
    ("mistral", "required", f"[TOOL_CALLS][{M_W}, {M_S}]", False),
    ("mistral", "parallel-required", f"[TOOL_CALLS][{M_W}, {M_S}]", True),
    ("mistral", "auto", f"Sure.[TOOL_CALLS][{M_W}]", True),
    ("mistral_args", "required", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', True),
    (
        "mistral_args",
        "required",
        '[TOOL_CALLS]get_weather[CALL_ID]abc123XYZ[ARGS]{"city": "Paris"}',
        True,
    ),
    (
        "mistral_args",
        "parallel",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]brave_search[ARGS]{"query": "news"}',
        True,
    ),
    ("generic", "required", f'{{"tool_call": {G_W}}}', True),
    ("generic", "required", '{"response": "Hi"}', False),
    ("generic", "auto", '{"response": "Hi"}', True),
    ("generic", "auto", "Hi", False),
    ("generic", "parallel", f'{{"tool_calls": [{G_W}, {G_S}]}}', True),
    ("generic", "forced", f'{{"tool_call": {G_S}}}', False),
    ("encoding", "required", f"[TOOL_CALLS] [{G_W}]", True),
    ("encoding", "required", f"[TOOL_CALLS][{G_W}]", True),
    ("encoding", "parallel-required", f"[TOOL_CALLS] [{G_W}, {G_S}]", True),
    ("encoding", "auto", f"Let me see. [TOOL_CALLS] [{G_W}]", True),
    # once triggered, the grammar holds: unknown tools and wrong arguments are refused
    ("hermes", "auto", "Let me check.\n" + H_W.replace("get_weather", "fly_to"), False),
    ("llama3", "auto", L_W.replace('"Paris"', "12"), False),
    ("functionary_v3_2", "auto", 'all\nOk.>>>get_weather\n{"city": 12}', False),
    (
        "command_r7b",
        "auto",
        "<|START_ACTION|>[" + R_W.replace('"0"', '"x"') + "]<|END_ACTION|>",
        False,
    ),
    (
        "deepseek_r1",
        "auto",
        "</think><｜tool▁calls▁begin｜>" + D_S.replace("news", "") + "x",
        False,
    ),
    ("mistral", "auto", f"[TOOL_CALLS][{G_W}]", False),
    ("encoding", "auto", "[TOOL_CALLS] [{}]", False),
]

# Runs in a child process: a grammar llama.cpp cannot replay aborts the process.
_CHECKER = r"""
import ctypes, json, math, sys
import llama_cpp as L

job = json.load(sys.stdin)
L.llama_backend_init()
params = L.llama_model_default_params()
params.vocab_only = True
model = L.llama_model_load_from_file(job["model"].encode(), params)
vocab = L.llama_model_get_vocab(model)


def allowed(sampler, token):
    data = (L.llama_token_data * 1)(L.llama_token_data(token, 0.0, 0.0))
    cur = L.llama_token_data_array(data, 1, -1, False)
    L.llama_sampler_apply(sampler, ctypes.byref(cur))
    return not math.isinf(data[0].logit)


results = []
for case in job["cases"]:
    grammar = case["grammar"].encode()
    if case["triggers"]:
        patterns = [p.encode() for p in case["triggers"]]
        array = (ctypes.c_char_p * len(patterns))(*patterns)
        sampler = L.llama_sampler_init_grammar_lazy_patterns(
            vocab, grammar, b"root", array, len(patterns), None, 0
        )
    else:
        sampler = L.llama_sampler_init_grammar(vocab, grammar, b"root")
    text = case["text"].encode()
    tokens = (L.llama_token * (len(text) + 8))()
    n = L.llama_tokenize(vocab, text, len(text), tokens, len(tokens), False, False)
    ok = bool(sampler) and n >= 0
    for token in tokens[: max(n, 0)] if ok else []:
        if not allowed(sampler, token):
            ok = False
            break
        L.llama_sampler_accept(sampler, token)
    results.append(ok and allowed(sampler, L.llama_vocab_eos(vocab)))
    if sampler:
        L.llama_sampler_free(sampler)
L.llama_model_free(model)
print(json.dumps(results))
"""


def test_grammars_accept_the_canonical_output(chat_model_path: Path) -> None:
    """Each grammar run through llama.cpp's sampler over SmolLM2's vocabulary (loaded
    vocabulary-only): the canonical outputs pass, wrong tools and shapes do not."""
    cases = []
    for key, req, text, _ in ACCEPT:
        constraint = FORMATS[key].constraint(REQUESTS[req])
        assert constraint is not None
        cases.append({"grammar": constraint.grammar, "triggers": constraint.triggers, "text": text})
    job = json.dumps({"model": str(chat_model_path), "cases": cases})
    done = subprocess.run(
        [sys.executable, "-c", _CHECKER], input=job, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    wrong = [(k, r, t) for (k, r, t, want), got in zip(ACCEPT, results, strict=True) if got != want]
    assert not wrong


def test_a_json_schema_grammar_keeps_strings_json(chat_model_path: Path) -> None:
    """A ``json_schema`` request's grammar refuses raw control characters in strings (the
    converter we build on allowed them, and CI saw a newline that json.loads refused)."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    grammar = grammar_for(Sampling(json_schema=schema))
    texts = ['{"a": "x\\ny"}', '{"a": "x\ny"}', '{"a": "x\u0001"}', '{"a": "\\u00e9\\""}']
    cases = [{"grammar": grammar, "triggers": [], "text": t} for t in texts]
    job = json.dumps({"model": str(chat_model_path), "cases": cases})
    done = subprocess.run(
        [sys.executable, "-c", _CHECKER], input=job, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, False, False, True]


def trigger_start(triggers: tuple[str, ...], text: str) -> int | None:
    """Where llama.cpp's lazy grammar starts: the first match's first non-empty group, or
    the match (patterns here compile the same in Python and ECMAScript)."""
    for pattern in triggers:
        m = re.search(pattern, text)
        if m is not None:
            groups = [m.start(i) for i in range(1, (m.lastindex or 0) + 1) if m.group(i)]
            return groups[0] if groups else m.start()
    return None


LAZY = [(k, r, t) for k, r, t, want in ACCEPT if want and r in ("auto", "parallel")]


@pytest.mark.parametrize(("key", "req", "text"), LAZY)
def test_the_trigger_starts_where_the_content_ends(key: str, req: str, text: str) -> None:
    """What the model writes before the trigger is exactly the content parse keeps."""
    fmt = FORMATS[key]
    constraint = fmt.constraint(REQUESTS[req])
    assert constraint is not None
    start = trigger_start(constraint.triggers, text)
    if start is None:
        assert key == "generic" or fmt.parse(text)[1] == ()
    else:
        assert fmt.parse(text)[0] == fmt.parse(text[:start])[0]
        assert fmt.parse(text)[1]
