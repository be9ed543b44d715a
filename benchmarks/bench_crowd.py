"""The crowd: many users, each a conversation of several turns, far more users than slots.

Each user's first message carries a document of its own (~400 tokens) after a shared
~100-token system prompt; every later turn adds a short question. ``--concurrency``
users talk at once (each its turns in order) until all are done. The same script runs
against our server (``python -m llm_inproc.server``) and llama-server built from the same
llama.cpp sources, both with ``-np 4`` and their default ``--cache-ram``, and reports per
server: prompt tokens evaluated (from ``/metrics``), median and p95 time to first token,
generated tokens, and the wall time.

    python benchmarks/bench_crowd.py --users 40 --turns 4 --concurrency 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llm_inproc.backends.child import ChildServer, free_port
from llm_inproc.metrics import Metrics

SYSTEM = (
    "You are a careful assistant for a shipping company. You read the documents people "
    "send you and answer questions about them briefly and exactly. When a document does "
    "not say something, you say so instead of guessing. You never invent numbers, names, "
    "dates or places. You keep answers to one or two sentences, in plain English, and you "
    "address the person politely."
)
QUESTIONS = ("Who wrote it?", "What happened next?", "Summarise it in five words.")


def document(user: int) -> str:
    lines = [f"Log of vessel number {user}, kept by officer {user * 7 % 97}."]
    for day in range(1, 19):
        lines.append(
            f"Day {day}: wind {(user + day) % 9} knots, {(user * day) % 40} crates loaded at "
            f"port {(user + 3 * day) % 23}."
        )
    return " ".join(lines)


def chat(port: int, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, str]:
    """(seconds to the first streamed content, the reply's text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "x/json"})
    resp = conn.getresponse()
    first, parts = 0.0, []
    for raw in resp:
        if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
            continue
        for choice in json.loads(raw[6:]).get("choices", []):
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece:
                first = first or time.perf_counter() - t0
                parts.append(piece)
    conn.close()
    return first, "".join(parts)


def metrics(port: int) -> Metrics:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return Metrics.from_prometheus(text)


def run_crowd(port: int, users: int, turns: int, concurrency: int, tokens: int) -> dict[str, Any]:
    ttft: list[float] = []
    by_turn: dict[int, list[float]] = {}
    generated: list[int] = []
    lock = threading.Lock()

    def talk(user: int) -> None:
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": document(user) + "\n\nWhat is this document?"},
        ]
        for turn in range(turns):
            if turn:
                msgs.append({"role": "user", "content": QUESTIONS[(turn - 1) % len(QUESTIONS)]})
            first, text = chat(port, msgs, tokens)
            with lock:
                ttft.append(first)
                by_turn.setdefault(turn, []).append(first)
                generated.append(len(text))
            msgs.append({"role": "assistant", "content": text})

    before = metrics(port)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(talk, range(users)))
    wall = time.perf_counter() - t0
    after = metrics(port)
    ttft.sort()
    return {
        "prompt_tokens_evaluated": after.prompt.count - before.prompt.count,
        "generated_tokens": after.generated.count - before.generated.count,
        "median_ttft_s": round(statistics.median(ttft), 3),
        "p95_ttft_s": round(ttft[int(0.95 * (len(ttft) - 1))], 3),
        "wall_s": round(wall, 1),
        "requests": len(ttft),
        "median_ttft_s_by_turn": [
            round(statistics.median(t), 3) for _, t in sorted(by_turn.items())
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a .gguf path (default: embedded SmolLM2)")
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=24, help="max tokens per reply")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--peers", default="ours,llama-server")
    ap.add_argument("--ours-args", default="", help="extra flags for our server, one string")
    ap.add_argument("--src", type=Path, default=None, help="our src folder (default: installed)")
    ap.add_argument("--llama-server", default=None, help="the binary (default: the build cache)")
    args = ap.parse_args()

    from llm_inproc.build.servers import find_llama_server
    from llm_inproc.host.sysinfo import llama_system_info
    from llm_inproc.models.embedded import SMOLLM2_INSTRUCT, embedded_model_path
    from llm_inproc.paths import default_cache_dir

    cache = default_cache_dir()
    model = args.model or str(embedded_model_path(SMOLLM2_INSTRUCT, cache))
    common = ["-m", model, "-c", str(args.ctx), "-np", "4", "-t", str(args.threads)]
    from llm_inproc.backends.inproc.repack import resolve_repack

    repack = resolve_repack(None, Path(model), cache, llama_system_info())[0]
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    for peer in args.peers.split(","):
        port = free_port()
        if peer == "ours":
            cmd = [sys.executable, "-m", "llm_inproc.server", *common, "--port", str(port)]
            cmd += ["--metrics", *args.ours_args.split()]
        else:
            binary = args.llama_server or find_llama_server(cache)
            if binary is None:
                sys.exit("llama-server not built: llm-inproc build --target llama-server")
            cmd = [str(binary), *common, "--port", str(port), "--metrics", "-fa", "off"]
            cmd += ["--kv-unified", "--swa-full"]
        if not repack:
            cmd.append("--no-repack")
        server = ChildServer(peer, cmd, port, Path("/tmp"), env=env)
        try:
            server.wait_healthy(300)
            result = run_crowd(port, args.users, args.turns, args.concurrency, args.tokens)
        finally:
            server.close()
        print(json.dumps({"peer": peer, **vars_of(args), **result}), flush=True)


def vars_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: args.__dict__[k] for k in ("users", "turns", "concurrency", "tokens", "threads")}


if __name__ == "__main__":
    main()
