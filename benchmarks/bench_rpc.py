"""RPC on loopback: tokens/s and time to first token with the model local, on one
rpc-server, and split over two; each process's memory; bytes moved per generated token.

Needs llama.cpp built with GGML_RPC=ON (shared libraries and ggml-rpc-server in one
directory): ``LLAMA_CPP_LIB_PATH=<that dir> python benchmarks/bench_rpc.py MODEL.gguf``.
Traffic is read from the servers' sockets (``ss -ti``: bytes sent and received); the
per-token figure is the difference between a long and a short generation, so the prompt's
share cancels out.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from llm_inproc.backends.base import GenerationRequest, Outcome
from llm_inproc.backends.child import free_port
from llm_inproc.backends.inproc import InprocBackend
from llm_inproc.sampling import Sampling

PROMPT = "<start_of_turn>user\nWrite a story about a fox.<end_of_turn>\n<start_of_turn>model\n"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def _start(lib: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [str(lib / "ggml-rpc-server"), "-p", str(port), "-t", str(THREADS)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


def _rss_mib(pid: int | str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _traffic(endpoint: str) -> int:
    """Bytes the server's sockets sent plus received so far (``ss -ti``)."""
    port = endpoint.rsplit(":", 1)[1]
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = 0
    for key in ("bytes_sent:", "bytes_received:"):
        for part in out.split(key)[1:]:
            total += int(part.split()[0])
    return total


def _generate(backend: InprocBackend, n: int) -> Outcome:
    stream = backend.submit(
        GenerationRequest(
            Sampling(temperature=0.0, max_tokens=n, ignore_eos=True),
            prompt=PROMPT,
            cache_prompt=False,  # every run evaluates its prompt: a true time to first token
        )
    )
    while isinstance(item := stream.next_item(600), str):
        pass
    assert isinstance(item, Outcome)
    return item


def run(model: Path, servers: list[tuple[subprocess.Popen[bytes], str]]) -> dict[str, object]:
    kw: dict[str, object] = {}
    if servers:
        kw = {"rpc_servers": [e for _, e in servers], "gpu_layers": -1}
    backend = InprocBackend(model, context_length=1024, threads=THREADS, repack=False, **kw)  # type: ignore[arg-type]
    try:
        _generate(backend, 8)  # warm up
        pids = [p.pid for p, _ in servers]
        ends = [e for _, e in servers]
        before = [_traffic(e) for e in ends]
        short = _generate(backend, 16)
        middle = [_traffic(e) for e in ends]
        long = _generate(backend, 80)
        after = [_traffic(e) for e in ends]
        per_token = [
            ((a - m) - (m - b)) / (long.generated.count - short.generated.count)
            for b, m, a in zip(before, middle, after, strict=True)
        ]
        return {
            "servers": len(servers),
            "tokens_per_s": round(long.generated.rate(), 2),
            "ttft_ms": round(long.time_to_first_token.total_seconds() * 1000, 1),
            "client_rss_mib": round(_rss_mib("self"), 1),
            "server_rss_mib": [round(_rss_mib(p), 1) for p in pids],
            "bytes_per_token": [round(b) for b in per_token],
            "layers": {d.name: d.layers for d in backend.info.devices},
        }
    finally:
        backend.close()


def main() -> None:
    model = Path(sys.argv[1])
    lib = Path(os.environ["LLAMA_CPP_LIB_PATH"])
    if len(sys.argv) == 2:  # each setup in a fresh process, so its memory is its own
        for n in (0, 1, 2):
            subprocess.run([sys.executable, __file__, str(model), str(n)], check=True)
        return
    servers = [_start(lib) for _ in range(int(sys.argv[2]))]
    try:
        print(json.dumps(run(model, servers)), flush=True)
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
