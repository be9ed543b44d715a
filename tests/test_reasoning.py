"""A reply's thinking apart from its answer (``reasoning_content``): the markers found in a
chat template, the split of a whole reply and of a stream, and the server against
llama-server built from the same sources, each with a thinking template (Qwen3's, whose
reply opens ``<think>`` itself, and DeepSeek R1's, whose prompt opens it).

SmolLM2 does not think on its own, so the requests carry a grammar that makes it write a
thought, then an answer: the same text from both servers at temperature 0, which each
must split the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from llm_inproc.prompting.reasoning import (
    ReasoningSplitter,
    ThinkingMarkers,
    split_reasoning,
    thinking_markers,
)
from servers import (
    Server,
    env_without_key,
    free_port,
    launch,
    named_events,
    ours_cmd,
    request,
    sse_data,
)

pytestmark = pytest.mark.timeout(300)

TEMPLATES = Path(__file__).parent / "data" / "templates"
QWEN3 = TEMPLATES / "Qwen-Qwen3-0.6B.jinja"
R1 = TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
THINK = ThinkingMarkers("<think>", "</think>")


# -- the markers and the split (no model) --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "markers"),
    [
        ("Qwen-Qwen3-0.6B.jinja", THINK),  # rendered around a past turn's reasoning
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", THINK),  # drops it; named in source
        (
            "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
            ThinkingMarkers("<|START_THINKING|>", "<|END_THINKING|>"),
        ),
        ("SmolLM2-135M-Instruct.jinja", None),
        ("Qwen-Qwen2.5-7B-Instruct.jinja", None),
        ("meta-llama-Llama-3.3-70B-Instruct.jinja", None),
    ],
)
def test_markers_come_from_the_template(name: str, markers: ThinkingMarkers | None) -> None:
    assert thinking_markers((TEMPLATES / name).read_text()) == markers


def test_a_template_that_renders_reasoning_in_its_own_markers() -> None:
    source = (
        "{% for m in messages %}<|{{ m.role }}|>{% if m.reasoning_content %}[[plan]] "
        "{{ m.reasoning_content }} [[/plan]]{% endif %}{{ m.content }}{% endfor %}"
    )
    assert thinking_markers(source) == ThinkingMarkers("[[plan]]", "[[/plan]]")


@pytest.mark.parametrize(
    ("text", "opened", "split"),
    [
        ("<think>\nweigh it\n</think>\n\nThe answer.", False, ("weigh it\n", "The answer.")),
        ("  <think>a</think>b", False, ("a", "b")),
        ("weigh it\n</think>\n\nThe answer.", True, ("weigh it\n", "The answer.")),
        ("\n weigh it\n</think>\n\nThe answer.", True, ("weigh it\n", "The answer.")),
        ("The answer, no thinking.", False, ("", "The answer, no thinking.")),
        ("<think>cut by max_tokens", False, ("cut by max_tokens", "")),
        ("cut while thinking", True, ("cut while thinking", "")),
        ("<think></think>Plain.", False, ("", "Plain.")),
        (
            "An answer that mentions <think> later.",
            False,
            ("", "An answer that mentions <think> later."),
        ),
        ("", False, ("", "")),
    ],
)
def test_a_whole_reply_splits(text: str, opened: bool, split: tuple[str, str]) -> None:
    assert split_reasoning(text, THINK, opened=opened) == split


@pytest.mark.parametrize(
    "text",
    [
        "<think>\nweigh it\n</think>\n\nThe answer.",
        "<think>a < b, and </thin is not the end</think>  x",
        "<thin and more",
        "no thinking at all",
    ],
)
@pytest.mark.parametrize("size", [1, 2, 5])
def test_a_stream_splits_as_the_whole_reply_does(text: str, size: int) -> None:
    """Markers cut across pieces anywhere: the pieces add up to the whole reply's split."""
    for opened in (False, True):
        splitter = ReasoningSplitter(THINK, opened=opened)
        parts = [splitter.feed(text[i : i + size]) for i in range(0, len(text), size)]
        parts.append(splitter.flush())
        joined = ("".join(p[0] for p in parts), "".join(p[1] for p in parts))
        assert joined == split_reasoning(text, THINK, opened=opened)


# -- the server against llama-server --------------------------------------------------------

# A thought, then an answer; where the prompt opened the thinking (R1), the thought only.
# Bounded, so that the grammar ends the reply within a few tokens.
_THOUGHT = '[a-z]{1,12} "\\n</think>\\n\\n" [A-Z] [a-z]{1,12}'
GRAMMARS = {"qwen3": f'root ::= "<think>\\n" {_THOUGHT}', "r1": f"root ::= {_THOUGHT}"}
ASK = [{"role": "user", "content": "Is the sea salty?"}]


@pytest.fixture(scope="module")
def servers(
    chat_model_path: Path,
    llama_server_binary: Path,
    repack_flags: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[tuple[str, str], Server]]:
    """Ours and llama-server, each with Qwen3's and with R1's template, started at once."""
    where = tmp_path_factory.mktemp("reasoning")
    common = ("-c", "1024", "-np", "1", "-t", "1", "--jinja")
    with ExitStack() as stack:
        out: dict[tuple[str, str], Server] = {}
        for name, template in (("qwen3", QWEN3), ("r1", R1)):
            flags = (*common, "--chat-template-file", str(template))
            port = free_port()
            cmd = ours_cmd(chat_model_path, port, *flags)
            out["ours", name] = launch(cmd, port, where / f"ours-{name}.log", env_without_key())
            port = free_port()
            theirs = [str(llama_server_binary), "-m", str(chat_model_path), "--port", str(port)]
            cmd = [*theirs, "-fa", "off", *flags, *repack_flags]
            out["llama", name] = launch(cmd, port, where / f"llama-{name}.log")
        for server in out.values():
            stack.callback(server.close)
        for server in out.values():
            server.wait_healthy(120)
        yield out


def _ask(server: Server, template: str, **extra: Any) -> Any:
    body = {"messages": ASK, "grammar": GRAMMARS[template], "temperature": 0, "max_tokens": 32}
    answer = request(server.port, "POST", "/v1/chat/completions", {**body, **extra})
    assert answer.status == 200, answer.text
    return answer


def _streamed(server: Server, template: str, **extra: Any) -> tuple[str, str]:
    events = sse_data(_ask(server, template, stream=True, **extra).text)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    thought = "".join(d.get("reasoning_content") or "" for d in deltas)
    return thought, "".join(d.get("content") or "" for d in deltas)


@pytest.mark.model
@pytest.mark.parametrize("template", ["qwen3", "r1"])
def test_the_thinking_comes_apart_as_llama_servers_does(
    servers: dict[tuple[str, str], Server], template: str
) -> None:
    messages = {}
    for kind in ("ours", "llama"):
        messages[kind] = _ask(servers[kind, template], template).json()["choices"][0]["message"]
    ours, theirs = messages["ours"], messages["llama"]
    assert ours["reasoning_content"] and ours["content"] and "think>" not in ours["content"]
    # Where the prompt opened the thinking (R1), llama-server keeps the prompt's newline at
    # the thought's start and the blank lines before the answer; ours trims them there as
    # both do where the reply opens it (Qwen3).
    assert ours["reasoning_content"].strip() == theirs["reasoning_content"].strip()
    assert ours["content"] == theirs["content"].lstrip(), messages
    # Streamed: the reasoning in its own deltas, adding up to the whole reply's.
    thought, content = _streamed(servers["ours", template], template)
    assert (thought, content) == (ours["reasoning_content"], ours["content"])
    their_thought, their_content = _streamed(servers["llama", template], template)
    assert (thought.strip(), content) == (their_thought.strip(), their_content.lstrip())


@pytest.mark.model
@pytest.mark.parametrize("template", ["qwen3", "r1"])
def test_reasoning_format_none_leaves_the_whole_thinking_in_the_content(
    servers: dict[tuple[str, str], Server], template: str
) -> None:
    """As written, with the ``<think>`` a prompt opened put back, as llama-server does."""
    whole = {
        kind: _ask(servers[kind, template], template, reasoning_format="none").json()
        for kind in ("ours", "llama")
    }
    ours, theirs = (whole[k]["choices"][0]["message"] for k in ("ours", "llama"))
    assert ours["content"].startswith("<think>\n") and "</think>" in ours["content"]
    assert ours["content"] == theirs["content"]
    assert not ours.get("reasoning_content") and not theirs.get("reasoning_content")
    thought, content = _streamed(servers["ours", template], template, reasoning_format="none")
    assert (thought, content) == ("", ours["content"])


@pytest.mark.model
def test_an_unknown_reasoning_format_is_refused(servers: dict[tuple[str, str], Server]) -> None:
    answer = request(
        servers["ours", "qwen3"].port,
        "POST",
        "/v1/chat/completions",
        {"messages": ASK, "reasoning_format": "telepathy", "max_tokens": 1},
    )
    assert answer.status == 400 and "reasoning_format" in answer.text


@pytest.mark.model
def test_anthropic_messages_carry_a_thinking_block_as_llama_servers_do(
    servers: dict[tuple[str, str], Server],
) -> None:
    """R1's prompt opens the thinking and SmolLM2 never closes it: the whole reply is a
    ``thinking`` block, first, closed with an empty signature (a local model signs none)."""
    import anthropic

    body = {"messages": ASK, "max_tokens": 12, "temperature": 0}
    whole, streamed = {}, {}
    for kind in ("ours", "llama"):
        port = servers[kind, "r1"].port
        answer = request(port, "POST", "/v1/messages", body)
        assert answer.status == 200, answer.text
        whole[kind] = answer.json()["content"]
        events = named_events(request(port, "POST", "/v1/messages", {**body, "stream": True}).text)
        # The same sequence of events, however many deltas the text comes in.
        seen = [(name, data.get("index"), _kind(data)) for name, data in events]
        streamed[kind] = [e for i, e in enumerate(seen) if i == 0 or seen[i - 1] != e]
    assert [b["type"] for b in whole["ours"]] == [b["type"] for b in whole["llama"]] == ["thinking"]
    ours, theirs = whole["ours"][0], whole["llama"][0]
    assert ours["thinking"].strip() == theirs["thinking"].strip() and ours["signature"] == ""
    assert streamed["ours"] == streamed["llama"], streamed
    # The official client reads it as a thinking block.
    client = anthropic.Anthropic(base_url=servers["ours", "r1"].url, api_key="none")
    message = client.messages.create(
        model="any", max_tokens=12, messages=ASK, extra_body={"temperature": 0}
    )
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == ours["thinking"]


def _kind(data: dict[str, Any]) -> str | None:
    """What an event carries: its block's type or its delta's."""
    block = data.get("content_block") or data.get("delta") or {}
    return block.get("type")


@pytest.mark.model
@pytest.mark.parametrize("template", ["qwen3", "r1"])
def test_enable_thinking_false_renders_and_answers_as_llama_servers_does(
    servers: dict[tuple[str, str], Server], template: str
) -> None:
    """``chat_template_kwargs``: the prompt closes the thinking (or never opens it), so the
    reply is all answer."""
    off = {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}}
    prompts = {
        kind: request(servers[kind, template].port, "POST", "/apply-template", off).json()
        for kind in ("ours", "llama")
    }
    assert prompts["ours"] == prompts["llama"]
    assert prompts["ours"]["prompt"].rstrip().endswith("</think>")
    body = {**off, "temperature": 0, "max_tokens": 8}
    replies = {
        kind: request(servers[kind, template].port, "POST", "/v1/chat/completions", body).json()
        for kind in ("ours", "llama")
    }
    ours, theirs = (replies[k]["choices"][0]["message"] for k in ("ours", "llama"))
    assert not ours.get("reasoning_content") and ours["content"] == theirs["content"]
    bad = {**off, "chat_template_kwargs": ["enable_thinking"]}
    answer = request(servers["ours", template].port, "POST", "/v1/chat/completions", bad)
    assert answer.status == 400 and "chat_template_kwargs" in answer.text


def test_template_kwargs_and_reasoning_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from llm_inproc import InvalidInputError
    from llm_inproc.server.flags import add_server_flags, settings_from_args

    def parse(*argv: str) -> Any:
        p = argparse.ArgumentParser()
        add_server_flags(p)
        return settings_from_args(p.parse_args(list(argv)))

    assert parse().options.chat_template_kwargs == {}
    assert parse("--reasoning", "off").options.chat_template_kwargs == {"enable_thinking": False}
    kw = parse("--chat-template-kwargs", '{"enable_thinking": true, "x": 1}', "-rea", "off")
    assert kw.options.chat_template_kwargs == {"enable_thinking": False, "x": 1}
    with pytest.raises(InvalidInputError, match=r"--chat-template-kwargs: not JSON"):
        parse("--chat-template-kwargs", "enable_thinking=false")
    with pytest.raises(InvalidInputError, match=r"must be a JSON object"):
        parse("--chat-template-kwargs", "[1]")
    assert parse("--reasoning-budget", "0").options.chat_template_kwargs == {
        "enable_thinking": False
    }
    assert parse("--reasoning-budget", "-1").options.chat_template_kwargs == {}
    with pytest.raises(InvalidInputError, match=r"--reasoning-budget 512: a thinking budget"):
        parse("--reasoning-budget", "512")
    monkeypatch.setenv("LLAMA_ARG_CHAT_TEMPLATE_KWARGS", '{"y": 2}')
    assert parse().options.chat_template_kwargs == {"y": 2}


@pytest.mark.model
def test_the_responses_api_gives_a_reasoning_item_as_llama_servers_does(
    servers: dict[tuple[str, str], Server],
) -> None:
    """A reasoning item before the message, whole and streamed; read by the openai client."""
    from openai import OpenAI

    body = {"input": "Is the sea salty?", "grammar": GRAMMARS["qwen3"], "temperature": 0}
    whole, streamed = {}, {}
    for kind in ("ours", "llama"):
        port = servers[kind, "qwen3"].port
        answer = request(port, "POST", "/v1/responses", {**body, "max_output_tokens": 32})
        assert answer.status == 200, answer.text
        whole[kind] = answer.json()["output"]
        text = request(port, "POST", "/v1/responses", {**body, "stream": True}).text
        seen = [(name, (data.get("item") or {}).get("type")) for name, data in named_events(text)]
        streamed[kind] = [e for i, e in enumerate(seen) if i == 0 or seen[i - 1] != e]
    types = [[item["type"] for item in whole[k]] for k in ("ours", "llama")]
    assert types == [["reasoning", "message"]] * 2, whole
    ours, theirs = whole["ours"], whole["llama"]
    assert ours[0]["content"][0]["text"].strip() == theirs[0]["content"][0]["text"].strip()
    assert ours[1]["content"][0]["text"] == theirs[1]["content"][0]["text"]
    assert streamed["ours"] == streamed["llama"], streamed
    client = OpenAI(base_url=servers["ours", "qwen3"].url + "/v1", api_key="none")
    response = client.responses.create(
        model="any", input="Is the sea salty?", extra_body={"grammar": GRAMMARS["qwen3"]}
    )
    assert response.output[0].type == "reasoning" and response.output_text


@pytest.mark.model
def test_a_remote_session_gets_the_reply_as_written(
    servers: dict[tuple[str, str], Server],
) -> None:
    """A Session's text is the reply as the model wrote it, thinking and all, on every
    backend: remote ones ask the server not to split it (``reasoning_format: none``)."""
    from llm_inproc import Message, Options, Role, Session
    from llm_inproc.sampling import Sampling

    ask = [Message(Role.USER, "Is the sea salty?")]
    sampling = Sampling(grammar=GRAMMARS["qwen3"], max_tokens=32)
    texts = {}
    for kind in ("ours", "llama"):
        with Session(Options(remote=f"127.0.0.1:{servers[kind, 'qwen3'].port}")) as remote:
            texts[kind] = remote.prompt(ask, sampling=sampling, temperature=0)
    assert texts["ours"].startswith("<think>\n") and "\n</think>\n\n" in texts["ours"]
    assert texts["ours"] == texts["llama"]


def test_chat_template_kwargs_are_an_option(chat_model_path: Path, tmp_path: Path) -> None:
    """``Options.chat_template_kwargs`` (YAML, ``--chat-template-kwargs``) reach every
    rendering; a request's own add to them."""
    from llm_inproc import InvalidInputError, Message, Options, Role, Session
    from llm_inproc.sampling import Sampling

    opts = Options.from_dict({"chat_template_kwargs": {"enable_thinking": False}})
    assert Options.from_dict(opts.to_dict()) == opts
    with pytest.raises(InvalidInputError, match=r"llm\.chat_template_kwargs: expected"):
        Options.from_dict({"chat_template_kwargs": ["enable_thinking"]})
    with pytest.raises(InvalidInputError, match=r"reasoning_format: 'auto' is not one of none"):
        Options(reasoning_format="auto").validate()
    r1 = R1.read_text()
    ask = [Message(Role.USER, "Is the sea salty?")]
    kwargs = opts.chat_template_kwargs
    local = Options(model=str(chat_model_path), context_length=512, chat_template_kwargs=kwargs)
    with Session(local) as s:
        closed = s.render(s.chat_request(ask, Sampling(), template=r1))
        on = {"enable_thinking": True}
        opened = s.render(s.chat_request(ask, Sampling(), template=r1, template_kwargs=on))
    assert closed.endswith("<think>\n</think>") and opened.endswith("<think>\n")
    from subproc import child_env, run_cli

    flag = ("--chat-template-kwargs", '{"enable_thinking": 1}', "--max-tokens", "1")
    env = child_env(LLM_INPROC_CACHE=str(tmp_path), HF_HUB_OFFLINE="1")
    assert run_cli("prompt", *flag, "hi", env=env).returncode == 0
    bad = run_cli("prompt", "--chat-template-kwargs", "[1]", "hi", env=env)
    assert bad.returncode == 2 and "--chat-template-kwargs" in bad.stderr


@pytest.fixture(scope="module")
def qwen3_model(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 with Qwen3's chat template in its GGUF."""
    from gguf_tools import copy_with_metadata

    dst = tmp_path_factory.mktemp("qwen3") / "smol-qwen3.gguf"
    return copy_with_metadata(chat_model_path, dst, {"tokenizer.chat_template": QWEN3.read_text()})


@pytest.mark.model
def test_a_session_splits_the_thinking_when_asked(
    qwen3_model: Path, servers: dict[tuple[str, str], Server]
) -> None:
    """``Options.reasoning_format="deepseek"``: the text is the answer, ``reasoning`` the
    thinking, the stream the answer only; by default the text is as written. Through a
    remote server as in this process."""
    from llm_inproc import Message, Options, Role, Session
    from llm_inproc.sampling import Sampling

    ask = [Message(Role.USER, "Is the sea salty?")]
    sampling = Sampling(grammar=GRAMMARS["qwen3"], max_tokens=32)
    common = {"model": str(qwen3_model), "context_length": 1024}
    with Session(Options(**common)) as plain:  # type: ignore[arg-type]
        written = plain.complete(ask, sampling=sampling, temperature=0)
    with Session(Options(**common, reasoning_format="deepseek")) as s:  # type: ignore[arg-type]
        reply = s.complete(ask, sampling=sampling, temperature=0)
        with s.prompt_streaming(ask, sampling=sampling, temperature=0) as stream:
            shown = "".join(stream)
    assert written.reasoning is None and written.text.startswith("<think>\n")
    assert reply.reasoning and "<think>" not in reply.text + reply.reasoning
    assert written.text == f"<think>\n{reply.reasoning}\n</think>\n\n{reply.text}"
    assert shown.strip() == reply.text and stream.reply is not None
    assert stream.reply.reasoning == reply.reasoning
    server = servers["ours", "qwen3"]
    with Session(Options(remote=f"127.0.0.1:{server.port}", reasoning_format="deepseek")) as r:
        remote = r.complete(ask, sampling=sampling, temperature=0)
    assert remote.reasoning and remote.text and "think>" not in remote.text
