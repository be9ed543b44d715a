"""Spawned backends end to end: ``Session(Options(model="python"))`` starts our server and
``backend="llama-server"`` the real binary, each in a child process on a free loopback
port; closing the session, or SIGKILLing the process that holds it, ends the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from llm_inproc import (
    BackendError,
    InvalidInputError,
    Message,
    Options,
    Reply,
    Role,
    Sampling,
    Session,
)
from llm_inproc.backends.inproc.sampler import grammar_for
from llm_inproc.config import DEFAULT_MODEL
from llm_inproc.models.embedded import GEMMA_BASE
from subproc import child_env

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

MSGS = [Message(Role.USER, "Name one colour.")]
SMALL = {"context_length": 1024, "threads": 1, "parallel": 1}


def _server_pids(port: int) -> list[int]:
    """Processes whose command line listens on ``port`` (the server, not its reaper)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        reaper = b"llm_inproc.backends._reaper" in args
        if (
            not reaper
            and b"--port" in args
            and args[args.index(b"--port") + 1 :][:1] == [str(port).encode()]
        ):
            found.append(int(entry.name))
    return found


def _gone(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _server_pids(port):
            return True
        time.sleep(0.1)
    return False


def _port(session: Session) -> int:
    return int(session._backend._http.url.rsplit(":", 1)[1])


def test_model_python_serves_the_default_model_in_our_server(
    cache_dir: Path, chat_model_path: Path
) -> None:
    with Session(Options(model="python", **SMALL), cache_dir=cache_dir) as s:
        assert (s.backend, s.model, s.encoding) == ("python", DEFAULT_MODEL, None)
        assert s.model_info.architecture == "llama" and s.model_info.n_ctx == 1024
        port = _port(s)
        assert _server_pids(port)
        r = s.complete(MSGS, max_tokens=6, temperature=0)
        assert r.text and r.generated.count == 6
        assert s.get_metrics().generated.count == 6
        # It embeds too, pooled as in-process (mean for a chat model): unit rows, and the
        # same pooling asked by name.
        assert s.model_pooling == "mean"
        rows = s.embed(["The sky is blue.", "Grass is green."])
        assert rows.shape[0] == 2 and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-4)
        same = s.embed(["The sky is blue."], pooling="mean")
        assert float(same[0] @ rows[0]) > 0.9999
        with pytest.raises(InvalidInputError, match="pools as it was started"):
            s.embed(["The sky is blue."], pooling="none")
        log = s._backend._child.log_path
        assert log.parent == cache_dir / "logs" and log.exists()
    assert _gone(port, within=10)
    assert not log.exists()  # a server that ran fine leaves no log behind


def test_backend_llama_server_runs_the_binary_with_the_raw_encoding(
    cache_dir: Path, model_path: Path, llama_server_binary: Path
) -> None:
    def inproc_reply() -> str:
        with Session(Options(model=GEMMA_BASE.ref, **SMALL), cache_dir=cache_dir) as inproc:
            return inproc.prompt(MSGS, max_tokens=8, temperature=0)

    opts = Options(backend="llama-server", model=GEMMA_BASE.ref, **SMALL)
    with ThreadPoolExecutor(1) as pool:
        # The in-process reply is worked out meanwhile, its engine alone in this process.
        alone = pool.submit(inproc_reply)
        with Session(opts, cache_dir=cache_dir) as s:
            assert s.backend == "llama-server" and s.encoding is not None
            assert s.model_path == model_path
            assert (s.model_info.architecture, s.model_info.n_ctx_train) == ("gemma3", 32768)
            port = _port(s)
            whole = s.prompt(MSGS, max_tokens=8, temperature=0)
            streamed = "".join(s.prompt_streaming(MSGS, max_tokens=8, temperature=0))
            assert streamed.strip() == whole
            with pytest.raises(InvalidInputError, match="llama-server does not embed"):
                s.embed(["x"])  # its --embedding would turn completions off
            assert alone.result() == whole
    assert _gone(port, within=10)


def test_seeded_draws_are_llama_servers_draws(
    cache_dir: Path, chat_model_path: Path, llama_server_binary: Path
) -> None:
    # Same model, KV layout (unified), seed and chain: the same tokens as llama-server, for
    # every path our sampler takes: greedy as an argmax, the prompt in the penalties'
    # history, penalties on a shortlist, the full vocabulary, and a grammar checked on the
    # drawn token and redrawn under the grammar when refused. (Gemma's sliding-window
    # layout meets llama-server's in test_remote's greedy replies.)
    person = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    grammar = grammar_for(Sampling(json_schema=person))
    strong = {"repeat_penalty": 1.3, "presence_penalty": 0.5, "frequency_penalty": 0.5}
    chains = [
        ("dragon", 0.0, Sampling(**strong)),  # type: ignore[arg-type]
        ("cat", 0.8, Sampling(**strong)),  # type: ignore[arg-type]
        ("ship", 0.8, Sampling(top_k=20, top_p=0.9, min_p=0.1, repeat_penalty=1.2)),
        ("robot", 1.0, Sampling(top_k=0, repeat_penalty=1.1, repeat_last_n=32)),
        ("baker", 0.8, Sampling(grammar=grammar)),
        ("pilot", 1.0, Sampling(grammar=grammar, top_k=0)),
    ]
    opts = {"model": DEFAULT_MODEL, **SMALL}  # its 49k-token vocabulary: quick draws

    def story(hero: str) -> list[Message]:
        return [Message(Role.USER, f"Tell me about a {hero} who likes tea.")]

    def draw(session: Session, hero: str, temperature: float, sampling: Sampling) -> Reply:
        return session.complete(
            story(hero), max_tokens=16, temperature=temperature, seed=7, sampling=sampling
        )

    def theirs() -> list[Reply]:
        with Session(Options(backend="llama-server", **opts), cache_dir=cache_dir) as server:
            return [draw(server, *chain) for chain in chains]

    with ThreadPoolExecutor(1) as pool:
        # llama-server starts and draws in its process while ours draws in this one, one
        # request at a time in each (one slot each): neither's tokens depend on the other's.
        asked = pool.submit(theirs)
        with Session(Options(**opts), cache_dir=cache_dir) as inproc:
            replies = {chain[0]: draw(inproc, *chain) for chain in chains}
            # As long as the penalised reply: only the penalties can tell the two apart.
            plain = inproc.complete(story("dragon"), max_tokens=16, temperature=0.0)
        for (hero, _, sampling), reply in zip(chains, asked.result(), strict=True):
            ours = replies[hero]
            assert ours.generated.count > 8, (hero, ours)
            assert ours.text == reply.text, (hero, sampling)
            if sampling.grammar and ours.finish_reason == "stop":
                assert isinstance(json.loads(ours.text)["age"], int)
            elif sampling.grammar:  # cut by max_tokens: still the grammar's JSON so far
                assert ours.text.startswith("{") and '"name"' in ours.text, ours.text
    assert plain.text != replies["dragon"].text  # the penalties did change the reply


def test_no_llama_server_binary_names_the_build_command(
    cache_dir: Path, model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match="llm-inproc build --target llama-server"):
        Session(Options(backend="llama-server", model=str(model_path)), cache_dir=tmp_path)


def test_a_server_that_cannot_start_fails_fast_with_its_log(
    cache_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    start = time.monotonic()
    with pytest.raises(BackendError, match="exited with status") as info:
        Session(Options(backend="python", model=str(bad), **SMALL), cache_dir=cache_dir)
    assert time.monotonic() - start < 60
    assert "broken.gguf" in str(info.value)  # the log's last lines say why


@pytest.mark.parametrize("backend", ["llama-server", "python"])
def test_a_sigkilled_parent_leaves_no_server_behind(
    backend: str, cache_dir: Path, model_path: Path, llama_server_binary: Path
) -> None:
    code = (
        "import sys, time\n"
        "from llm_inproc import Options, Session\n"
        f"s = Session(Options(backend={backend!r}, model={str(model_path)!r}, "
        "context_length=512, threads=1, parallel=1), cache_dir=sys.argv[1])\n"
        "print(s._backend._http.url, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(cache_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        assert _server_pids(port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _gone(port, within=10), f"{backend} outlived the process that started it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
