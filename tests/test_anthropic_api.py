"""Anthropic's Messages API on our server, driven by the official ``anthropic`` client:
whole and streamed messages, the system prompt, stop sequences, the token budget,
multi-part content, a tool_use / tool_result round trip, count_tokens, the API key the
client sends (``x-api-key``), and the errors. SmolLM2-135M writes poor text: these
assert shapes, event order, stop reasons and counts, and compare replies only with
themselves (greedy, so a stream must equal the whole reply)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import Server, env_without_key, named_events, request, start_ours

pytestmark = [pytest.mark.timeout(300), pytest.mark.model]


FLAGS = ("-c", "2048", "-np", "1")
# The client no longer takes sampling parameters; the server still reads them (as
# llama-server does), so they travel as extra body fields.
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
ASK = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def server(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("anthropic") / "ours.log"
    with start_ours(chat_model_path, log, *FLAGS, env=env_without_key()) as s:
        yield s


def _client(server: Server, key: str = "none") -> Any:
    return _anthropic().Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=120)


def _anthropic() -> Any:
    """The client package, imported on first use: it takes a second, in every worker that
    collects this file."""
    import anthropic

    return anthropic


def _create(server: Server, **kw: Any) -> Any:
    args: dict[str, Any] = {"model": "x", "max_tokens": 24, "messages": ASK, **GREEDY}
    return _client(server).messages.create(**{**args, **kw})


def _text(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _events(server: Server, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A raw stream's ``(event name, data)`` pairs: the names Anthropic's clients read."""
    answer = request(server.port, "POST", "/v1/messages", {**body, "stream": True})
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    out = named_events(answer.text)
    assert all(data["type"] == name for name, data in out)
    return out


def test_a_whole_message_in_anthropics_shape(server: Server) -> None:
    r = _create(server, system="You are a geography teacher.", max_tokens=24)
    assert r.type == "message" and r.role == "assistant" and r.id
    assert [b.type for b in r.content] == ["text"] and r.content[0].text
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert r.stop_sequence is None
    assert 0 < r.usage.output_tokens <= 24
    prompt = r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0)
    counted = _client(server).messages.count_tokens(
        model="x", messages=ASK, system="You are a geography teacher."
    )
    assert prompt == counted.input_tokens  # the prompt counted as the reply was
    # The system prompt as text blocks is the same prompt, joined.
    blocks = [
        {"type": "text", "text": "You are a geography "},
        {"type": "text", "text": "teacher."},
    ]
    assert _text(_create(server, system=blocks, max_tokens=24)) == _text(r)
    longer = "You are a geography teacher. Answer in one word."
    assert (
        _client(server).messages.count_tokens(model="x", messages=ASK, system=longer).input_tokens
        > prompt
    )  # the system prompt is in the prompt


def test_the_token_budget_ends_with_max_tokens(server: Server) -> None:
    r = _create(server, max_tokens=3)
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 3


def test_a_stop_sequence_ends_the_turn_and_is_named(server: Server) -> None:
    text = _text(_create(server, max_tokens=16))
    word = text.split()[2]
    r = _create(server, max_tokens=16, stop_sequences=[word])
    # llama-server's stop_reason for a stop sequence is end_turn, naming it.
    assert (r.stop_reason, r.stop_sequence) == ("end_turn", word)
    assert _text(r) == text[: text.index(word)]


def test_the_stream_sends_anthropics_events_and_the_whole_text(server: Server) -> None:
    whole = _create(server, max_tokens=12)
    body: dict[str, Any] = {"model": "x", "max_tokens": 12, "messages": ASK}
    events = _events(server, {**body, "temperature": 0})
    names = [name for name, _ in events]
    n = len(names) - 5
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * n,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # no ping, as llama-server
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 0
    assert start["usage"]["input_tokens"] == whole.usage.input_tokens + (
        whole.usage.cache_read_input_tokens or 0
    )
    assert all(d["index"] == 0 for _, d in events[1:-2])
    text = "".join(d["delta"]["text"] for name, d in events if name == "content_block_delta")
    assert text == _text(whole)
    end = events[-2][1]
    assert end["delta"]["stop_reason"] == whole.stop_reason
    assert end["usage"]["output_tokens"] == whole.usage.output_tokens

    # The client's own stream helper puts the same message together.
    with _client(server).messages.stream(**{**body, **GREEDY}) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == _text(final) == _text(whole)
    assert final.stop_reason == whole.stop_reason
    kinds = [e.type for e in _client(server).messages.create(**body, **GREEDY, stream=True)]
    assert kinds == names


def test_multi_part_content_is_one_turn(server: Server) -> None:
    parts = [
        {"type": "text", "text": "What is the capital"},
        {"type": "text", "text": "of France?"},
    ]
    joined = [{"role": "user", "content": "What is the capital\nof France?"}]
    count = _client(server).messages.count_tokens
    assert count(model="x", messages=[{"role": "user", "content": parts}]).input_tokens == (
        count(model="x", messages=joined).input_tokens
    )
    r = _create(server, messages=[{"role": "user", "content": parts}], max_tokens=8)
    assert _text(r) == _text(_create(server, messages=joined, max_tokens=8))


def _check_weather_input(value: Any) -> None:
    """The call's input against WEATHER's schema: an object with a string city."""
    assert isinstance(value, dict) and set(value) <= {"city"}
    assert isinstance(value["city"], str) and value["city"]


def test_a_forced_tool_use_round_trip(server: Server) -> None:
    client = _client(server)
    forced = {"type": "tool", "name": "get_weather"}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    kw: dict[str, Any] = {"model": "x", "max_tokens": 64, "tools": [WEATHER], **GREEDY}
    r = client.messages.create(messages=ask, tool_choice=forced, **kw)
    assert r.stop_reason == "tool_use"
    uses = [b for b in r.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    _check_weather_input(uses[0].input)

    # Streamed: the tool_use block after any text block, its input as input_json_delta.
    body = {**kw, "messages": ask, "tool_choice": forced}
    events = _events(server, {**body.pop("extra_body"), **body})
    starts = [d for name, d in events if name == "content_block_start"]
    use = [d for d in starts if d["content_block"]["type"] == "tool_use"]
    assert len(use) == 1 and use[0]["index"] == len(starts) - 1
    assert use[0]["content_block"]["name"] == "get_weather"
    deltas = [d["delta"] for name, d in events if name == "content_block_delta"]
    partial = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(partial) == uses[0].input
    assert [name for name, _ in events][-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    with client.messages.stream(**body, **GREEDY) as stream:
        final = stream.get_final_message()
    assert [b.input for b in final.content if b.type == "tool_use"] == [uses[0].input]

    # The result goes back as a tool_result block; the model answers in text.
    result = "Sunny and 21 degrees Celsius in Paris."
    history = [
        *ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": result}],
        },
    ]
    answer = client.messages.create(messages=history, tool_choice={"type": "none"}, **kw)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"] and _text(answer).strip()
    # The result is in the prompt (as text blocks too, with is_error accepted).
    as_blocks = [
        {
            "type": "tool_result",
            "tool_use_id": uses[0].id,
            "content": [{"type": "text", "text": result}],
            "is_error": False,
        }
    ]
    empty = [{"type": "tool_result", "tool_use_id": uses[0].id, "content": ""}]
    n = {
        name: client.messages.count_tokens(
            model="x", tools=[WEATHER], messages=[*history[:2], {"role": "user", "content": c}]
        ).input_tokens
        for name, c in (("text", history[2]["content"]), ("blocks", as_blocks), ("empty", empty))
    }
    assert n["text"] == n["blocks"] > n["empty"]


def test_an_api_key_comes_as_x_api_key(
    chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = tmp_path_factory.mktemp("anthropic-key") / "ours.log"
    env = env_without_key()
    with start_ours(chat_model_path, log, *FLAGS, "--api-key", "right-key", env=env) as keyed:
        r = _client(keyed, "right-key").messages.create(model="x", max_tokens=2, messages=ASK)
        assert r.type == "message"
        with pytest.raises(_anthropic().AuthenticationError):
            _client(keyed, "wrong-key").messages.create(model="x", max_tokens=2, messages=ASK)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"max_tokens": 4}, "Field 'messages': is required"),
        ({"messages": {"role": "user"}}, "Field 'messages': must be an array"),
        ({"messages": []}, "no message to answer"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1]: image blocks are not supported",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "name": "f"}]}]},
            "tool_use blocks belong in assistant messages",
        ),
        ({"messages": ASK, "stop_sequences": "."}, "Field 'stop_sequences'"),
        ({"messages": ASK, "tool_choice": {"type": "any"}}, "needs tools"),
        ({"messages": ASK, "tools": [WEATHER], "tool_choice": "auto"}, "Field 'tool_choice'"),
        (
            {"messages": ASK, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "f"}},
            "not among the tools",
        ),
        (
            {"messages": ASK, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0].type",
        ),
        ({"messages": ASK, "max_tokens": "many"}, "Field 'max_tokens'"),
    ],
)
def test_bad_requests_are_a_400_that_names_the_field(
    server: Server, body: dict[str, Any], says: str
) -> None:
    answer = request(server.port, "POST", "/v1/messages", body)
    assert answer.status == 400, answer.text
    error = answer.json()["error"]  # llama-server's error shape, not Anthropic's
    assert error["type"] == "invalid_request_error" and error["code"] == 400
    assert says in error["message"], error["message"]


def test_the_client_sees_a_bad_request_as_one(server: Server) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    with pytest.raises(_anthropic().BadRequestError) as caught:
        _create(server, messages=[{"role": "user", "content": [image]}])
    assert caught.value.status_code == 400 and "image" in str(caught.value)
    with pytest.raises(_anthropic().BadRequestError):
        _client(server).messages.count_tokens(model="x", messages=[])
