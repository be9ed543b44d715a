"""Time to first token of a short request on our server while another client sends a long
prompt: what the server's event loop costs the other streams.

Starts ``python -m llm_inproc.server`` (from ``--src``, so two checkouts compare in one
run) with two slots, then per round: a short /completion alone; and the same short
request sent just after a ~4,000-token /completion from another client. Prints the
median and worst time to first token of each, as JSON lines and a summary.

    python benchmarks/bench_server_ttft.py --src src --rounds 5
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
from pathlib import Path
from typing import Any

from llm_inproc.backends.child import ChildServer, free_port

LONG = " ".join(
    f"Entry {i}: the keeper logged a ship, the wind, and the colour of the sea at dawn."
    for i in range(220)
)
SHORT = "The capital of France is"


def _post(port: int, body: dict[str, Any]) -> float:
    """Seconds to the first streamed token."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request(
        "POST", "/completion", json.dumps({**body, "stream": True}), {"Content-Type": "x/json"}
    )
    resp = conn.getresponse()
    first = 0.0
    for raw in resp:
        if raw.startswith(b"data: ") and json.loads(raw[6:]).get("content"):
            first = first or time.perf_counter() - t0
    conn.close()
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=Path("src"), help="the checkout's src folder")
    ap.add_argument("--model", default=None, help="a .gguf path (default: the embedded Gemma)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = args.model
    if model is None:
        from llm_inproc.models.embedded import GEMMA_BASE, embedded_model_path
        from llm_inproc.paths import default_cache_dir

        model = str(embedded_model_path(GEMMA_BASE, default_cache_dir()))
    port = free_port()
    cmd = [sys.executable, "-m", "llm_inproc.server", "-m", model, "-c", "8192", "-np", "2"]
    cmd += ["-t", str(args.threads), "--port", str(port)]
    env = {"PYTHONPATH": str(args.src.resolve()) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = ChildServer("ttft", cmd, port, Path("/tmp"), env=env)
    server.wait_healthy(300)
    short = {"prompt": SHORT, "n_predict": 2, "temperature": 0, "cache_prompt": False}
    long = {"prompt": LONG, "n_predict": 1, "temperature": 0, "cache_prompt": False}
    alone: list[float] = []
    beside: list[float] = []
    try:
        _post(port, short)  # warm-up
        for _ in range(args.rounds):
            alone.append(_post(port, short))
            # A new document each round: a cached prefix would hide the prompt's cost.
            fresh = {**long, "prompt": f"Logbook {len(beside)}. " + LONG}
            t = threading.Thread(target=_post, args=(port, fresh))
            t.start()
            time.sleep(0.02)  # the long prompt's request is in first
            beside.append(_post(port, short))
            t.join()
    finally:
        server.close()
    for name, xs in (("alone", alone), ("beside a 4k-token prompt", beside)):
        print(
            json.dumps(
                {
                    "src": str(args.src),
                    "case": name,
                    "median_ttft_s": round(statistics.median(xs), 4),
                    "max_ttft_s": round(max(xs), 4),
                    "each_s": [round(x, 3) for x in xs],
                    "rounds": len(xs),
                }
            )
        )


if __name__ == "__main__":
    main()
