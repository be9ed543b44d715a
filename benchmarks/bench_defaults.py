"""A lone request on a default session against llama-server started with its defaults.

Ours: ``Session(Options(model=...))`` in this process (4 slots, prompt cache on). Theirs:
``llama-server -m MODEL`` with only the thread count and context given (plus ``--no-repack``
where this CPU needs it). The same raw prompt, 128 greedy tokens; generation tok/s from our
``Reply`` and from llama-server's ``timings``; rounds interleaved.

    python benchmarks/bench_defaults.py --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
from pathlib import Path

from llm_inproc import Options, Sampling, Session
from llm_inproc.backends.base import GenerationRequest
from llm_inproc.backends.child import ChildServer, free_port

PROMPT = (
    "<start_of_turn>user\nWrite a long story about a lighthouse.<end_of_turn>\n"
    "<start_of_turn>model\n"
)


def theirs(port: int, tokens: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "ignore_eos": True}
    conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "x/json"})
    out = json.loads(conn.getresponse().read())
    conn.close()
    return float(out["timings"]["predicted_per_second"])


def ours(session: Session, tokens: int) -> float:
    req = GenerationRequest(
        Sampling(temperature=0, max_tokens=tokens, ignore_eos=True), prompt=PROMPT
    )
    with session.generate(req) as stream:
        for _ in stream:
            pass
    assert stream.reply is not None
    return stream.reply.generated.rate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-server", default=None)
    args = ap.parse_args()

    from llm_inproc.backends.inproc.repack import resolve_repack
    from llm_inproc.build.servers import find_llama_server
    from llm_inproc.host.sysinfo import llama_system_info
    from llm_inproc.models.embedded import GEMMA_BASE, embedded_model_path
    from llm_inproc.paths import default_cache_dir

    cache = default_cache_dir()
    model = str(embedded_model_path(GEMMA_BASE, cache))
    repack = resolve_repack(None, Path(model), cache, llama_system_info())[0]
    binary = args.llama_server or find_llama_server(cache)
    if binary is None:
        sys.exit("llama-server not built: llm-inproc build --target llama-server")
    port = free_port()
    cmd = [str(binary), "-m", model, "-t", str(args.threads), "-c", "8192", "--port", str(port)]
    server = ChildServer(
        "llama-server", cmd + ([] if repack else ["--no-repack"]), port, Path("/tmp")
    )
    rates: dict[str, list[float]] = {"ours (default Session)": [], "llama-server (defaults)": []}
    try:
        server.wait_healthy(300)
        with Session(Options(model=model, threads=args.threads, context_length=8192)) as s:
            ours(s, 8)
            theirs(port, 8)  # warm-up both
            for _ in range(args.rounds):
                rates["ours (default Session)"].append(ours(s, args.tokens))
                rates["llama-server (defaults)"].append(theirs(port, args.tokens))
                print(json.dumps({k: round(v[-1], 1) for k, v in rates.items()}), flush=True)
    finally:
        server.close()
    a, b = (statistics.median(v) for v in rates.values())
    print(f"ours {a:.1f} tok/s, llama-server {b:.1f} tok/s: {a / b:.3f}x")


if __name__ == "__main__":
    main()
