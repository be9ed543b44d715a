"""Embeddings per second: Session.embed in-process against llama-server over HTTP (one
request with every input, and 4 clients at once) and against llama-cpp-python's
``create_embedding``, on the same model, mean pooling, the same thread count; and the
peak RSS of a process embedding many short texts streamed from a generator.

    python benchmarks/bench_embed.py --model smol --short 1000 --long 100
    python benchmarks/bench_embed.py --rss 100000

Short texts are 10-60 tokens, long ones ~500. Prints JSON lines and a table. Run the
contenders in one run: the machine may be shared and its speed moves between runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

WORDS = [
    "river",
    "valley",
    "keeper",
    "ship",
    "wind",
    "colour",
    "sea",
    "dawn",
    "market",
    "bread",
    "city",
    "lamp",
    "road",
    "stone",
    "winter",
    "garden",
    "letter",
    "music",
    "engine",
    "forest",
    "night",
    "window",
    "bridge",
    "harbour",
    "station",
    "mountain",
    "cloud",
]


def texts(n: int, lo: int, hi: int, seed: int) -> list[str]:
    """``n`` texts of about ``lo``-``hi`` tokens (a word is about one token here)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def model_path(name: str) -> str:
    from llm_inproc.models.embedded import GEMMA_BASE, SMOLLM2_INSTRUCT, embedded_model_path
    from llm_inproc.paths import default_cache_dir

    if name in ("smol", "gemma"):
        which = SMOLLM2_INSTRUCT if name == "smol" else GEMMA_BASE
        return str(embedded_model_path(which, default_cache_dir()))
    return name


def ours(path: str, inputs: list[str], threads: int) -> float:
    from llm_inproc import Options, Session

    with Session(Options(model=path, context_length=4096, threads=threads)) as s:
        s.embed(inputs[:4], pooling="mean")  # the context is made on first use
        t = time.perf_counter()
        v = s.embed(inputs, pooling="mean")
        dt = time.perf_counter() - t
    assert v.shape[0] == len(inputs)
    return len(inputs) / dt


def peer(path: str, inputs: list[str], threads: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(
        path,
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=4096,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    llm.create_embedding(inputs[:4])
    t = time.perf_counter()
    out = llm.create_embedding(inputs)
    dt = time.perf_counter() - t
    assert len(out["data"]) == len(inputs)
    llm.close()
    return len(inputs) / dt


def _post(port: int, inputs: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    body = json.dumps({"input": inputs, "encoding_format": "base64"})
    conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, data[:300]
    conn.close()


def server(path: str, inputs: list[str], threads: int, clients: int) -> float:
    from llm_inproc.backends.child import ChildServer, free_port
    from llm_inproc.build.servers import build_llama_server
    from llm_inproc.paths import default_cache_dir

    binary = build_llama_server(default_cache_dir(), "cpu").llama_server
    port = free_port()
    cmd = [str(binary), "-m", path, "--port", str(port), "--embedding", "--pooling", "mean"]
    cmd += ["-c", "4096", "-np", "4", "-t", str(threads), "-fa", "off"]
    srv = ChildServer("llama-server", cmd, port, Path("/tmp"))
    try:
        srv.wait_healthy(300)
        _post(port, inputs[:4])
        parts = [inputs[i::clients] for i in range(clients)]
        workers = [threading.Thread(target=_post, args=(port, p)) for p in parts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return len(inputs) / (time.perf_counter() - t)
    finally:
        srv.close()


def rss(path: str, n: int, threads: int) -> dict[str, Any]:
    """Peak RSS of a fresh process embedding ``n`` short texts from a generator."""
    code = f"""
import resource, time
from llm_inproc import Options, Session
from benchmarks_embed_texts import gen
with Session(Options(model={path!r}, context_length=4096, threads={threads})) as s:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    v = s.embed(gen({n}), pooling="mean")
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak, v.shape[0], dt, v.nbytes)
"""
    helper = Path("/tmp/benchmarks_embed_texts.py")
    helper.write_text(
        "import random\n"
        f"WORDS = {WORDS!r}\n"
        "def gen(n):\n"
        "    rng = random.Random(3)\n"
        "    for _ in range(n):\n"
        "        yield ' '.join(rng.choice(WORDS) for _ in range(rng.randint(10, 60)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/tmp"
    ).stdout.split()
    base, peak, rows, dt, nbytes = int(out[0]), int(out[1]), int(out[2]), float(out[3]), int(out[4])
    return {
        "texts": rows,
        "seconds": round(dt, 1),
        "rss_after_load_mib": round(base / 1024),
        "peak_rss_mib": round(peak / 1024),
        "result_mib": round(nbytes / 2**20),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smol", help="smol, gemma, or a .gguf path")
    ap.add_argument("--short", type=int, default=1000, help="short texts (10-60 tokens)")
    ap.add_argument("--long", type=int, default=100, help="long texts (~500 tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss", type=int, default=0, help="also: peak RSS for this many texts")
    ap.add_argument("--skip", default="", help="comma-separated contenders to leave out")
    args = ap.parse_args()
    path = model_path(args.model)
    skip = set(args.skip.split(","))
    sets = {"short": texts(args.short, 10, 60, 1), "long": texts(args.long, 480, 500, 2)}
    rows = []
    for kind, inputs in sets.items():
        if not inputs:
            continue
        contenders = {
            "llm_inproc": lambda i=inputs: ours(path, i, args.threads),
            "llama-server 1 request": lambda i=inputs: server(path, i, args.threads, 1),
            "llama-server 4 clients": lambda i=inputs: server(path, i, args.threads, 4),
            "llama-cpp-python": lambda i=inputs: peer(path, i, args.threads),
        }
        for name, fn in contenders.items():
            if name in skip:
                continue
            rate = fn()
            row = {"model": args.model, "texts": f"{len(inputs)} {kind}", "who": name}
            row["per_second"] = round(rate, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for row in rows:
        print(f"{row['texts']:>12}  {row['who']:<24} {row['per_second']:>9.2f}/s")
    if args.rss:
        print(json.dumps({"model": args.model, **rss(path, args.rss, args.threads)}))


if __name__ == "__main__":
    main()
