"""HTTP servers as real child processes for the server tests: ours (``python -m
llm_inproc.server``) and the real ``llama-server``, on free loopback ports, and a small
stdlib HTTP client (status, headers, JSON) that leaves nothing to mock."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subproc import child_env

__all__ = ["Answer", "Server", "free_port", "request", "start_ours", "started"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited ({server.proc.returncode}):\n{server.output()}")
        try:
            if request(server.port, "GET", "/health", timeout=5).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not healthy within {timeout} s:\n{server.output()}")


@contextmanager
def started(
    cmd: list[str], port: int, log: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> Iterator[Server]:
    """Run ``cmd`` until the block ends; yields once ``/health`` answers 200."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(env) if env is not None else child_env(),
        )
    server = Server(port, proc, log)
    try:
        _wait_healthy(server, timeout)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


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
