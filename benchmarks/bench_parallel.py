"""Many users at once: our parallel engine against llama-server, in one interleaved run.

    LLAMA_SERVER=… python benchmarks/bench_parallel.py [--models gemma,smollm2]
        [--runs 3] [--tokens 128] [--threads 2] [--ctx 2048] [--cache-dir DIR]

Four engines stay loaded for the whole run, on the same GGUF file, thread count and
total context, with the same KV cache layout (unified, full-size SWA, flash attention
off — what our session uses):

  * ``ours p=4`` / ``ours p=1``: an llm_inproc Session with ``parallel=4`` / ``1``
  * ``server np=4`` / ``server np=1``: ``llama-server -np 4`` / ``-np 1`` from the same
    llama.cpp sources (``--kv-unified`` when the binary has it)

The machine may be shared: before each round the script waits until other processes are
quiet (``--quiet``), counts the cores they used during the round, and drops and redoes a
round they disturbed (``--noisy``). Every kept round (a warm-up, then ``--runs`` measured
rounds, the engines' order rotated each round) measures:

  * aggregate: four concurrent requests × ``--tokens`` generated tokens (EOS banned with
    ``ignore_eos`` and prompts that ask for a long story, so each makes all its tokens;
    the tokens actually generated are counted): generated tokens / wall clock from the
    common start to the last reply, prompt evaluation included;
  * lone: one request alone on ``ours p=4`` and on ``ours p=1`` (generation tok/s from the
    Reply, and client wall clock);
  * TTFT: time from sending a request to its first streamed text while three others are
    already streaming;
  * how many replies of the four concurrent ones (greedy, temperature 0) differ from the
    same request evaluated alone (``p=1`` and ``np=1`` run the four one after the other).

Both sides get the same token ids (our chat template or raw encoding, rendered once) and
stream their replies. Prints a Markdown table of medians and the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_inproc.backends.child import ChildServer, free_port
from llm_inproc.bench.measure import CpuWatch, wait_for_quiet
from llm_inproc.errors import BackendError

TOPICS = (
    "a lighthouse keeper who finds a message in a bottle",
    "a cartographer mapping a city that changes every night",
    "two rival bakers in a small mountain village",
    "a robot learning to paint the sea",
    "a girl who can talk to the wind",
    "an old train that runs between two forgotten towns",
    "a detective who only works during thunderstorms",
    "a clockmaker whose clocks tell the future",
)


@dataclass
class Result:
    text: str
    generated: int
    wall: float
    gen_rate: float
    """Generation tok/s as the engine measured it (first to last token)."""
    ttft: float
    """Client-side seconds from sending to the first non-empty text."""


class Engine:
    name: str

    def one(self, tokens: list[int], n: int, first: threading.Event | None = None) -> Result:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Ours(Engine):
    def __init__(self, model: Path, parallel: int, threads: int, ctx: int) -> None:
        from llm_inproc import Options, Sampling, Session

        self.name = f"ours p={parallel}"
        self.session = Session(
            Options(model=str(model), threads=threads, context_length=ctx, parallel=parallel)
        )
        self._sampling = Sampling(temperature=0, ignore_eos=True)

    def one(self, tokens: list[int], n: int, first: threading.Event | None = None) -> Result:
        import dataclasses

        from llm_inproc.backends.base import GenerationRequest

        req = GenerationRequest(
            sampling=dataclasses.replace(self._sampling, max_tokens=n), tokens=tokens
        )
        t0 = time.perf_counter()
        ttft = 0.0
        with self.session.generate(req) as stream:
            for piece in stream:
                if not ttft and piece:
                    ttft = time.perf_counter() - t0
                    if first is not None:
                        first.set()
        wall = time.perf_counter() - t0
        r = stream.reply
        assert r is not None
        return Result(r.text, r.generated.count, wall, r.generated.rate(), ttft)

    def close(self) -> None:
        self.session.close()


def _repack(model: Path) -> bool:
    """The in-process probe's verdict for this CPU, so llama-server survives where AMX
    is reported but cannot run (the in-process session decides the same way)."""
    from llm_inproc.backends.inproc.repack import resolve_repack
    from llm_inproc.host.sysinfo import llama_system_info
    from llm_inproc.paths import default_cache_dir

    return resolve_repack(None, model, default_cache_dir(), llama_system_info())[0]


class Server(Engine):
    def __init__(self, exe: Path, model: Path, parallel: int, threads: int, ctx: int) -> None:
        self.name = f"server np={parallel}"
        self.port = free_port()
        helptext = subprocess.run(
            [str(exe), "--help"], capture_output=True, text=True, check=False
        ).stdout
        self.cmd = [
            str(exe),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-c",
            str(ctx),
            "-np",
            str(parallel),
            "-fa",
            "off",
            "--swa-full",
            *(["--kv-unified"] if "--kv-unified" in helptext else []),
            *([] if _repack(model) else ["--no-repack"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.server = ChildServer(
            "llama-server", self.cmd, self.port, Path(tempfile.gettempdir()), reaped=False
        )
        try:
            self.server.wait_healthy(120)
        except BackendError as e:
            raise RuntimeError(f"llama-server did not start: {' '.join(self.cmd)}\n{e}") from None

    def one(self, tokens: list[int], n: int, first: threading.Event | None = None) -> Result:
        body = {
            "prompt": tokens,
            "n_predict": n,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()[:500]
        parts: list[str] = []
        ttft = 0.0
        timings: dict[str, float] = {}
        for raw in resp:
            if not raw.startswith(b"data: "):
                continue
            data = json.loads(raw[6:])
            piece = data.get("content", "")
            if piece and not ttft:
                ttft = time.perf_counter() - t0
                if first is not None:
                    first.set()
            parts.append(piece)
            if data.get("stop"):
                timings = data.get("timings", {})
                break
        wall = time.perf_counter() - t0
        conn.close()
        count = int(timings.get("predicted_n", 0))
        return Result(
            "".join(parts).strip(), count, wall, float(timings.get("predicted_per_second", 0)), ttft
        )

    def close(self) -> None:
        self.server.close()
        self.server.log_path.unlink(missing_ok=True)


def _in_threads(calls: Sequence[Callable[[], Result]]) -> tuple[list[Result], float]:
    """Run ``calls`` at once from a common start; their results and the total wall time."""
    results: list[Result | None] = [None] * len(calls)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(calls) + 1)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [r for r in results if r is not None], wall


def aggregate(engine: Engine, prompts: list[list[int]], n: int) -> tuple[float, list[Result]]:
    results, wall = _in_threads([lambda p=p: engine.one(p, n) for p in prompts])
    return sum(r.generated for r in results) / wall, results


def ttft_under_load(engine: Engine, background: list[list[int]], probe: list[int], n: int) -> float:
    """Start three streams, wait until they stream, then time the fourth's first text.

    With one slot only the first streams; the fourth then waits for all three."""
    started = [threading.Event() for _ in background]
    threads = [
        threading.Thread(target=engine.one, args=(p, n, ev), daemon=True)
        for p, ev in zip(background, started, strict=True)
    ]
    for t in threads:
        t.start()
    started[0].wait(600)
    for ev in started[1:]:  # with one slot the others wait in line: don't wait for them
        ev.wait(1.0)
    time.sleep(0.2)
    result = engine.one(probe, 8)
    for t in threads:
        t.join()
    return result.ttft


def _first_diff(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


@contextlib.contextmanager
def engines(model: Path, exe: Path | None, threads: int, ctx: int) -> Iterator[dict[str, Engine]]:
    opened: dict[str, Engine] = {}
    try:
        for p in (4, 1):
            e: Engine = Ours(model, p, threads, ctx)
            opened[e.name] = e
        if exe is not None:
            for p in (4, 1):
                e = Server(exe, model, p, threads, ctx)
                opened[e.name] = e
        yield opened
    finally:
        for e in opened.values():
            e.close()


def prompts_for(session: object, round_no: int, count: int) -> list[list[int]]:
    from llm_inproc import Message, Role, Sampling

    out = []
    for i in range(count):
        topic = TOPICS[(round_no * count + i) % len(TOPICS)]
        msgs = [Message(Role.USER, f"Write a very long story (part {round_no}) about {topic}.")]
        req = session.chat_request(msgs, Sampling())  # type: ignore[attr-defined]
        out.append(session.tokenize(session.render(req)))  # type: ignore[attr-defined]
    return out


def bench_model(
    label: str, model: Path, exe: Path | None, args: argparse.Namespace
) -> dict[str, object]:
    n = args.tokens
    series: dict[str, list[float]] = {}
    diffs: dict[str, list[int]] = {"ours": [], "server": []}
    same_alone = [0, 0]  # ours p=1 vs server np=1, replies equal / compared
    counts: dict[str, list[int]] = {}
    noise: list[float] = []  # cores other processes used during each kept round
    dropped: list[float] = []  # ... and during each round dropped as too noisy

    with engines(model, exe, args.threads, args.ctx) as eng:
        names = list(eng)
        session = eng["ours p=4"].session  # type: ignore[attr-defined]
        pids = [e.server.pid for e in eng.values() if isinstance(e, Server)]
        rnd = 0
        while len(noise) <= args.runs and rnd <= 3 * args.runs:
            warm = not noise
            before = wait_for_quiet(pids, args.quiet, args.max_wait)
            watch = CpuWatch(pids)
            prompts = prompts_for(session, rnd, 4)
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            got: dict[str, float] = {}
            texts: dict[str, list[str]] = {}
            made: dict[str, list[int]] = {}
            for name in order:
                got[f"agg {name}"], results = aggregate(eng[name], prompts, n)
                texts[name] = [r.text for r in results]
                made[name] = [r.generated for r in results]
            lone_prompt = prompts_for(session, rnd + 100, 1)[0]
            for name in order:
                if name.startswith("ours"):
                    r = eng[name].one(lone_prompt, n)
                    got[f"lone {name}"] = r.gen_rate
                    got[f"lone wall {name}"] = r.generated / r.wall
            for name in order:
                if not name.endswith("=1"):  # with one slot the 4th waits for the others
                    got[f"ttft {name}"] = ttft_under_load(eng[name], prompts[:3], prompts[3], n)
            others = watch.others()
            rnd += 1
            ratios = (
                f"p4/p1 {got['agg ours p=4'] / got['agg ours p=1']:.2f}, "
                f"lone p4/p1 {got['lone ours p=4'] / got['lone ours p=1']:.3f}"
            )
            if "agg server np=4" in got:
                ratios += f", p4/np4 {got['agg ours p=4'] / got['agg server np=4']:.2f}"
            keep = warm or others <= args.noisy
            print(
                f"[{label}] round {rnd - 1}{' (warm-up)' if warm else ''}: other processes "
                f"{before:.2f} cores before, {others:.2f} during"
                f"{'' if keep else ' -> dropped, too noisy'}; {ratios}; "
                + ", ".join(f"{k} {v:.3g}" for k, v in got.items()),
                file=sys.stderr,
                flush=True,
            )
            if not keep:
                dropped.append(others)
                continue
            noise.append(others)
            if warm:
                continue
            for key, value in got.items():
                series.setdefault(key, []).append(value)
            for name, made_n in made.items():
                counts.setdefault(name, []).extend(made_n)
            for kind, batched, alone in (
                ("ours", "ours p=4", "ours p=1"),
                ("server", "server np=4", "server np=1"),
            ):
                for a, b in zip(texts.get(batched, []), texts.get(alone, []), strict=True):
                    if a != b:
                        at = _first_diff(a, b)
                        diffs[kind].append(at)
                        print(
                            f"  {kind}: batched/alone differ at {at}: "
                            f"{a[max(0, at - 20) : at + 30]!r} / {b[max(0, at - 20) : at + 30]!r}",
                            file=sys.stderr,
                        )
            for a, b in zip(texts["ours p=1"], texts.get("server np=1", []), strict=False):
                same_alone[0] += a == b
                same_alone[1] += 1
        server_cmd = eng["server np=4"].cmd if "server np=4" in eng else None  # type: ignore[attr-defined]
    return {
        "series": series,
        "diffs": diffs,
        "same_alone": same_alone,
        "counts": counts,
        "noise": noise,
        "dropped": dropped,
        "server_cmd": server_cmd,
        "compared": 4 * len(series.get("agg ours p=4", [])),
    }


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(label: str, model: Path, res: dict[str, object], args: argparse.Namespace) -> None:
    series: dict[str, list[float]] = res["series"]  # type: ignore[assignment]
    counts: dict[str, list[int]] = res["counts"]  # type: ignore[assignment]
    m = {k: _med(v) for k, v in series.items()}

    def cell(key: str, fmt: str = ".1f") -> str:
        if key not in series:
            return "n/a"
        vals = "/".join(format(v, fmt) for v in series[key])
        return f"**{format(m[key], fmt)}** ({vals})"

    print(f"\n### {label}: {model.name}\n")
    print(
        f"{args.threads} threads, total context {args.ctx}, {args.tokens} tokens per request, "
        f"median of {len(series.get('agg ours p=4', []))} rounds after a warm-up "
        "(each round's value in brackets); "
        "cores kept busy by other processes during each kept round (warm-up first): "
        f"{', '.join(f'{x:.2f}' for x in res['noise'])}"  # type: ignore[attr-defined]
        f"; rounds dropped as too noisy: {len(res['dropped'])}"  # type: ignore[arg-type]
        f" ({', '.join(f'{x:.2f}' for x in res['dropped'])} cores)\n"  # type: ignore[attr-defined]
    )
    print("| measurement | ours p=4 | ours p=1 | server np=4 | server np=1 |")
    print("|---|---:|---:|---:|---:|")
    names = ("ours p=4", "ours p=1", "server np=4", "server np=1")
    print(
        "| 4 concurrent requests: aggregate tok/s (wall) | "
        + " | ".join(cell(f"agg {k}") for k in names)
        + " |"
    )
    print(
        "| tokens generated per request (min–max) | "
        + " | ".join(f"{min(counts[k])}–{max(counts[k])}" if k in counts else "n/a" for k in names)
        + " |"
    )
    print(
        "| lone request: generation tok/s (Reply) | "
        + f"{cell('lone ours p=4')} | {cell('lone ours p=1')} | | |"
    )
    print(
        "| lone request: tok/s (client wall clock) | "
        + f"{cell('lone wall ours p=4')} | {cell('lone wall ours p=1')} | | |"
    )
    print(
        "| TTFT of a 4th request while 3 stream (s) | "
        + " | ".join(cell(f"ttft {k}", ".3f") if k.endswith("4") else "(waits)" for k in names)
        + " |"
    )

    def ratio(a: str, b: str) -> str:
        if a not in series or b not in series:
            return "n/a"
        per = [x / y for x, y in zip(series[a], series[b], strict=True)]
        return f"**{m[a] / m[b]:.2f}×** (per round {'/'.join(f'{r:.2f}' for r in per)})"

    print("\n| target | ratio | met |")
    print("|---|---:|:-:|")
    for what, a, b, target in (
        ("4 clients: ours p=4 / server np=4 ≥ 1.0", "agg ours p=4", "agg server np=4", 1.0),
        ("4 clients: ours p=4 / ours p=1 ≥ 1.3", "agg ours p=4", "agg ours p=1", 1.3),
        ("lone: ours p=4 / ours p=1 ≥ 0.97", "lone ours p=4", "lone ours p=1", 0.97),
        ("(context) server np=4 / server np=1", "agg server np=4", "agg server np=1", 0.0),
    ):
        met = (
            ""
            if not target or a not in m or b not in m
            else "yes"
            if m[a] / m[b] >= target
            else "**no**"
        )
        print(f"| {what} | {ratio(a, b)} | {met} |")
    diffs: dict[str, list[int]] = res["diffs"]  # type: ignore[assignment]
    compared = res["compared"]
    same = res["same_alone"]
    print(
        f"\nGreedy replies of the 4 concurrent requests that differ from the same request run "
        f"alone: ours {len(diffs['ours'])} of {compared}"
        + (f" (first differing character at {sorted(diffs['ours'])})" if diffs["ours"] else "")
        + f"; llama-server {len(diffs['server'])} of {compared}"
        + (f" (at {sorted(diffs['server'])})" if diffs["server"] else "")
        + f". Ours alone equal to llama-server alone: {same[0]} of {same[1]}."  # type: ignore[index]
    )
    if res["server_cmd"]:
        cmd = [Path(c).name if i in (0, 2) else c for i, c in enumerate(res["server_cmd"])]  # type: ignore[arg-type]
        print(f"\nllama-server command: `{' '.join(cmd)}`")


def main() -> None:
    from llm_inproc.build.servers import find_llama_server
    from llm_inproc.models.embedded import GEMMA_BASE, SMOLLM2_INSTRUCT, embedded_model_path
    from llm_inproc.paths import default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gemma,smollm2", help="comma-separated: gemma, smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048, help="total context of every engine")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument(
        "--quiet",
        type=float,
        default=0.3,
        help="before each round, wait until other processes use fewer cores than this",
    )
    ap.add_argument("--max-wait", type=float, default=120, help="... but at most this long (s)")
    ap.add_argument(
        "--noisy",
        type=float,
        default=0.25,
        help="drop (and redo) a round during which other processes used more cores than this",
    )
    args = ap.parse_args()
    cache = args.cache_dir or default_cache_dir()
    exe = find_llama_server(cache)
    if exe is None:
        print(
            "llama-server not found ($LLAMA_SERVER, PATH, build cache): ours only", file=sys.stderr
        )
    known = {
        "gemma": ("Gemma 3 270M", GEMMA_BASE),
        "smollm2": ("SmolLM2-135M-Instruct", SMOLLM2_INSTRUCT),
    }
    started = dt.datetime.now().astimezone()
    print(f"run started {started:%Y-%m-%d %H:%M %Z}; command: {' '.join(sys.argv)}")
    for key in args.models.split(","):
        label, emb = known[key.strip()]
        model = embedded_model_path(emb, cache)
        assert model is not None, f"pip install {emb.distribution}"
        report(label, model, bench_model(label, model, exe, args), args)
    print(f"\nrun ended {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")


if __name__ == "__main__":
    main()
