"""Tools over HTTP: ``llm-inproc serve`` with the official ``openai`` client (calls whole and
streamed, an agent loop, refusals), the remote backend (``Session(Options(remote=...))``)
against our server and against ``llama-server --jinja`` built from the same sources, and
the pure wire pieces both sides share (round-tripped through :mod:`llm_inproc.wire`).

Why llama-server runs with the Qwen 2.5 template (``--chat-template-file``): the llama.cpp
vendored by llama-cpp-python 0.3.36 has no generic JSON tool format any more. For a
template that does not render ``tools`` (SmolLM2's own ChatML one) its differential
autoparser finds no call syntax, so the tools never reach the prompt and the reply is
plain text even with ``tool_choice: "required"``. Qwen 2.5's template is ChatML too (the
same ``<|im_start|>`` tokens SmolLM2 knows) and writes Hermes-style ``<tool_call>`` calls,
which llama-server constrains and parses. Its ``required`` grammar still lets the model
write text before the first call, and the 135M model, asked plainly, writes text until
the token budget ends; one earlier call in the history (a one-shot example) makes it call
at once. Our server applies the ``required`` grammar from the first token (so the plain
request gets a call too) and, with no tool syntax in SmolLM2's template, uses the generic
JSON format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from llm_inproc import Message, Options, Role, Session
from llm_inproc.backends.base import GenerationRequest, Outcome
from llm_inproc.metrics import TokenPerformance
from llm_inproc.sampling import Sampling
from llm_inproc.tools.types import ToolCall, tool_request
from servers import Server, env_without_key, free_port, launch, ours_cmd, request
from subproc import child_env, run_python
from tool_data import WEATHER

pytestmark = pytest.mark.timeout(300)

QWEN_TEMPLATE = Path(__file__).parent / "data" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"
FLAGS = ("-c", "2048", "-np", "1", "--jinja")

CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "description": "An IANA time zone"}},
            "required": ["zone"],
        },
    },
}
ASK = "What is the weather in Paris?"


def _example_call(city: str, call_id: str) -> dict[str, Any]:
    args = json.dumps({"city": city})
    fn = {"name": "get_weather", "arguments": args}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": fn}],
    }


# One earlier call as an example (see the module docstring): what makes llama-server's
# 135M-model reply a call.
ONE_SHOT = [
    {"role": "user", "content": "What is the weather in Berlin?"},
    _example_call("Berlin", "call_1"),
    {"role": "user", "content": ASK},
]


# -- the wire, pure ------------------------------------------------------------------------------


def _decode(events: list[Any]) -> list[Any]:
    from llm_inproc.backends.http.requests import StreamDecoder

    d = StreamDecoder("chat", started=time.monotonic())
    return [item for e in events for item in d.feed(e)]


def test_streamed_calls_round_trip_the_servers_own_builders() -> None:
    from llm_inproc import wire

    calls = (
        ToolCall("call_a", "get_weather", {"city": "Paris"}),
        ToolCall("call_b", "get_time", {"zone": "Europe/Paris"}, raw='{"zone": "Europe/Paris"}'),
    )
    deltas = wire.tool_call_deltas(calls)
    # llama-server's order: id, type and name first (arguments empty), then the arguments.
    assert deltas[0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert deltas[1] == {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    cost = wire.Cost(
        "tool_calls",
        TokenPerformance(7, timedelta(milliseconds=70)),
        0,
        TokenPerformance(9, timedelta(milliseconds=90)),
    )
    chunk = {"model": "m", "response_id": "i", "created": 0}
    events: list[Any] = [wire.chat_chunk(**chunk, role=True)]
    events += [wire.chat_chunk(**chunk, tool_call=d) for d in deltas]
    events += [wire.chat_chunk(**chunk, finish_reason="tool_calls"), "[DONE]"]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    items = _decode(events)
    assert len(items) == 1 and isinstance(items[0], Outcome)
    assert items[0].finish_reason == "tool_calls"
    assert items[0].tool_calls == calls  # ids as the server gave them; raw text kept
    assert [c.raw for c in items[0].tool_calls] == [c.raw for c in calls]
    whole = wire.chat_response("", cost, model="m", response_id="i", tool_calls=calls)
    message = whole["choices"][0]["message"]
    assert message["content"] is None and whole["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [c.to_openai() for c in calls]
    # A server that answers whole although asked to stream: the body, then its end.
    from llm_inproc.backends.http.requests import StreamDecoder

    d = StreamDecoder("chat", started=time.monotonic())
    assert d.feed(whole) == []
    out = d.end_of_stream()
    assert isinstance(out[-1], Outcome) and out[-1].tool_calls == calls
    assert out[-1].finish_reason == "tool_calls" and out[-1].generated.count == 9


def test_a_call_cut_short_becomes_text_not_an_error() -> None:
    fragments = [
        {"index": 0, "id": "x", "type": "function", "function": {"name": "get_weather"}},
        {"index": 0, "function": {"arguments": '{"city": "Pa'}},
    ]
    events: list[Any] = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [f]}}]} for f in fragments
    ]
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}, "[DONE]"]
    items = _decode(events)
    text, outcome = items[0], items[-1]
    assert json.loads(text) == {"name": "get_weather", "arguments": '{"city": "Pa'}
    assert isinstance(outcome, Outcome)
    assert outcome.tool_calls == () and outcome.finish_reason == "length"


def test_request_bodies_carry_tools_and_the_history_in_openai_shape() -> None:
    from llm_inproc.backends.http.requests import generation_call

    call = ToolCall("call_1", "get_weather", {"city": "Berlin"})
    history = [
        Message(Role.USER, "Berlin?"),
        Message(Role.TOOL_CALL, "", tool_calls=[call]),
        Message.result(call, "sunny"),
        Message(Role.USER, ASK),
    ]
    tools = tool_request([WEATHER, CLOCK], "required", True)
    req = GenerationRequest(sampling=Sampling(), messages=history, tools=tools)
    body = generation_call(req, "openai").body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Berlin"}'},
            }
        ],
    }
    assert body["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert body["tools"] == [WEATHER, CLOCK]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("required", True)
    named = GenerationRequest(
        sampling=Sampling(), messages=history, tools=tool_request([WEATHER, CLOCK], "get_time")
    )
    oai = generation_call(named, "openai").body
    assert oai["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert len(oai["tools"]) == 2
    # llama-server reads tool_choice only as a string (an object counts as "auto"): the
    # named tool alone, required, means the same.
    llama = generation_call(named, "llama").body
    assert (llama["tool_choice"], llama["tools"]) == ("required", [CLOCK])


# -- our server and llama-server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(
    llama_server_binary: Path,
    repack_flags: list[str],
    chat_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Server]]:
    """Ours on SmolLM2's own template (the generic JSON format) and on Qwen 2.5's, and
    llama-server --jinja on Qwen 2.5's (see the module docstring). All three start at
    once (their model loads overlap); each is used once its /health answers 200."""
    logs = tmp_path_factory.mktemp("tools")
    qwen = ("--chat-template-file", str(QWEN_TEMPLATE))
    ports = {kind: free_port() for kind in ("ours", "ours-qwen", "llama-qwen")}
    llama = [str(llama_server_binary), "-m", str(chat_model_path)]
    llama += ["--port", str(ports["llama-qwen"]), *FLAGS, "-t", "1", *qwen, "-fa", "off"]
    commands = {
        "ours": ours_cmd(chat_model_path, ports["ours"], *FLAGS),
        "ours-qwen": ours_cmd(chat_model_path, ports["ours-qwen"], *FLAGS, *qwen),
        "llama-qwen": [*llama, *repack_flags],
    }
    env = env_without_key()
    with ExitStack() as stack:
        out: dict[str, Server] = {}
        for kind, cmd in commands.items():
            out[kind] = launch(cmd, ports[kind], logs / f"{kind}.log", env)
            stack.callback(out[kind].close)
        for server in out.values():
            server.wait_healthy(120)
        yield out


def _client(server: Server) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)


def _get_weather(city: str) -> str:
    return f"Sunny and 21 degrees Celsius in {city}."


@pytest.mark.model
def test_a_required_call_whole_and_streamed_with_the_openai_client(
    servers: dict[str, Server],
) -> None:
    client = _client(servers["ours"])
    ask = [{"role": "user", "content": ASK}]
    kw: dict[str, Any] = {"model": "x", "tools": [WEATHER], "temperature": 0, "max_tokens": 64}
    r = client.chat.completions.create(messages=ask, tool_choice="required", **kw)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function" and calls[0].id
    assert calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args.get("city"), str) and args["city"]

    # Streamed, put back together as a client does: fragments keyed by index.
    chunks = list(
        client.chat.completions.create(messages=ask, tool_choice="required", stream=True, **kw)
    )
    parts: dict[int, dict[str, str]] = {}
    first: list[Any] = []
    reasons = []
    for chunk in chunks:
        for c in chunk.choices:
            reasons.append(c.finish_reason)
            for d in c.delta.tool_calls or ():
                if d.index not in parts:
                    first.append(d)
                part = parts.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                part["id"] += d.id or ""
                if d.function is not None:
                    part["name"] += d.function.name or ""
                    part["arguments"] += d.function.arguments or ""
            assert not c.delta.content  # no call markup in the text
    assert [r for r in reasons if r] == ["tool_calls"]
    assert len(parts) == 1
    head = first[0]
    assert head.id and head.type == "function" and head.function.name == "get_weather"
    assert head.function.arguments == ""
    assert parts[0]["name"] == "get_weather"
    assert json.loads(parts[0]["arguments"]) == args  # the same greedy call


@pytest.mark.model
def test_a_named_tool_choice_in_openai_object_form(servers: dict[str, Server]) -> None:
    client = _client(servers["ours"])
    r = client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
        max_tokens=64,
    )
    calls = r.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_time"]
    assert "zone" in json.loads(calls[0].function.arguments)


@pytest.mark.model
def test_an_agent_loop_with_the_openai_client(servers: dict[str, Server]) -> None:
    """Call, run the function, send its result, get the answer in text."""
    client = _client(servers["ours"])
    messages: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    functions = {"get_weather": _get_weather}
    # The first turn must call; the last must answer (a 135M model would call forever).
    for choice in ("required", "none"):
        r = client.chat.completions.create(
            model="x",
            messages=messages,
            tools=[WEATHER],
            tool_choice=choice,
            temperature=0,
            max_tokens=64,
        )
        message = r.choices[0].message
        if not message.tool_calls:
            break
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            result = functions[call.function.name](**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert message.tool_calls is None and message.content and message.content.strip()


@pytest.mark.model
def test_malformed_arguments_in_the_history_are_a_400_naming_the_message(
    servers: dict[str, Server],
) -> None:
    import openai

    bad = _example_call("Berlin", "call_1")
    bad["tool_calls"][0]["function"]["arguments"] = '{"city": "Ber'
    messages = [{"role": "user", "content": "Berlin?"}, bad, {"role": "user", "content": ASK}]
    with pytest.raises(openai.BadRequestError) as caught:
        _client(servers["ours"]).chat.completions.create(
            model="x", messages=messages, tools=[WEATHER], max_tokens=4
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert "messages[1].tool_calls[0]" in error["message"] and "not valid JSON" in error["message"]
    listed = dict(messages[1], tool_calls={"not": "a list"})
    answer = request(
        servers["ours"].port,
        "POST",
        "/v1/chat/completions",
        {"messages": [messages[0], listed, messages[2]]},
    )
    assert answer.status == 400 and "messages[1].tool_calls" in answer.json()["error"]["message"]


@pytest.mark.model
def test_bad_tools_are_a_400_that_says_what_to_fix(servers: dict[str, Server]) -> None:
    not_object = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "array", "items": {}}},
    }
    cases = [
        ({"tools": [not_object]}, "must have type 'object'"),
        ({"tools": [WEATHER, WEATHER]}, "two tools are named 'get_weather'"),
        ({"tools": [WEATHER], "tool_choice": "get_time"}, "not among the tools"),
        ({"tools": [WEATHER], "tool_choice": 3}, "tool_choice 3 is not valid"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": {"type": "function"}}, "must be an array of tools"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ]
    for extra, says in cases:
        body = {"messages": [{"role": "user", "content": ASK}], "max_tokens": 2, **extra}
        answer = request(servers["ours"].port, "POST", "/v1/chat/completions", body)
        assert answer.status == 400, (extra, answer.text)
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and says in error["message"], error


@pytest.mark.model
def test_apply_template_renders_the_tools(servers: dict[str, Server]) -> None:
    port = servers["ours-qwen"].port
    body: dict[str, Any] = {"messages": ONE_SHOT}
    plain = request(port, "POST", "/apply-template", body).json()["prompt"]
    with_tools = request(port, "POST", "/apply-template", {**body, "tools": [WEATHER]})
    prompt = with_tools.json()["prompt"]
    assert "get_weather" in prompt and "The city's name" in prompt
    assert "The city's name" not in plain
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Berlin"}}' in plain
    # The same prompt as llama-server's, which renders the same template.
    theirs = request(
        servers["llama-qwen"].port, "POST", "/apply-template", {**body, "tools": [WEATHER]}
    )
    assert theirs.json()["prompt"] == prompt


def _remote_call(server: Server, cache_dir: Path, history: list[Message], **kw: Any) -> ToolCall:
    with Session(Options(remote=server.url), cache_dir=cache_dir) as s:
        reply = s.complete(history, temperature=0, max_tokens=64, **kw)
        assert reply.finish_reason == "tool_calls", reply
        assert len(reply.tool_calls) == 1 and reply.text == ""
        stream = s.prompt_streaming(history, temperature=0, max_tokens=64, **kw)
        assert "".join(stream).strip() == ""
        assert stream.reply is not None and stream.reply.finish_reason == "tool_calls"
        assert [(c.name, c.arguments) for c in stream.reply.tool_calls] == [
            (c.name, c.arguments) for c in reply.tool_calls
        ]
        return reply.tool_calls[0]


def _one_shot() -> list[Message]:
    call = ToolCall("call_1", "get_weather", {"city": "Berlin"})
    return [
        Message(Role.USER, "What is the weather in Berlin?"),
        Message(Role.TOOL_CALL, "", tool_calls=[call]),
        Message(Role.USER, ASK),
    ]


def _remote_calls(server: Server, cache_dir: Path) -> tuple[ToolCall, ToolCall]:
    """A required call, then a named one, through a remote session on ``server``."""
    call = _remote_call(server, cache_dir, _one_shot(), tools=[WEATHER], tool_choice="required")
    named = _remote_call(
        server, cache_dir, _one_shot(), tools=[CLOCK, WEATHER], tool_choice="get_weather"
    )
    return call, named


@pytest.fixture(scope="module")
def remote_calls(
    servers: dict[str, Server], cache_dir: Path
) -> Iterator[dict[str, Future[tuple[ToolCall, ToolCall]]]]:
    """:func:`_remote_calls` on the three servers at once (one thread each: a server runs
    its own requests alone and in order, as one test would); each test takes its server's
    result, or the error its server's calls raised."""
    pool = ThreadPoolExecutor(len(servers))
    try:
        yield {
            kind: pool.submit(_remote_calls, server, cache_dir) for kind, server in servers.items()
        }
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.mark.model
@pytest.mark.parametrize("kind", ["ours", "ours-qwen", "llama-qwen"])
def test_a_remote_session_returns_the_servers_calls(
    remote_calls: dict[str, Future[tuple[ToolCall, ToolCall]]], kind: str
) -> None:
    call, named = remote_calls[kind].result()
    assert call.name == "get_weather" and call.arguments.get("city")
    assert call.id  # as the server made it (ours and llama-server both make one)
    assert named.name == "get_weather"


@pytest.mark.model
def test_llama_server_and_ours_make_the_same_call(
    servers: dict[str, Server], cache_dir: Path
) -> None:
    """The same required request (with the one-shot example llama-server's model needs,
    see the module docstring): the same tool and the same argument keys, from llama-server
    and from ours on the same template, and from ours in the generic format."""
    body = {
        "messages": ONE_SHOT,
        "tools": [WEATHER],
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 64,
    }
    kinds = ("llama-qwen", "ours-qwen", "ours")
    # One request per server, all at once: each server generates it alone.
    with ThreadPoolExecutor(len(kinds)) as pool:
        answers = pool.map(
            lambda kind: request(servers[kind].port, "POST", "/v1/chat/completions", body), kinds
        )
    found = {}
    for kind, answer in zip(kinds, answers, strict=True):
        assert answer.status == 200, answer.text
        choice = answer.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls", (kind, choice)
        calls = choice["message"]["tool_calls"]
        assert len(calls) == 1 and calls[0]["type"] == "function" and calls[0]["id"]
        found[kind] = (
            calls[0]["function"]["name"],
            sorted(json.loads(calls[0]["function"]["arguments"])),
        )
        # llama-server writes "" for the content beside calls; ours null, as OpenAI does.
        assert choice["message"]["content"] in ("", None)
    assert found["llama-qwen"] == found["ours-qwen"] == found["ours"] == ("get_weather", ["city"])


def test_an_unreadable_chat_template_file_stops_the_server_at_startup(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jinja"
    empty.write_text(" \n")
    for path, says in ((tmp_path / "nope.jinja", "no such file"), (empty, "the file is empty")):
        code = "from llm_inproc.server import main; raise SystemExit(main())"
        argv = ["--model", str(tmp_path / "never-loaded.gguf"), "--port", str(free_port())]
        done = run_python(
            code, *argv, "--jinja", "--chat-template-file", str(path), env=child_env()
        )
        assert done.returncode == 1, done.stderr
        assert f"--chat-template-file {path}: {says}" in done.stderr
        assert "listening" not in done.stderr  # refused before the port and the model
