"""The suite's result as one PNG, for people who would rather look than read
(matplotlib, from the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .measure import median

__all__ = ["plot", "plot_unavailable"]


def plot_unavailable() -> str | None:
    """How to get matplotlib, or None when it is installed."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return "pip install 'llm-inproc[bench]'"
    return None


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), dpi=72)
    (ax_gen, ax_ttft), (ax_conc, ax_scale) = axes
    cfg = result["config"]
    peers = result.get("peers") or {"series": {}, "order": []}
    s, order = peers["series"], peers["order"]

    def med(p: str, m: str) -> float:
        return median(s.get(p, {}).get(m, []))

    colors = ["#2b7bba" if p.startswith("ours") else "#999999" for p in order]
    gen = [med(p, "gen_rate") for p in order]
    ax_gen.barh(order, gen, color=colors)
    ax_gen.invert_yaxis()
    ax_gen.set_title(f"generation, tok/s ({cfg['tokens']} tokens; higher is better)")
    for i, v in enumerate(gen):
        ax_gen.text(v, i, f" {v:.1f}", va="center", fontsize=8)

    timed = [p for p in order if s.get(p, {}).get("ttft")]
    ys = range(len(timed))
    ax_ttft.barh(
        [y - 0.2 for y in ys],
        [med(p, "ttft") for p in timed],
        height=0.4,
        label=f"first turn ({cfg['prompt']}-token prompt)",
        color="#2b7bba",
    )
    ax_ttft.barh(
        [y + 0.2 for y in ys],
        [med(p, "turn2_ttft") for p in timed],
        height=0.4,
        label="second turn (prefix reuse)",
        color="#f28e2b",
    )
    ax_ttft.set_yticks(list(ys), timed)
    ax_ttft.invert_yaxis()
    ax_ttft.set_title("time to first token, s (lower is better)")
    ax_ttft.legend(fontsize=8)

    conc = result.get("concurrency") or {}
    names = sorted({n for v in conc.values() for n in v})
    for n in names:
        ks = [int(k) for k, v in conc.items() if n in v]
        ax_conc.plot(ks, [median(conc[str(k)][n]["aggregate"]) for k in ks], marker="o", label=n)
    ax_conc.set_xscale("log", base=2)
    ax_conc.set_xlabel("concurrent clients (= slots)")
    ax_conc.set_title("aggregate generation, tok/s")
    if names:
        ax_conc.legend(fontsize=8)

    scal = (result.get("scaling") or {}).get("series", {})
    keys = list(scal)
    xs = range(len(keys))
    ax_scale.bar(
        [x - 0.2 for x in xs],
        [median(scal[k]["gen_rate"]) for k in keys],
        width=0.4,
        label="generation tok/s",
        color="#2b7bba",
    )
    ax2 = ax_scale.twinx()
    ax2.bar(
        [x + 0.2 for x in xs],
        [median(scal[k]["prompt_rate"]) for k in keys],
        width=0.4,
        label="prompt tok/s (right)",
        color="#f28e2b",
    )
    ax_scale.set_xticks(
        list(xs),
        [k.replace("context ", "ctx ").replace(", prompt ", "\np ") for k in keys],
        fontsize=7,
    )
    ax_scale.set_title("ours by context size and prompt length")
    ax_scale.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)

    fig.suptitle(
        f"{Path(cfg['model']).name}, {cfg['threads']} threads, context {cfg['ctx']}", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
