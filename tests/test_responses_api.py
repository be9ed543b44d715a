"""OpenAI's Responses API on our server, driven by the official ``openai`` client
(``client.responses.create``, whole and streamed): instructions, input as a string or as
message items, the token budget, function tools with a call / output round trip,
``input_tokens``, and the errors. Greedy replies are compared only with themselves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import Server, env_without_key, request, start_ours

pytestmark = [pytest.mark.timeout(300), pytest.mark.model]

FLAGS = ("-c", "2048", "-np", "1")
ASK = "What is the capital of France?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name"}},
        "required": ["city"],
    },
}
TEXT_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_DONE = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def server(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("responses") / "ours.log"
    with start_ours(chat_model_path, log, *FLAGS, env=env_without_key()) as s:
        yield s


def _openai() -> Any:
    """The client package, imported on first use, not at collection."""
    import openai

    return openai


def _client(server: Server) -> Any:
    return _openai().OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)


def _create(server: Server, **kw: Any) -> Any:
    args: dict[str, Any] = {"model": "x", "input": ASK, "max_output_tokens": 16, "temperature": 0}
    return _client(server).responses.create(**{**args, **kw})


def _count(server: Server, **kw: Any) -> int:
    n: int = _client(server).responses.input_tokens.count(model="x", **kw).input_tokens
    return n


def test_a_whole_response(server: Server) -> None:
    r = _create(server, instructions="You are a geography teacher.")
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert [item.type for item in r.output] == ["message"]
    message = r.output[0]
    assert message.role == "assistant" and message.status == "completed"
    assert [p.type for p in message.content] == ["output_text"]
    assert r.output_text == message.content[0].text and r.output_text
    usage = r.usage
    assert 0 < usage.output_tokens <= 16
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens == _count(
        server, input=ASK, instructions="You are a geography teacher."
    )


def test_the_token_budget(server: Server) -> None:
    assert _create(server, max_output_tokens=3).usage.output_tokens == 3


def test_input_as_items_is_the_same_conversation(server: Server) -> None:
    as_parts = [{"role": "user", "content": [{"type": "input_text", "text": ASK}]}]
    as_item = [{"type": "message", "role": "user", "content": ASK}]
    n = _count(server, input=ASK)
    assert _count(server, input=as_parts) == _count(server, input=as_item) == n
    assert _count(server, input=ASK, instructions="Answer in one word.") != n
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": ASK},
    ]
    assert _count(server, input=history) > n
    assert _create(server, input=as_parts).output_text == _create(server).output_text


def test_the_stream_sends_llama_servers_events_and_the_whole_text(server: Server) -> None:
    whole = _create(server, max_output_tokens=12)
    events = list(_create(server, max_output_tokens=12, stream=True))
    kinds = [e.type for e in events]
    n = len(kinds) - 8
    assert kinds == [
        "response.created",
        "response.in_progress",
        *TEXT_EVENTS,
        *["response.output_text.delta"] * n,
        *TEXT_DONE,
    ]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    assert events[-4].text == text and events[-3].part.text == text
    done = events[-1].response
    assert done.status == "completed" and done.id == events[0].response.id
    assert done.output_text == text and done.usage.output_tokens == whole.usage.output_tokens
    # On the wire: each event named as its type, no [DONE] (llama-server's framing).
    raw = request(
        server.port, "POST", "/v1/responses", {"input": ASK, "max_output_tokens": 2, "stream": True}
    )
    blocks = raw.text.strip().split("\n\n")
    for block in blocks:
        name, data = block.split("\n")
        assert name == "event: " + json.loads(data.removeprefix("data: "))["type"]
    assert "[DONE]" not in raw.text


def test_a_function_call_round_trip(server: Server) -> None:
    client = _client(server)
    ask = "What is the weather in Paris?"
    kw: dict[str, Any] = {"model": "x", "max_output_tokens": 64, "temperature": 0}
    r = client.responses.create(input=ask, tools=[WEATHER], tool_choice="required", **kw)
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].status == "completed"
    assert calls[0].id.startswith("fc_") and calls[0].call_id.startswith("call_")
    args = json.loads(calls[0].arguments)
    assert isinstance(args, dict) and set(args) <= {"city"} and isinstance(args["city"], str)

    streamed = list(
        client.responses.create(
            input=ask, tools=[WEATHER], tool_choice="required", stream=True, **kw
        )
    )
    kinds = [e.type for e in streamed]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-4:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.output_item.done",
        "response.completed",
    ]
    assert streamed[-4].item.name == "get_weather" and streamed[-4].item.arguments == ""
    assert json.loads(streamed[-3].delta) == args
    assert streamed[-2].item.arguments == streamed[-3].delta
    assert streamed[-3].item_id == streamed[-4].item.id == streamed[-2].item.id

    # The call and its output go back as input items; the model answers in text.
    output = "Sunny and 21 degrees Celsius in Paris."
    items: list[Any] = [
        {"role": "user", "content": ask},
        calls[0].model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": output},
    ]
    answer = client.responses.create(input=items, tools=[WEATHER], tool_choice="none", **kw)
    assert [item.type for item in answer.output] == ["message"] and answer.output_text.strip()
    empty = [*items[:2], {**items[2], "output": ""}]
    parts = [*items[:2], {**items[2], "output": [{"type": "input_text", "text": output}]}]
    n = _count(server, input=items, tools=[WEATHER])
    assert (
        n
        == _count(server, input=parts, tools=[WEATHER])
        > _count(server, input=empty, tools=[WEATHER])
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"max_output_tokens": 4}, "Field 'input': is required"),
        ({"input": 3}, "Field 'input': must be a string or an array"),
        ({"input": ASK, "previous_response_id": "resp_1"}, "previous_response_id"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]: input_image is not supported",
        ),
        ({"input": [{"type": "mystery"}]}, "input[0]: cannot tell the item's kind"),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{x"}]},
            "input[0].arguments: not valid JSON",
        ),
        ({"input": ASK, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"input": ASK, "tool_choice": "required"}, "needs tools"),
        ({"input": ASK, "max_output_tokens": "many"}, "Field 'max_output_tokens'"),
    ],
)
def test_bad_requests_are_a_400_that_names_the_field(
    server: Server, body: dict[str, Any], says: str
) -> None:
    answer = request(server.port, "POST", "/v1/responses", body)
    assert answer.status == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and says in error["message"], error


def test_the_client_sees_a_bad_request_as_one(server: Server) -> None:
    with pytest.raises(_openai().BadRequestError) as caught:
        _create(server, previous_response_id="resp_1")
    assert "previous_response_id" in str(caught.value)
