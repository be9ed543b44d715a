"""What a tool call costs: a ``tool_choice="required"`` call against plain generation, ours
in-process against ``llama-server --jinja`` (same llama.cpp sources, same model).

The embedded SmolLM2-135M-Instruct with the Qwen 2.5 chat template on both sides (a GGUF
copy for ours, ``--chat-template-file`` for llama-server, which has no generic format for
SmolLM2's own template), one earlier call in the history, one weather tool, greedy. For
each side: generation tok/s of the call (against plain generation of as many tokens: the
grammar's cost) and the time to the complete call. llama-server's ``required`` lets text
come before the call; where it writes no call in 64 tokens its row reads nan.

    python benchmarks/bench_tools.py --rounds 3 --llama-server PATH
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from llm_inproc import Message, Options, Role, Sampling, Session, Tool, ToolCall
from llm_inproc.backends.child import ChildServer, free_port

WEATHER = Tool(
    "get_weather",
    "The current weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city's name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
)
ASK = "What is the weather like in Paris today, in celsius?"
EARLIER = ToolCall("call_0", "get_weather", {"city": "Rome", "unit": "celsius"})
HISTORY = [
    Message(Role.USER, "What is the weather like in Rome, in celsius?"),
    Message(Role.TOOL_CALL, "", tool_calls=[EARLIER]),
    Message.result(EARLIER, "Sunny, 24 degrees"),
    Message(Role.ASSISTANT, "It is sunny in Rome, 24 degrees."),
    Message(Role.USER, ASK),
]
OAI_HISTORY = [
    {"role": "user", "content": HISTORY[0].content},
    {"role": "assistant", "content": "", "tool_calls": [EARLIER.to_openai()]},
    {"role": "tool", "tool_call_id": "call_0", "content": HISTORY[2].content},
    {"role": "assistant", "content": HISTORY[3].content},
    {"role": "user", "content": ASK},
]
TEMPLATE = (
    Path(__file__).resolve().parents[1] / "tests/data/templates/Qwen-Qwen2.5-7B-Instruct.jinja"
)


def _post(port: int, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    out = json.loads(conn.getresponse().read())
    wall = time.perf_counter() - start
    conn.close()
    return out, wall


def theirs(port: int, tools: bool, tokens: int) -> tuple[float, float, int]:
    body: dict[str, Any] = {
        "messages": OAI_HISTORY,
        "temperature": 0,
        "cache_prompt": False,
    }
    if tools:
        body |= {"tools": [WEATHER.to_openai()], "tool_choice": "required", "max_tokens": 64}
    else:
        body |= {"max_tokens": tokens, "ignore_eos": True}
    out, wall = _post(port, body)
    if tools:
        calls = out["choices"][0]["message"].get("tool_calls") or []
        if not calls:  # its "required" grammar lets text come first: no call to time
            return float("nan"), float("nan"), 0
    t = out["timings"]
    return float(t["predicted_per_second"]), wall, int(t["predicted_n"])


def ours(session: Session, tools: bool, tokens: int) -> tuple[float, float, int]:
    msgs = HISTORY
    start = time.perf_counter()
    if tools:
        reply = session.complete(msgs, tools=[WEATHER], tool_choice="required", temperature=0)
        assert reply.tool_calls, reply
    else:
        sampling = Sampling(temperature=0, max_tokens=tokens, ignore_eos=True)
        reply = session.complete(msgs, sampling=sampling)
    wall = time.perf_counter() - start
    return reply.generated.rate(), wall, reply.generated.count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-server", default=None)
    args = ap.parse_args()

    from llm_inproc.backends.inproc.repack import resolve_repack
    from llm_inproc.build.servers import find_llama_server
    from llm_inproc.host.sysinfo import llama_system_info
    from llm_inproc.models.embedded import SMOLLM2_INSTRUCT, embedded_model_path
    from llm_inproc.paths import default_cache_dir

    cache = default_cache_dir()
    model = str(embedded_model_path(SMOLLM2_INSTRUCT, cache))
    repack = resolve_repack(None, Path(model), cache, llama_system_info())[0]
    binary = args.llama_server or find_llama_server(cache)
    if binary is None:
        sys.exit("llama-server not built: llm-inproc build --target llama-server")
    port = free_port()
    sys.path.insert(0, str(TEMPLATE.parents[2]))
    from gguf_tools import copy_with_metadata

    templated = copy_with_metadata(
        Path(model),
        Path("/tmp/bench-tools-qwen.gguf"),
        {"tokenizer.chat_template": TEMPLATE.read_text()},
    )
    cmd = [str(binary), "-m", model, "-t", str(args.threads), "-c", "4096", "--jinja"]
    cmd += ["--chat-template-file", str(TEMPLATE)]
    cmd += ["-np", "1", "--port", str(port)] + ([] if repack else ["--no-repack"])
    server = ChildServer("llama-server", cmd, port, Path("/tmp"))
    rows: dict[str, list[tuple[float, float, int]]] = {}
    try:
        server.wait_healthy(300)
        options = Options(
            model=str(templated), threads=args.threads, context_length=4096, parallel=1
        )
        with Session(options) as s:
            ours(s, True, 0)
            theirs(port, True, 0)  # warm-up both
            for _ in range(args.rounds):
                n = ours(s, True, 0)[2]
                rows.setdefault("ours call", []).append(ours(s, True, n))
                rows.setdefault("ours plain", []).append(ours(s, False, n))
                rows.setdefault("llama-server call", []).append(theirs(port, True, n))
                rows.setdefault("llama-server plain", []).append(theirs(port, False, n))
                print(
                    json.dumps({k: [round(x, 3) for x in v[-1]] for k, v in rows.items()}),
                    flush=True,
                )
    finally:
        server.close()
    med = {
        k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), v[-1][2])
        for k, v in rows.items()
    }
    for k, (rate, wall, n) in med.items():
        print(f"{k:20s} {rate:7.1f} tok/s  {wall * 1000:7.1f} ms  ({n} tokens)")
    print(
        f"call tok/s ours/llama-server {med['ours call'][0] / med['llama-server call'][0]:.3f}x; "
        f"time to the complete call {med['ours call'][1] / med['llama-server call'][1]:.3f}x; "
        f"grammar cost ours {med['ours call'][0] / med['ours plain'][0]:.3f}x plain, "
        f"llama-server {med['llama-server call'][0] / med['llama-server plain'][0]:.3f}x plain"
    )


if __name__ == "__main__":
    main()
