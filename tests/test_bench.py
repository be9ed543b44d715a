"""``llm-inproc bench --quick``: the suite end to end, as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from subproc import child_env, run_cli

OURS = "ours (in-process)"


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # One thread: on a shared machine, two llama.cpp threads on two busy cores wait on each
    # other at every barrier and slow down 100x; one thread just gets slower.
    env = child_env(HF_HUB_OFFLINE="1")
    return run_cli("bench", "--threads", "1", *args, env=env, timeout=timeout)


@pytest.mark.model
def test_quick_suite_writes_table_json_markdown_and_plot(
    tmp_path: Path, model_path: Path, llama_server_binary: Path
) -> None:
    out = tmp_path / "out"
    r = bench("--quick", "--out", str(out), "--llama-server", str(llama_server_binary))
    assert r.returncode == 0, r.stderr[-3000:]
    # Progress on stderr, the table on stdout.
    assert "[bench" in r.stderr and "round 1/1" in r.stderr
    assert f"| {OURS} |" in r.stdout and "### Targets" in r.stdout

    data = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text().strip() == r.stdout.strip()
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and 5_000 < len(png) < 300_000
    assert data["errors"] == [], data["errors"]

    med = data["medians"]
    for peer in (OURS, "llama-cpp-python", "our server (HTTP)", "llama-server (HTTP)"):
        m = med[peer]
        assert m["gen_rate"] > 5 and m["prompt_rate"] > 5, (peer, m)
        assert 0 < m["ttft"] < 10 and 0 < m["turn2_ttft"] < 10, (peer, m)
        assert m["rss_kib"] > 50_000 and m["load_s"] > 0, (peer, m)
    assert med[OURS]["gen_n"] == 16  # what was actually generated: --quick's 16 tokens
    bench_row = med["llama-bench"]
    assert bench_row["gen_rate"] > 5 and bench_row["prompt_rate"] > 5
    # simonw's llm runs on its own model, SmolLM2, next to ours on the same file.
    llm = data["llm"]["series"]
    assert "llm -m SmolLM2" in llm and any(k.startswith("ours") for k in llm)
    assert all(min(v["gen_rate"]) > 5 for v in llm.values())
    for k in ("1", "2"):
        assert min(data["concurrency"][k][OURS]["aggregate"]) > 5
    assert all(min(v["gen_rate"]) > 5 for v in data["scaling"]["series"].values())
    targets = data["targets"]
    assert len(targets) == 7 and all(t["ratio"] is None or t["ratio"] > 0 for t in targets)
    assert sum(t["ratio"] is not None for t in targets) == 6  # no 4 clients in --quick
    # Older readers of --json: ours' headline rates and what was asked.
    assert data["generation"] > 5 and data["prompt"] > 5
    assert data["tokens"] == 16 and data["runs"] == 1
    assert not any(math.isnan(x) for x in (data["generation"], data["prompt"]))


@pytest.mark.model
def test_missing_peers_are_skipped_with_how_to_get_them(tmp_path: Path, model_path: Path) -> None:
    r = bench(
        "--quick", "--json", "--no-plot", "--sections", "scaling", "--out", str(tmp_path),
        "--llama-server", str(tmp_path / "nowhere" / "llama-server"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(r.stdout)
    skipped = {s["peer"]: s for s in data["skipped"]}
    assert {"llama-server (HTTP)", "llama-bench"} <= set(skipped)
    assert all("llm-inproc build" in s["how"] for s in skipped.values())
    assert "skipping llama-server (HTTP)" in r.stderr and "llm-inproc build" in r.stderr
    assert not (tmp_path / "bench.png").exists()
    assert min(data["scaling"]["series"]["context 512, prompt 16"]["gen_rate"]) > 5
