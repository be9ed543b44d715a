"""``llm-inproc bench --quick``: the suite end to end, as a user runs it (a subprocess).

What is checked is the shape of what it writes, never how fast this machine is."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from subproc import child_env, run_cli

OURS = "ours (in-process)"


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # One thread: on a shared machine, two llama.cpp threads on two busy cores wait on each
    # other at every barrier and slow down 100x; one thread just gets slower. No waiting
    # for a quiet machine (up to 3 s a round): the speed it would protect is not checked,
    # and two benches run here at once.
    env = child_env(HF_HUB_OFFLINE="1")
    return run_cli("bench", "--threads", "1", "--max-wait", "0", *args, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def without_peers(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path
) -> Iterator[tuple[Path, Future[subprocess.CompletedProcess[str]]]]:
    """``bench --sections scaling`` with no llama-server, started when the quick suite
    starts: each keeps one core busy (one thread, one peer at a time), so two free cores
    run them side by side (under xdist they share their worker's core). Its output folder
    and the run."""
    out = tmp_path_factory.mktemp("without-peers")
    with ThreadPoolExecutor(1) as pool:
        yield out, pool.submit(
            bench, "--quick", "--json", "--no-plot", "--sections", "scaling", "--out", str(out),
            "--llama-server", str(out / "nowhere" / "llama-server"),
        )  # fmt: skip


@pytest.mark.model
@pytest.mark.usefixtures("without_peers")  # started first, to run beside this one
def test_quick_suite_writes_table_json_markdown_and_plot(
    tmp_path: Path, model_path: Path, llama_server_binary: Path
) -> None:
    """The files' shape, not this machine's speed: every number a peer reports is there and
    positive. The smallest run that fills every part of them: all peers, simonw's llm, one
    concurrency level (scaling is shown by the test below)."""
    out = tmp_path / "out"
    r = bench(
        "--quick", "--sections", "peers,llm,concurrency", "--clients", "2",
        "--tokens", "8", "--prompt", "16",
        "--out", str(out), "--llama-server", str(llama_server_binary),
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
    # Progress on stderr, the table on stdout.
    assert "[bench" in r.stderr and "round 1/1" in r.stderr
    assert f"| {OURS} |" in r.stdout and "### Targets" in r.stdout
    assert "### Scaling" not in r.stdout  # a section not asked for is not there

    data = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text().strip() == r.stdout.strip()
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and 5_000 < len(png) < 300_000
    assert data["errors"] == [], data["errors"]
    assert "scaling" not in data or not data["scaling"]

    def positive(x: object) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    med = data["medians"]
    for peer in (OURS, "llama-cpp-python", "our server (HTTP)", "llama-server (HTTP)"):
        m = med[peer]
        for key in ("gen_rate", "prompt_rate", "ttft", "turn2_ttft", "load_s"):
            assert positive(m[key]), (peer, key, m)
        assert m["rss_kib"] > 50_000, (peer, m)  # a loaded model, not an empty process
    assert med[OURS]["gen_n"] == 8  # what was actually generated: the 8 tokens asked
    # Every reply's real length, per peer and round: ours (EOS banned) made all 8.
    assert data["tokens_generated"]["peers"][OURS] == [8]
    assert data["short_replies"] == []
    bench_row = med["llama-bench"]
    assert positive(bench_row["gen_rate"]) and positive(bench_row["prompt_rate"])
    # simonw's llm runs on its own model, SmolLM2, next to ours on the same file.
    llm = data["llm"]["series"]
    assert "llm -m SmolLM2" in llm and any(k.startswith("ours") for k in llm)
    assert all(positive(min(v["gen_rate"])) for v in llm.values())
    assert set(data["concurrency"]) == {"2"}
    assert all(positive(min(v["aggregate"])) for v in data["concurrency"]["2"].values())
    assert {OURS, "llama-server (HTTP)"} <= set(data["concurrency"]["2"])
    targets = data["targets"]
    assert len(targets) == 7 and all(t["ratio"] is None or t["ratio"] > 0 for t in targets)
    assert sum(t["ratio"] is not None for t in targets) == 6  # no 4 clients asked
    # Older readers of --json: ours' headline rates and what was asked.
    assert positive(data["generation"]) and positive(data["prompt"])
    assert data["tokens"] == 8 and data["runs"] == 1


@pytest.mark.model
def test_missing_peers_are_skipped_with_how_to_get_them(
    without_peers: tuple[Path, Future[subprocess.CompletedProcess[str]]],
) -> None:
    out, run = without_peers
    r = run.result()
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(r.stdout)
    skipped = {s["peer"]: s for s in data["skipped"]}
    assert {"llama-server (HTTP)", "llama-bench"} <= set(skipped)
    assert all("llm-inproc build" in s["how"] for s in skipped.values())
    assert "skipping llama-server (HTTP)" in r.stderr and "llm-inproc build" in r.stderr
    assert not (out / "bench.png").exists()
    series = data["scaling"]["series"]
    assert set(series) == {"context 512, prompt 16", "context 512, prompt 64"}
    for v in series.values():
        assert all(math.isfinite(x) and x > 0 for k in ("gen_rate", "prompt_rate") for x in v[k])


@pytest.mark.model
def test_a_worker_that_died_is_named_with_its_status(model_path: Path) -> None:
    """Writing to a dead worker is the worker's failure, never a silent end of the bench
    (a BrokenPipeError would read as "the reader of our output went away")."""
    import signal

    from llm_inproc.bench.peers import PeerError, WorkerPeer

    cfg = {"model": str(model_path), "threads": 1, "ctx": 256, "repack": False}
    peer = WorkerPeer("ours", "ours", cfg)
    try:
        peer.wait_ready()
        peer.proc.send_signal(signal.SIGKILL)
        peer.proc.wait(30)
        with pytest.raises(PeerError, match=r"ours exited with status -9"):
            peer.peak_rss_kib()
    finally:
        peer.close()
