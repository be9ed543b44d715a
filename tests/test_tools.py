"""Tools in-process, with the real models: calls in each template's own format, held
to the tools' schemas by the grammar, read back into ``Reply.tool_calls``, and the loop
that runs Python functions."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gguf_tools import copy_with_metadata, requantized_q8_0
from llm_inproc import (
    InvalidInputError,
    KnownLLM,
    Memory,
    Message,
    Options,
    Role,
    Sampling,
    Session,
    Tool,
    ToolCall,
)

pytestmark = pytest.mark.model

TEMPLATES = Path(__file__).parent / "data" / "templates"

WEATHER = Tool(
    "get_weather",
    "The current weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name"}},
        "required": ["city"],
    },
)
TIME = Tool(
    "get_time",
    "The current time in a time zone.",
    {
        "type": "object",
        "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
        "required": ["zone"],
    },
)
ASK = [Message(Role.USER, "What is the weather like in Paris today?")]


@pytest.fixture(scope="module")
def smol_q8(cache_dir: Path, chat_model_path: Path) -> Iterator[Session]:
    """The default model, SmolLM2, as a Q8_0 copy: tool prompts carry long preambles (see
    gguf_tools.requantized_q8_0). The README's tools example runs on the packaged file."""
    model = requantized_q8_0(chat_model_path, cache_dir)
    with Session(Options(model=str(model), context_length=4096), cache_dir=cache_dir) as s:
        yield s


def _check_weather(calls: tuple[ToolCall, ...]) -> None:
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.name == "get_weather"
    assert isinstance(call.arguments.get("city"), str) and call.arguments["city"]
    assert json.loads(call.raw) == dict(call.arguments)
    assert call.id


def test_required_gives_one_valid_call_from_the_default_model(smol_q8: Session) -> None:
    reply = smol_q8.complete(ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=0)
    _check_weather(reply.tool_calls)
    assert reply.finish_reason == "tool_calls"
    assert reply.text == ""


def test_a_streamed_call_shows_no_markup_and_ends_with_the_same_call(
    smol_q8: Session,
) -> None:
    whole = smol_q8.complete(ASK, tools=[WEATHER], tool_choice="required", temperature=0)
    stream = smol_q8.prompt_streaming(ASK, tools=[WEATHER], tool_choice="required", temperature=0)
    shown = "".join(stream)
    assert shown == ""
    assert stream.reply is not None
    _check_weather(stream.reply.tool_calls)
    assert [(c.name, dict(c.arguments)) for c in stream.reply.tool_calls] == [
        (c.name, dict(c.arguments)) for c in whole.tool_calls
    ]


def test_a_named_tool_is_the_one_called(smol_q8: Session) -> None:
    reply = smol_q8.complete(ASK, tools=[WEATHER, TIME], tool_choice="get_time", temperature=0)
    assert [c.name for c in reply.tool_calls] == ["get_time"]
    assert reply.tool_calls[0].arguments["zone"] in ("UTC", "CET", "PST")


def test_parallel_calls_are_one_or_more(smol_q8: Session) -> None:
    reply = smol_q8.complete(
        [Message(Role.USER, "Weather in Paris and in Rome?")],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=True,
        temperature=0,
        max_tokens=200,
    )
    assert reply.tool_calls and all(c.name == "get_weather" for c in reply.tool_calls)
    assert len({c.id for c in reply.tool_calls}) == len(reply.tool_calls)


def test_none_gives_text_and_no_call(smol_q8: Session) -> None:
    reply = smol_q8.complete(ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=8)
    assert reply.tool_calls == ()
    assert reply.text
    assert reply.finish_reason in ("stop", "length")
    # "none" shows the model no tools: the prompt is the plain one.
    plain = smol_q8.count_tokens(ASK)
    assert smol_q8.count_tokens(ASK, tools=[WEATHER]) > plain


def test_async_call(smol_q8: Session) -> None:
    async def ask() -> Any:
        return await smol_q8.acomplete(ASK, tools=[WEATHER], tool_choice="required", temperature=0)

    _check_weather(asyncio.run(ask()).tool_calls)


def test_a_call_and_its_result_in_the_history_reach_the_model(smol_q8: Session) -> None:
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    history = [
        *ASK,
        Message(Role.TOOL_CALL, "", tool_calls=[call]),
        Message.result(call, "Sunny, 24 degrees Celsius."),
    ]
    request = smol_q8.chat_request(history, Sampling(temperature=0))
    text = smol_q8.render(request)
    assert "Sunny, 24 degrees Celsius." in text and "get_weather" in text
    reply = smol_q8.complete(
        history, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40
    )
    assert reply.text and not reply.tool_calls


def test_bad_tools_are_refused_before_anything_runs(smol_q8: Session) -> None:
    with pytest.raises(InvalidInputError, match="type 'object'"):
        smol_q8.complete(ASK, tools=[{"name": "f", "parameters": {"type": "string"}}])
    with pytest.raises(InvalidInputError, match="two tools are named"):
        smol_q8.complete(ASK, tools=[WEATHER, WEATHER])

    def untyped(city):  # type: ignore[no-untyped-def]
        return city

    with pytest.raises(InvalidInputError, match="city"):
        smol_q8.complete(ASK, tools=[untyped])
    with pytest.raises(InvalidInputError, match="not among the tools"):
        smol_q8.complete(ASK, tools=[WEATHER], tool_choice="get_time")
    with pytest.raises(InvalidInputError, match="grammar or json_schema"):
        smol_q8.complete(
            ASK,
            tools=[WEATHER],
            tool_choice="required",
            sampling=Sampling(json_schema={"type": "object"}),
        )


def test_memory_keeps_calls_and_results() -> None:
    memory = Memory()
    call = ToolCall("call_7", "get_weather", {"city": "Oslo", "days": [1, 2]})
    conv = memory.get("ann", "#general")
    conv.messages += [
        Message(Role.USER, "Weather in Oslo?"),
        Message(Role.TOOL_CALL, "Let me look.", tool_calls=[call]),
        Message.result(call, '{"sky": "snow"}'),
        Message(Role.ASSISTANT, "It snows."),
    ]
    out = io.StringIO()
    memory.save(out)
    again = Memory()
    again.load(io.StringIO(out.getvalue()))
    loaded = again.get("ann", "#general").messages
    assert loaded == conv.messages
    assert loaded[1].tool_calls[0].arguments == {"city": "Oslo", "days": [1, 2]}
    # A file of the reference's format (no tool keys) still loads.
    old = '{"v":1,"c":[{"u":"a","c":"b","m":[{"r":1,"c":"hi"},{"r":4,"c":"[call]"}]}]}'
    legacy = Memory()
    legacy.load(io.StringIO(old))
    assert legacy.get("a", "b").messages[1] == Message(Role.TOOL_CALL, "[call]")
    bad = '{"v":1,"c":[{"u":"a","c":"b","m":[{"r":4,"t":[{"i":"x","n":"f","a":"{oops"}]}]}]}'
    with pytest.raises(InvalidInputError, match="not JSON"):
        Memory().load(io.StringIO(bad))


# -- the loop ---------------------------------------------------------------------------------


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a * b


def broken(city: str) -> str:
    """Look up the population of a city.

    Args:
        city: The city's name.
    """
    raise RuntimeError("the population service is down")


def test_run_tools_calls_the_function_and_ends_in_text(smol_q8: Session) -> None:
    messages = [Message(Role.USER, "What is 12 times 34? Use the tool.")]
    # 48 tokens: room for a call (about 32), and the final text need not be long.
    reply = smol_q8.run_tools(
        messages, [multiply], tool_choice="required", max_rounds=2, temperature=0, max_tokens=48
    )
    assert messages[1].role is Role.TOOL_CALL and messages[1].tool_calls[0].name == "multiply"
    args = messages[1].tool_calls[0].arguments
    assert messages[2].role is Role.TOOL_CALL_RESULT
    assert messages[2].tool_call_id == messages[1].tool_calls[0].id
    assert messages[2].content == str(args["a"] * args["b"])
    assert messages[-1].role is Role.ASSISTANT and messages[-1].content == reply.text
    assert reply.tool_calls == ()
    assert len(messages) <= 1 + 2 * 2 + 1  # at most max_rounds rounds of calls, then text


def test_a_failing_tool_becomes_a_result_the_model_reads(smol_q8: Session) -> None:
    messages = [Message(Role.USER, "How many people live in Lyon?")]
    reply = smol_q8.run_tools(
        messages, [broken], tool_choice="required", max_rounds=1, temperature=0, max_tokens=60
    )
    assert messages[2].role is Role.TOOL_CALL_RESULT
    assert "RuntimeError" in messages[2].content and "service is down" in messages[2].content
    assert messages[-1].role is Role.ASSISTANT and not reply.tool_calls


def test_arun_tools_awaits_async_functions(smol_q8: Session) -> None:
    async def lookup(city: str) -> dict[str, Any]:
        """Facts about a city.

        Args:
            city: The city's name.
        """
        await asyncio.sleep(0)
        return {"city": city, "population": 513275}

    messages = [Message(Role.USER, "Tell me about Lyon.")]
    asyncio.run(
        smol_q8.arun_tools(
            messages, [lookup], tool_choice="required", max_rounds=1, temperature=0, max_tokens=60
        )
    )
    assert json.loads(messages[2].content)["population"] == 513275


def test_run_tools_needs_functions(smol_q8: Session) -> None:
    with pytest.raises(InvalidInputError, match="no Python function"):
        smol_q8.run_tools([Message(Role.USER, "hi")], [WEATHER])
    with pytest.raises(InvalidInputError, match="as a list"):
        smol_q8.run_tools((Message(Role.USER, "hi"),), [multiply])  # type: ignore[arg-type]


# -- each template family, on a Q8_0 copy of the default model -------------------------------------

FAMILIES = {
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": "hermes",
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3",
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": "mistral",
    "meetkai-functionary-medium-v3.2.jinja": "functionary_v3_2",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": "command_r7b",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": "deepseek_r1",
}


@pytest.fixture(scope="module")
def family_sessions(
    tmp_path_factory: pytest.TempPathFactory, chat_model_path: Path, cache_dir: Path
) -> Iterator[dict[str, Session]]:
    sessions: dict[str, Session] = {}
    where = tmp_path_factory.mktemp("templates")
    model = requantized_q8_0(chat_model_path, cache_dir)  # the templates' preambles are long
    try:
        for name in FAMILIES:
            path = copy_with_metadata(
                model,
                where / (name.removesuffix(".jinja") + ".gguf"),
                {"tokenizer.chat_template": (TEMPLATES / name).read_text()},
            )
            sessions[name] = Session(
                Options(model=str(path), context_length=2048), cache_dir=cache_dir
            )
        yield sessions
    finally:
        for s in sessions.values():
            s.close()


@pytest.mark.parametrize("template", list(FAMILIES))
def test_each_template_family_gives_a_required_call_in_its_own_format(
    template: str, family_sessions: dict[str, Session]
) -> None:
    session = family_sessions[template]
    request = session.chat_request(
        ASK, Sampling(temperature=0, max_tokens=120), tools=_request([WEATHER], "required")
    )
    assert request.tool_format is not None and request.tool_format.name == FAMILIES[template]
    assert "get_weather" in session.render(request)  # the template showed the tools
    stream = session.generate(request)
    shown = "".join(stream)
    assert stream.reply is not None
    _check_weather(stream.reply.tool_calls)
    assert "get_weather" not in shown


def _request(tools: list[Any], choice: str) -> Any:
    from llm_inproc.tools.types import tool_request

    return tool_request(tools, choice)


def test_auto_on_a_model_that_never_writes_the_trigger_gives_no_call(
    family_sessions: dict[str, Session],
) -> None:
    """Hermes' calls begin with ``<tool_call>``; banned, the lazy grammar never wakes and the
    reply is the model's free text."""
    session = family_sessions["Qwen-Qwen2.5-7B-Instruct.jinja"]
    no_tags = Sampling(temperature=0, max_tokens=30, logit_bias={"<": -float("inf")})
    reply = session.complete(ASK, tools=[WEATHER], tool_choice="auto", sampling=no_tags)
    assert reply.tool_calls == () and reply.text


def test_a_raw_encoding_with_tool_tokens_calls_between_them(
    model_path: Path, cache_dir: Path
) -> None:
    """A KnownLLM whose prompt encoding has tool tokens (the packaged Mistral entries):
    tools in the available-tools block, the call after the tool-call token."""
    from llm_inproc import default_config
    from llm_inproc.models.embedded import GEMMA_BASE

    mistral = next(k for k in default_config().known_llms if "Mistral-7B" in k.source)
    gemma = KnownLLM(source=GEMMA_BASE.ref, prompt_encoding=mistral.prompt_encoding)
    options = Options(model=GEMMA_BASE.ref, context_length=2048)
    with Session(options, known_llms=[gemma], cache_dir=cache_dir) as s:
        request = s.chat_request(
            ASK, Sampling(temperature=0, max_tokens=80), tools=_request([WEATHER], "required")
        )
        assert request.prompt is not None and request.prompt.startswith("[AVAILABLE_TOOLS]")
        assert '"get_weather"' in request.prompt
        stream = s.generate(request)
        assert "".join(stream) == ""
        assert stream.reply is not None
        _check_weather(stream.reply.tool_calls)
