"""Anthropic's Messages API and OpenAI's Responses API on our server and on the real
llama-server (built from the llama.cpp sources llama-cpp-python vendors), same model,
same requests: same status codes, same fields, the same event names in the same order,
and, greedy, the same text and token counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import (
    Answer,
    Server,
    both,
    env_without_key,
    named_events,
    start_llama_server,
    start_ours,
)

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

FLAGS = ("-c", "1024", "-np", "1", "-t", "1", "--alias", "smol")
ASK = "Name one colour."
MESSAGES = {
    "model": "smol",
    "max_tokens": 10,
    "temperature": 0,
    "system": "You are terse.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": ASK}]}],
}
RESPONSES = {
    "model": "smol",
    "max_output_tokens": 10,
    "temperature": 0,
    "instructions": "You are terse.",
    "input": [{"role": "user", "content": ASK}],
}


@pytest.fixture(scope="module")
def theirs(
    llama_server_binary: Path,
    repack_flags: list[str],
    chat_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    flags = [*FLAGS, *repack_flags]
    with start_llama_server(
        llama_server_binary, chat_model_path, log, *flags, env=env_without_key()
    ) as s:
        yield s


@pytest.fixture(scope="module")
def ours(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("ours") / "server.log"
    with start_ours(chat_model_path, log, *FLAGS[:4], *FLAGS[6:], env=env_without_key()) as s:
        yield s


def _both(ours: Server, theirs: Server, path: str, body: Any) -> tuple[Answer, Answer]:
    return both(ours, theirs, "POST", path, body=body)


def _shape(value: Any) -> Any:
    """A body's keys, recursively (objects' keys, lists' first element), without values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


def _events(answer: Answer) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of a named-event stream."""
    assert answer.status == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    return named_events(answer.text)


def _same_events(ours: Answer, theirs: Answer) -> list[tuple[str, dict[str, Any]]]:
    """Both streams: the same event names in order, each with the same fields."""
    a, b = _events(ours), _events(theirs)
    assert [name for name, _ in a] == [name for name, _ in b]
    for (name, mine), (_, real) in zip(a, b, strict=True):
        assert _shape(mine) == _shape(real), name
    return a


def _anthropic_text(body: dict[str, Any]) -> str:
    return "".join(b["text"] for b in body["content"] if b["type"] == "text")


def _same_output(mine: int, real: int, natural_end: bool) -> None:
    """Generated tokens: llama-server counts the end-of-generation token of a reply that
    ended by itself, we do not (on every route); a budget's end is the same count."""
    assert real - mine == (1 if natural_end else 0)


def _prompt(usage: dict[str, Any]) -> int:
    n: int = usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)
    return n


@pytest.mark.parametrize(
    "extra", [{}, {"max_tokens": 3}, {"stop_sequences": ["."]}], ids=["plain", "budget", "stop"]
)
def test_a_whole_message_is_llama_servers(
    ours: Server, theirs: Server, extra: dict[str, Any]
) -> None:
    a, b = _both(ours, theirs, "/v1/messages", {**MESSAGES, **extra})
    assert a.status == b.status == 200
    mine, real = a.json(), b.json()
    assert _shape(mine) == _shape(real)
    assert _anthropic_text(mine) == _anthropic_text(real)
    for key in ("type", "role", "model", "stop_reason", "stop_sequence"):
        assert mine[key] == real[key], key
    natural = real["stop_reason"] == "end_turn" and real["stop_sequence"] is None
    _same_output(mine["usage"]["output_tokens"], real["usage"]["output_tokens"], natural)
    assert _prompt(mine["usage"]) == _prompt(real["usage"])


def test_a_streamed_message_is_llama_servers(ours: Server, theirs: Server) -> None:
    a, b = _both(ours, theirs, "/v1/messages", {**MESSAGES, "stream": True})
    events = _same_events(a, b)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    text = {
        name: "".join(
            d["delta"].get("text", "") for n, d in _events(ans) if n == "content_block_delta"
        )
        for name, ans in (("ours", a), ("theirs", b))
    }
    assert text["ours"] == text["theirs"]
    mine, real = (_events(ans)[-2][1] for ans in (a, b))
    assert mine["delta"] == real["delta"]  # message_delta: stop reason and sequence
    natural = real["delta"]["stop_reason"] == "end_turn"
    _same_output(mine["usage"]["output_tokens"], real["usage"]["output_tokens"], natural)


def test_count_tokens_is_llama_servers(ours: Server, theirs: Server) -> None:
    a, b = _both(ours, theirs, "/v1/messages/count_tokens", MESSAGES)
    assert a.status == b.status == 200
    assert a.json() == b.json()


def test_message_errors(ours: Server, theirs: Server) -> None:
    # A missing 'messages': llama-server throws a runtime_error, so 500 server_error; a
    # request that lacks a required field is the client's error here: 400.
    a, b = _both(ours, theirs, "/v1/messages", {"max_tokens": 4})
    assert (a.status, b.status) == (400, 500)
    assert a.json()["error"].keys() == b.json()["error"].keys()
    assert "messages" in a.json()["error"]["message"] and "messages" in b.json()["error"]["message"]


@pytest.mark.parametrize("extra", [{}, {"max_output_tokens": 3}], ids=["plain", "budget"])
def test_a_whole_response_is_llama_servers(
    ours: Server, theirs: Server, extra: dict[str, Any]
) -> None:
    a, b = _both(ours, theirs, "/v1/responses", {**RESPONSES, **extra})
    assert a.status == b.status == 200
    mine, real = a.json(), b.json()
    assert _shape(mine) == _shape(real)
    text = [body["output"][0]["content"][0]["text"] for body in (mine, real)]
    assert text[0] == text[1]
    n = [body["usage"]["output_tokens"] for body in (mine, real)]
    budget = {**RESPONSES, **extra}["max_output_tokens"]
    _same_output(n[0], n[1], natural_end=n[0] < budget)
    assert mine["usage"]["input_tokens"] == real["usage"]["input_tokens"]


def test_a_streamed_response_is_llama_servers(ours: Server, theirs: Server) -> None:
    a, b = _both(ours, theirs, "/v1/responses", {**RESPONSES, "stream": True})
    events = _same_events(a, b)
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    done = [_events(ans)[-1][1]["response"] for ans in (a, b)]
    assert done[0]["output"][0]["content"][0]["text"] == done[1]["output"][0]["content"][0]["text"]
    n = [d["usage"]["output_tokens"] for d in done]
    _same_output(n[0], n[1], natural_end=n[0] < RESPONSES["max_output_tokens"])


def test_input_tokens_and_errors_are_llama_servers(ours: Server, theirs: Server) -> None:
    a, b = _both(ours, theirs, "/v1/responses/input_tokens", RESPONSES)
    assert a.status == b.status == 200 and a.json() == b.json()
    for body in ({"model": "smol"}, {**RESPONSES, "previous_response_id": "resp_1"}):
        a, b = _both(ours, theirs, "/v1/responses", body)
        assert a.status == b.status == 400
        assert a.json()["error"].keys() == b.json()["error"].keys()
