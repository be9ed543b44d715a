"""``llm-inproc bench``: the benchmark suite — our session against its peers on this
machine, one interleaved run (see :mod:`llm_inproc.bench`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from . import add_common_model_flags
from ._common import chosen_model

__all__ = ["add_parser"]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="benchmark the in-process session against its peers",
        description="Measure, on the same model file, threads and context, in one interleaved "
        "run: prompt and generation tok/s, time to first token, second-turn latency, load time "
        "and peak RSS of our session, bare llama-cpp-python, simonw's llm (on SmolLM2), "
        "llama-server and our server over HTTP, and llama-bench; then 1-8 concurrent clients "
        "and context/prompt scaling. Progress on stderr, a table on stdout, JSON, Markdown and "
        "a PNG in --out.",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="tokens generated per request; a reply that ends early is reported with its "
        "real count (default: 128; 16 with --quick)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="measured rounds; medians reported (default: 3; 1 with --quick)",
    )
    p.add_argument(
        "--prompt",
        type=int,
        default=None,
        help="prompt tokens of a lone request (default: 512; 64 with --quick)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON result instead of tables")
    p.add_argument("--quick", action="store_true", help="a short run (sanity check, ~1 minute)")
    p.add_argument("--out", type=Path, default=Path("llm-inproc-bench"), help="output folder")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.add_argument(
        "--sections",
        default="peers,llm,concurrency,scaling",
        help="comma-separated: peers, llm, concurrency, scaling",
    )
    p.add_argument(
        "--clients",
        type=_ints,
        default=None,
        help="client counts (default: 1,2,4,8; 1,2 with --quick)",
    )
    p.add_argument(
        "--llama-server",
        type=Path,
        default=None,
        help="llama-server binary (default: the one llm-inproc build cached, if any)",
    )
    p.add_argument(
        "--llama-bench",
        type=Path,
        default=None,
        help="llama-bench binary (default: the one next to llama-server, if any)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=None,
        help="wait at most this many seconds for a quiet machine (default: 60; 3 with --quick)",
    )
    add_common_model_flags(p, session=False)
    p.set_defaults(func=run)


def _binaries(args: argparse.Namespace, cache: Path) -> tuple[Path | None, Path | None]:
    from ..build.servers import find_llama_server

    server = args.llama_server
    if server is None:
        server = find_llama_server(cache)
    bench = args.llama_bench
    if bench is None and server is not None:
        sibling = server.parent / server.name.replace("llama-server", "llama-bench")
        bench = sibling if sibling.is_file() else None
    server = server if server is not None and Path(server).is_file() else None
    bench = bench if bench is not None and Path(bench).is_file() else None
    return server, bench


def _own_argv() -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index("bench") + 1 :] if "bench" in argv else argv


def run(args: argparse.Namespace) -> int:
    from ..bench.suite import SuiteConfig, run_suite
    from ..errors import InvalidInputError
    from ..host.hardware import physical_cores
    from ..models.embedded import GEMMA_BASE, SMOLLM2_INSTRUCT, embedded_model_path
    from ..models.resolve import resolve_model
    from ..paths import default_cache_dir

    q = args.quick
    tokens = args.tokens if args.tokens is not None else 16 if q else 128
    runs = args.runs if args.runs is not None else 1 if q else 3
    prompt = args.prompt if args.prompt is not None else 64 if q else 512
    if tokens < 1 or runs < 1 or prompt < 2:
        raise InvalidInputError("--tokens and --runs must be at least 1, --prompt at least 2")
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    model = resolve_model(chosen_model(args)[0] or GEMMA_BASE.ref, cache)
    server, bench = _binaries(args, cache)
    ctx = args.context_length or 2048
    if prompt + tokens + 64 > ctx:
        raise InvalidInputError(f"--prompt {prompt} + --tokens {tokens} do not fit context {ctx}")
    cfg = SuiteConfig(
        model=model,
        threads=args.threads or physical_cores(),
        ctx=ctx,
        gpu_layers=args.gpu_layers if args.gpu_layers is not None else -1,
        repack=_repack(args, model, cache),
        tokens=tokens,
        prompt=prompt,
        runs=runs,
        warmup=not q,
        clients=args.clients or ((1, 2) if q else (1, 2, 4, 8)),
        scale_contexts=(512,) if q else (512, 2048, 8192),
        scale_prompts=(16, 64) if q else (16, 512, 2048),
        llama_server=server,
        llama_bench=bench,
        chat_model=embedded_model_path(SMOLLM2_INSTRUCT, cache),
        sections=tuple(s.strip() for s in args.sections.split(",") if s.strip()),
        max_wait=args.max_wait if args.max_wait is not None else 3.0 if q else 60.0,
        redo=0 if q else 2,
        command=shlex.join(["llm-inproc", "bench", *_own_argv()]),
    )
    if args.llama_bench is not None and bench is None:
        cfg.skipped.append(
            {
                "peer": "llama-bench",
                "why": f"{args.llama_bench} does not exist",
                "how": "llm-inproc build --target llama-server",
            }
        )
    return _finish(run_suite(cfg), args)


def _finish(result: dict[str, Any], args: argparse.Namespace) -> int:
    from ..bench.plot import plot, plot_unavailable
    from ..bench.report import render_markdown, to_json, write_files

    # What was really generated, beside what was asked, in the JSON and bench.json too.
    result["tokens_generated"] = generated_counts(result)
    result["short_replies"] = short = short_replies(result)
    markdown = render_markdown(result)
    asked = result["config"]["tokens"]
    notes = [
        f"{s['section']}: {s['peer']} generated {s['tokens']} tokens, not the {asked} asked "
        f"(its reply ended early); its rates are over {s['tokens']}"
        for s in short
    ]
    if notes:
        markdown += "\n\n" + "\n".join(f"Note: {n}." for n in notes) + "\n"
    paths = write_files(result, args.out, markdown)
    if not args.no_plot:
        how = plot_unavailable()
        if how is None:
            paths["plot"] = plot(result, args.out / "bench.png")
        else:
            print(f"llm-inproc bench: no plot: matplotlib is missing ({how})", file=sys.stderr)  # noqa: T201
    if args.json:
        print(json.dumps(to_json(result), indent=1))  # noqa: T201
    else:
        print(markdown)  # noqa: T201
    for note in notes:
        print(f"llm-inproc bench: {note}", file=sys.stderr)  # noqa: T201
    for kind, path in paths.items():
        print(f"llm-inproc bench: {kind} written to {path}", file=sys.stderr)  # noqa: T201
    return 0


def generated_counts(result: dict[str, Any]) -> dict[str, dict[str, list[int]]]:
    """Tokens each peer really generated per reply, by section (``--tokens`` is a budget:
    a reply that ends at the end of its turn, or at the context's end, is shorter)."""
    out: dict[str, dict[str, list[int]]] = {}
    for section in ("peers", "llm"):
        series = (result.get(section) or {}).get("series", {})
        counts = {
            peer: [int(n) for n in metrics["gen_n"]]
            for peer, metrics in series.items()
            if metrics.get("gen_n")
        }
        if counts:
            out[section] = counts
    return out


def short_replies(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The peers whose shortest reply had fewer tokens than ``--tokens`` asked for."""
    asked = int(result["config"]["tokens"])
    return [
        {"section": section, "peer": peer, "tokens": min(counts), "asked": asked}
        for section, peers in generated_counts(result).items()
        for peer, counts in peers.items()
        if min(counts) < asked
    ]


def _repack(args: argparse.Namespace, model: Path, cache: Path) -> bool:
    """``--repack``/``--no-repack``, else this CPU's probe verdict (every peer the same)."""
    if getattr(args, "repack", None) is not None:
        return bool(args.repack)
    from ..backends.inproc.repack import resolve_repack
    from ..host.sysinfo import llama_system_info

    return resolve_repack(None, model, cache, llama_system_info())[0]
