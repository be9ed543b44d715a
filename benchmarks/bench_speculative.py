"""Speculative decoding without a draft model, on our server and on llama-server.

Per server (``python -m llm_inproc.server`` and llama-server built from the same llama.cpp
sources, one slot each, flash attention off), with and without ``--spec-type
ngram-simple`` (same n-gram sizes): a rewrite task (fix the typos in a ~300-token text: the
reply mostly copies its prompt) and a free-form one, greedy, through ``/completion`` with
the model's raw encoding. Prints the generation rate from the response's ``timings``, and
the drafted and accepted tokens. The four servers run side by side and take the requests in
turn, round by round.

    python benchmarks/bench_speculative.py --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from llm_inproc.backends.child import ChildServer, free_port

TEXT = (
    "The lighthouse keeper walked up teh stairs every evening at six. He lit the lamp, "
    "cleaned the glas, and wrote the weather in his log. Ships passed in the nigth, and "
    "their captains knew the light by its rhythm: three short flashes and one long. In "
    "winter the storms came from the north, and the waves broke over the rocks below the "
    "tower. In summer the sea was calm, and childen came from the village to watch the "
    "boats. The keeper told them storys about the wrecks he had seen, the rescues he had "
    "made, and the one night when the lamp went out and he lit it again by hand. He was "
    "proud of the light, and the light was the last thing the sailors saw when they left "
    "the harbour and the first thing they looked for when they came home."
)
TASKS = {
    "rewrite": f"Fix the typos in this text and write it out again in full:\n\n{TEXT}",
    "free-form": "Write a story about a dragon who opens a bakery in a small town.",
}


def gemma_prompt(user: str) -> str:
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


def complete(port: int, prompt: str, tokens: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    body = {"prompt": prompt, "n_predict": tokens, "temperature": 0, "cache_prompt": False}
    conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "x/json"})
    out: dict[str, Any] = json.loads(conn.getresponse().read())
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size-n", type=int, default=12)
    ap.add_argument("--size-m", type=int, default=16)
    ap.add_argument("--llama-server", default=None, help="the binary (default: the build cache)")
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
    spec = ["--spec-type", "ngram-simple"]
    spec += ["--spec-ngram-simple-size-n", str(args.size_n)]
    spec += ["--spec-ngram-simple-size-m", str(args.size_m)]
    common = ["-m", model, "-c", "4096", "-np", "1", "-t", str(args.threads), "-fa", "off"]
    common += [] if repack else ["--no-repack"]
    peers = {
        "ours": [sys.executable, "-m", "llm_inproc.server", *common],
        "llama-server": [str(binary), *common],
    }
    rates: dict[tuple[str, str, str], list[float]] = {}
    servers: dict[tuple[str, str], tuple[ChildServer, int]] = {}
    try:
        # All four up at once, requests interleaved round by round: a machine that slows
        # down during the run slows every contender alike.
        for peer, cmd in peers.items():
            for mode, extra in (("plain", []), ("ngram-simple", spec)):
                port = free_port()
                argv = [*cmd, *extra, "--port", str(port)]
                servers[peer, mode] = ChildServer(peer, argv, port, Path("/tmp")), port
        for server, port in servers.values():
            server.wait_healthy(300)
            complete(port, gemma_prompt("Hi"), 4)  # warm-up
        for _ in range(args.rounds):
            for task, text in TASKS.items():
                for (peer, mode), (_, port) in servers.items():
                    t = complete(port, gemma_prompt(text), args.tokens)["timings"]
                    rates.setdefault((peer, mode, task), []).append(t["predicted_per_second"])
                    print(
                        json.dumps(
                            {"peer": peer, "mode": mode, "task": task,
                             "tok_s": round(t["predicted_per_second"], 1),
                             "predicted_n": t["predicted_n"],
                             "draft_n": t.get("draft_n", 0),
                             "draft_n_accepted": t.get("draft_n_accepted", 0)}
                        ),
                        flush=True,
                    )  # fmt: skip
    finally:
        for server, _ in servers.values():
            server.close()
    print("\n| peer | task | plain tok/s | ngram-simple tok/s | speed-up |")
    print("|---|---|---|---|---|")
    for peer in peers:
        for task in TASKS:
            a = statistics.median(rates[peer, "plain", task])
            b = statistics.median(rates[peer, "ngram-simple", task])
            print(f"| {peer} | {task} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
    for task in TASKS:
        ours = statistics.median(rates["ours", "ngram-simple", task])
        theirs = statistics.median(rates["llama-server", "ngram-simple", task])
        print(f"{task}: ngram-simple, ours / llama-server = {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
