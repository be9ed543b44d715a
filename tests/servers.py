"""HTTP servers as real child processes for the server tests: ours (``python -m
llm_inproc.server``) and the real ``llama-server``, on free loopback ports, and a small
stdlib HTTP client (status, headers, JSON) that leaves nothing to mock."""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_inproc.backends.child import ChildServer, free_port
from subproc import child_env

__all__ = [
    "Answer",
    "Server",
    "both",
    "free_port",
    "launch",
    "named_events",
    "request",
    "sse_data",
    "start_llama_server",
    "start_ours",
    "started",
]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, text)
    finally:
        conn.close()


def both(
    ours: ChildServer, theirs: ChildServer, method: str, path: str, **kw: Any
) -> tuple[Answer, Answer]:
    """The same request to our server and to llama-server, at once: two processes, each
    answering it alone."""
    with ThreadPoolExecutor(1) as pool:
        real = pool.submit(request, theirs.port, method, path, **kw)
        return request(ours.port, method, path, **kw), real.result()


def sse_data(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a ``data:`` event stream (``[DONE]`` left out)."""
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of an ``event:``/``data:`` stream (Anthropic's, Responses')."""
    out = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        out.append((name[7:], json.loads(data[6:])))
    return out


Server = ChildServer
"""A running server: ``port``, ``url``, ``output()``, ``kill()`` (the project's one way to
start a server and wait for it, :class:`llm_inproc.backends.child.ChildServer`)."""


def launch(cmd: list[str], port: int, log: Path, env: Mapping[str, str] | None = None) -> Server:
    """Start ``cmd`` (output in ``log``) without waiting for it. Started from the calling
    thread and unreaped: the server dies with that thread, so start it from the main one."""
    return ChildServer(
        "server",
        cmd,
        port,
        log.parent,
        env=dict(env) if env is not None else child_env(),
        inherit_env=False,
        reaped=False,
        log_path=log,
    )


@contextmanager
def started(
    cmd: list[str], port: int, log: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> Iterator[Server]:
    """Run ``cmd`` until the block ends; yields once ``/health`` answers 200."""
    server = launch(cmd, port, log, env)
    try:
        server.wait_healthy(timeout)
        yield server
    finally:
        server.close()


def ours_cmd(model: Path, port: int, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llm_inproc.server",
        "-m",
        str(model),
        "--port",
        str(port),
        "-t",
        "1",
        *flags,
    ]


@contextmanager
def start_llama_server(
    binary: Path, model: Path, log: Path, *flags: str, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """The real llama-server on a free port (``-fa off`` unless ``flags`` say otherwise:
    our engine evaluates without flash attention, so greedy replies then agree)."""
    port = free_port()
    fa = [] if "-fa" in flags else ["-fa", "off"]
    cmd = [str(binary), "-m", str(model), "--port", str(port), *fa, *flags]
    with started(cmd, port, log, env=env) as server:
        yield server


@contextmanager
def start_ours(
    model: Path, log: Path, *flags: str, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    port = free_port()
    with started(ours_cmd(model, port, *flags), port, log, env=env) as server:
        yield server


def env_without_key(**extra: str) -> dict[str, str]:
    env = child_env(**extra)
    if "LLM_INPROC_API_KEY" not in extra:
        env.pop("LLM_INPROC_API_KEY", None)
    return env


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
