"""What a drafted token costs here, measured on the engine's own decode calls.

Whether speculative decoding pays depends on the machine and the model: a token verified
in a batch (with its logits) cost 0.12x a one-token step on a 2-core AVX-512 VM with Gemma 3
270M, but 0.65x on a 2-core AVX2 one, where the 262k-token output head is computed for
every drafted row. A fixed threshold is wrong on one of them, so the break-even acceptance
rate is the ratio of the two costs, both timed as they happen.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_BREAK_EVEN", "DraftCost", "drafting_pays"]

PROBATION = 32
"""Drafted tokens before a reply's acceptance is judged (whether it keeps drafting, and
how long its drafts are)."""

DEFAULT_BREAK_EVEN = 0.15
"""Used until both costs have been seen (a little above the 12 % measured with llama-bench
on the AVX-512 VM, benchmarks/RESULTS.md)."""

_ALPHA = 0.1
"""Weight of each new timing in the running averages once they have ``_SEEN`` timings
(before that, each is a plain mean): one slow step moves little."""

_SEEN = 8
"""Timings of each kind before the measured break-even is used: the first steps with a new
batch shape are slow (llama.cpp sizes its buffers then), and one of them must not decide."""

_FLOOR, _CEILING = 0.05, 0.9
"""Bounds on the break-even: timings near zero (an asynchronous GPU decode) or a noisy
spike must neither make every draft look free nor turn drafting off for good."""


class DraftCost:
    """Running averages of a one-token step's time and of the time each drafted token adds
    to a step, for one engine (one model, one context, one machine)."""

    __slots__ = ("n_per_draft", "n_plain", "per_draft", "plain")

    def __init__(self) -> None:
        self.plain = 0.0
        """Seconds for a step that decodes one generating slot's next token alone."""
        self.per_draft = 0.0
        """Seconds each drafted token adds to such a step."""
        self.n_plain = self.n_per_draft = 0

    def observe(self, seconds: float, drafts: int) -> None:
        """One decode call of a single generating slot: its next token plus ``drafts``."""
        if drafts == 0:
            self.n_plain += 1
            self.plain += (seconds - self.plain) * max(_ALPHA, 1 / self.n_plain)
        elif self.n_plain:
            self.n_per_draft += 1
            extra = max(0.0, seconds - self.plain) / drafts
            self.per_draft += (extra - self.per_draft) * max(_ALPHA, 1 / self.n_per_draft)

    def break_even(self) -> float:
        """The share of drafted tokens that must be accepted for drafting to pay: each
        accepted one saves a step, each drafted one costs ``per_draft``."""
        if not self.measured():
            return DEFAULT_BREAK_EVEN
        return min(_CEILING, max(_FLOOR, self.per_draft / self.plain))

    def measured(self) -> bool:
        """Whether both costs have been timed often enough to be used."""
        return min(self.n_plain, self.n_per_draft) >= _SEEN and self.plain > 0

    def draft_length(self, drafted: int, accepted: int, refused: int, longest: int) -> int:
        """How many tokens a reply should draft, given its drafts so far: ``drafted`` and
        ``accepted`` tokens, and ``refused`` steps whose draft was cut by a refused token
        (the ``longest`` while on probation, or until the costs are measured). With each
        drafted token accepted with probability ``p`` (once the ones before it were), the
        i-th one saves a step ``p**i`` of the time and always costs ``per_draft``: drafting
        pays up to ``i = log(cost ratio) / log(p)``. Where a drafted token is cheap the
        ``longest`` draft pays; where it costs most of a step, runs of 16 between two typos
        do not."""
        if drafted < PROBATION or not self.measured():
            return longest
        p = (accepted + 1) / (accepted + refused + 2)
        best = math.log(self.break_even()) / math.log(p)
        return max(1, min(longest, int(best)))


def drafting_pays(drafted: int, accepted: int, break_even: float = DEFAULT_BREAK_EVEN) -> bool:
    """Whether a reply keeps drafting: always during its first drafts, then while at least
    the ``break_even`` share of them is accepted (below it, drafting costs more than it
    saves; :meth:`DraftCost.break_even` measures it)."""
    return drafted < PROBATION or accepted >= break_even * drafted
