"""The host process never dies: context lengths around llama.cpp's batch boundaries
against prompts on both sides of them, each context in its own process.

A prompt that does not fit must raise our error; one that fits must get a reply.
A signal (SIGABRT from a GGML_ASSERT) fails the test with the case that caused it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from subproc import run_python

pytestmark = pytest.mark.model

SNIPPET = r"""
import json, sys
from llm_inproc import ContextOverflowError, Message, Options, Role, Session
path, n_ctx = sys.argv[1], int(sys.argv[2])
with Session(Options(model=path, context_length=n_ctx, parallel=2)) as s:
    def msgs(k):
        return [Message(Role.USER, "word " * k)]
    def with_tokens(target):
        lo, hi = 0, 4 * target + 8  # the fewest words whose prompt takes >= target tokens
        while lo < hi:
            mid = (lo + hi) // 2
            if s.count_tokens(msgs(mid)) >= target:
                hi = mid
            else:
                lo = mid + 1
        return msgs(lo)
    real = s.model_info.n_ctx
    for target in sorted({real - 2, real - 1, real, real + 1, 511, 512, 513, 2 * real}):
        m = with_tokens(max(1, target))
        n = s.count_tokens(m)
        try:
            r = s.complete(m, max_tokens=3, temperature=0)
            print(json.dumps({"n": n, "ctx": real, "ok": r.finish_reason}), flush=True)
        except ContextOverflowError as e:
            print(json.dumps({"n": n, "ctx": real, "overflow": str(e)}), flush=True)
"""


# The batch is the context asked for, at most 512, and llama.cpp rounds the context up (to
# a multiple of 256 in this version). So: batches that do not divide the context (100:
# context 256, batches of 100), a batch as large as the context (256), a context rounded up
# past its batch (511: context 512, batches of 511), and a context larger than the largest
# batch (600: context 768, batches of 512). Each gets prompts one under, at and one over its
# context and the 512-token batch.
@pytest.mark.parametrize("n_ctx", [100, 256, 511, 600])
def test_no_context_and_prompt_length_kills_the_process(model_path: Path, n_ctx: int) -> None:
    done = run_python(SNIPPET, str(model_path), str(n_ctx), timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    cases = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(cases) >= 4
    for c in cases:
        if c["n"] < c["ctx"]:
            assert "ok" in c, c  # it fits: a reply
        else:
            assert "overflow" in c and f"context holds {c['ctx']}" in c["overflow"], c
