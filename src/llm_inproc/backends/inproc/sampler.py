"""A request's native sampler chain: built in C once per request, freed when it ends.

Built in the caller's thread when the request is submitted, so a bad grammar or
schema raises there, before the request takes a slot. The order is llama-server's:
logit bias, grammar, penalties, DRY, top-n-sigma, top-k, typical, top-p, min-p, XTC,
temperature, then the seeded draw (or greedy at temperature 0).

Greedy decoding with nothing but logit biases in the chain skips llama.cpp's sampler: its greedy
sampler copies the whole vocabulary into a fresh candidate array every token (~280 us for
Gemma's 262,144 tokens, ~3 % of a token on two CPU cores), while an argmax over the
logits llama.cpp already holds takes ~25 us and picks the same token (the first maximum).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InvalidInputError
from ...sampling import Sampling
from ...tools.types import Constraint
from ._llama import capture
from .model import Model

__all__ = ["ArgmaxSampler", "LazyGrammar", "NativeSampler", "build_sampler", "grammar_for"]

# llama.cpp adds biases to logits; -inf must stay -inf, the largest finite float would not.
_BAN = -math.inf


def grammar_for(s: Sampling) -> str:
    """The GBNF grammar ``s`` asks for: its own, or one made from its JSON Schema."""
    if s.json_schema is None:
        return s.grammar
    from ...json_grammar import json_schema_grammar

    try:
        return json_schema_grammar(s.json_schema)
    except Exception as e:  # the converter raises bare exceptions for unsupported schemas
        raise InvalidInputError(f"json_schema cannot be turned into a grammar: {e}") from None


def _biases(model: Model, s: Sampling) -> dict[int, float]:
    out: dict[int, float] = {}
    n_vocab = model.n_vocab
    for key, bias in s.logit_bias.items():
        if isinstance(key, int):
            if key >= n_vocab:
                raise InvalidInputError(f"logit_bias token id {key} is not in [0, {n_vocab})")
            ids = [key]
        else:
            ids = model.tokenize(key, special=False)
            # A word is usually biased with and without its leading space.
            if not key.startswith(" "):
                ids += model.tokenize(" " + key, special=False)
        for t in ids:
            out[t] = out.get(t, 0.0) + float(bias)
    if s.ignore_eos:
        for t in model.eog_tokens():
            out[t] = _BAN
    return out


def _parser_says(ll: Any, model: Model, grammar: str) -> str:
    """What llama.cpp's grammar parser printed: it writes straight to C's stderr, so on
    this failure path only, parse once more with file descriptor 2 caught in a file."""
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(caught.fileno(), 2)
            g = ll.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if g:
            ll.llama_sampler_free(g)
        caught.seek(0)
        text = caught.read(4000).decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3])


_TRIGGER_REACH = 256
"""Characters a trigger's match can span (markers and call heads are far shorter)."""


class LazyGrammar:
    """A grammar that wakes on a trigger, for ``tool_choice="auto"``.

    llama.cpp has lazy grammars, but when the text of the token that fires the trigger
    runs on into something the grammar refuses, its accept throws a C++ exception, which
    through ctypes aborts the whole process. Here the trigger is looked for in Python, the
    text from it is checked token by token against a fresh grammar before any accept (a
    refused token is no call: the reply stays free text), and only then does the grammar
    take over, through the same check-then-accept as every constrained step.
    """

    __slots__ = ("_grammar", "_ll", "_model", "_patterns", "_piece", "_seen", "_text", "done")

    def __init__(self, ll: Any, model: Model, grammar: str, triggers: Sequence[str]) -> None:
        import re

        self._ll = ll
        self._model = model
        self._grammar = grammar
        self._patterns = [re.compile(t) for t in triggers]
        self._text = ""
        """The reply's tail: all of it while short, then its last few hundred characters."""
        self._seen = 0
        """Characters of the reply so far."""
        self._piece = ctypes.create_string_buffer(256)
        self.done = False
        """The trigger fired (or a fired trigger did not fit the grammar): stop looking."""

    def observe(self, token: int) -> Any:
        """See one sampled token; the grammar sampler, fed up to this token, once a trigger
        fires and the text from it fits; else None.

        A trigger is a marker or the head of a call, so only the last few hundred characters
        can hold a new match: each token searches those, not the whole reply again (patterns
        anchored at the start only while the reply is that short); and only the tail is
        kept, so a long reply costs no more per token than a short one."""
        old = self._seen
        piece = self._token_text(token)
        self._seen += len(piece)
        if len(self._text) > 4 * _TRIGGER_REACH:
            self._text = self._text[-2 * _TRIGGER_REACH :]
        self._text += piece
        start = max(0, len(self._text) - len(piece) - _TRIGGER_REACH)
        for pattern in self._patterns:
            anchored = pattern.pattern.startswith("^")
            if anchored and old > _TRIGGER_REACH:
                continue
            m = pattern.search(self._text, 0 if anchored else start)
            if m is None:
                continue
            start = next(
                (m.start(i) for i in range(1, len(m.groups()) + 1) if m.group(i)), m.start()
            )
            self.done = True
            return self._wake(self._text[start:])
        return None

    def _token_text(self, token: int) -> str:
        ll, buf = self._ll, self._piece
        n = ll.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = self._piece = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, True)
        return buf.raw[:n].decode("utf-8", errors="replace")

    def _wake(self, text: str) -> Any:
        ll = self._ll
        g = _grammar_sampler(ll, self._model, self._grammar)
        cand = ll.llama_token_data()
        arr = ll.llama_token_data_array(ctypes.pointer(cand), 1, -1, False)
        for token in self._tokens(text):
            cand.id, cand.logit, cand.p = token, 0.0, 0.0
            arr.size, arr.selected, arr.sorted = 1, -1, False
            ll.llama_sampler_apply(g, ctypes.byref(arr))
            if cand.logit == -math.inf:
                ll.llama_sampler_free(g)  # not a call after all: the reply stays text
                return None
            ll.llama_sampler_accept(g, token)
        return g

    def _tokens(self, text: str) -> list[int]:
        """``text`` as tokens, control tokens parsed, no BOS."""
        ll, data = self._ll, text.encode("utf-8")
        cap = len(data) + 16
        arr = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self._model.vocab, data, len(data), arr, cap, False, True)
        return list(arr[: max(0, n)])


class NativeSampler:
    """A request's sampler chain, all in llama.cpp.

    With a grammar, llama-server's shortcut: running the grammar over the whole
    vocabulary at every step is what makes constrained output slow, so the token is
    drawn from the chain without the grammar, checked against the grammar alone, and
    only when the grammar refuses it drawn again: every candidate through the grammar,
    then the same chain (one random stream, as in llama-server). (Used when the chain
    keeps no token history, which a refused draw would disturb; with penalties or DRY
    the grammar is the chain's first step.)
    """

    __slots__ = (
        "_all",
        "_arr",
        "_cand",
        "_chain",
        "_grammar",
        "_history",
        "_ids",
        "_lazy",
        "_ll",
        "_n",
        "_sample",
        "_view",
    )

    def __init__(
        self,
        ll: Any,
        chain: Any,
        *,
        grammar: Any = None,
        lazy: LazyGrammar | None = None,
        n_vocab: int = 0,
        history: Sequence[tuple[Any, int]] = (),
    ) -> None:
        self._ll = ll
        self._lazy = lazy
        self._sample = ll.llama_sampler_sample
        self._chain = chain
        self._grammar = grammar
        self._history = tuple(history)
        self._n = n_vocab
        self._cand = ll.llama_token_data()
        self._arr = ll.llama_token_data_array(ctypes.pointer(self._cand), 1, -1, False)
        self._all: Any = None  # every candidate, made at the first redraw
        self._view: Any = None
        self._ids: Any = None

    def prime(self, prompt: Sequence[int]) -> None:
        """Show the prompt to the samplers that keep a token history (penalties, DRY), as
        llama-server does: repeating the prompt is penalised too (the grammar never sees it)."""
        accept = self._ll.llama_sampler_accept
        for sampler, window in self._history:
            for token in prompt[-window:] if window > 0 else prompt:
                accept(sampler, token)

    def sample(self, ctx: Any, idx: int) -> int:
        token: int = self._sample(self._chain, ctx, idx)
        if self._grammar is None:
            lazy = self._lazy
            if lazy is not None:
                self._grammar = lazy.observe(token)
                if lazy.done:
                    self._lazy = None
            return token
        ll, cand, arr = self._ll, self._cand, self._arr
        cand.id, cand.logit, cand.p = token, 0.0, 0.0
        arr.size, arr.selected, arr.sorted = 1, -1, False
        ll.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        if cand.logit == -math.inf:  # refused: draw again under the grammar
            token = self._redraw(ctx, idx)
        ll.llama_sampler_accept(self._grammar, token)
        return token

    def _redraw(self, ctx: Any, idx: int) -> int:
        ll, n = self._ll, self._n
        if self._all is None:
            self._all = (ll.llama_token_data * n)()
            self._view = np.ctypeslib.as_array(self._all)
            self._ids = np.arange(n, dtype=np.int32)
        view = self._view
        view["id"] = self._ids
        view["logit"] = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, idx), shape=(n,))
        view["p"] = 0.0
        arr = ll.llama_token_data_array(self._all, n, -1, False)
        ll.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        ll.llama_sampler_apply(self._chain, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)

    def free(self) -> None:
        for sampler in (self._chain, self._grammar):
            if sampler is not None:
                self._ll.llama_sampler_free(sampler)
        self._chain = self._grammar = None


class ArgmaxSampler:
    """Greedy decoding with at most logit biases to apply: the most likely token, read
    straight from llama.cpp's logits (no candidate array, no Python loop). Biases (and
    ``ignore_eos``'s bans) are added to the few biased entries in place for the argmax
    and the original values put back, so reported probabilities stay the model's."""

    __slots__ = ("_bias", "_ids", "_logits", "_n")

    def __init__(self, ll: Any, n_vocab: int, biases: dict[int, float]) -> None:
        self._logits = ll.llama_get_logits_ith
        self._n = (n_vocab,)
        self._ids = np.fromiter(biases, dtype=np.intp, count=len(biases))
        self._bias = np.fromiter(biases.values(), dtype=np.float32, count=len(biases))

    def sample(self, ctx: Any, idx: int) -> int:
        logits = np.ctypeslib.as_array(self._logits(ctx, idx), shape=self._n)
        if not self._ids.size:
            return int(logits.argmax())
        kept = logits[self._ids]
        logits[self._ids] = kept + self._bias
        try:
            return int(logits.argmax())
        finally:
            logits[self._ids] = kept

    def prime(self, prompt: Sequence[int]) -> None:
        pass

    def free(self) -> None:
        pass


def _grammar_sampler(ll: Any, model: Model, grammar: str) -> Any:
    with capture() as said:
        g = ll.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    if not g:
        why = _parser_says(ll, model, grammar) or said.reason("llama.cpp could not parse it")
        raise InvalidInputError(f"the grammar is not valid GBNF: {why}")
    return g


def build_sampler(
    model: Model, s: Sampling, constraint: Constraint | None = None
) -> NativeSampler | ArgmaxSampler:
    """The sampler for ``s`` (and a tool request's ``constraint``, which takes the place
    of a grammar); raises :class:`InvalidInputError` for a bad grammar."""
    ll = model.ll
    grammar = constraint.grammar if constraint is not None else grammar_for(s)
    has_history = s.dry_multiplier > 0 or _penalised(s)
    if s.greedy and not grammar and not has_history:
        return ArgmaxSampler(ll, model.n_vocab, _biases(model, s))
    chains: list[Any] = []
    try:
        history: list[tuple[Any, int]] = []
        if constraint is not None and constraint.lazy:
            # Checked now, so a bad grammar fails here and not at the trigger.
            ll.llama_sampler_free(_grammar_sampler(ll, model, grammar))
            lazy = LazyGrammar(ll, model, grammar, constraint.triggers)
            free = _chain(ll, model, s, None, chains, history)
            return NativeSampler(ll, free, lazy=lazy, n_vocab=model.n_vocab, history=history)
        if grammar and not has_history:
            free = _chain(ll, model, s, None, chains, history)
            g = _grammar_sampler(ll, model, grammar)  # nothing can fail after this
            return NativeSampler(ll, free, grammar=g, n_vocab=model.n_vocab)
        g = _grammar_sampler(ll, model, grammar) if grammar else None
        return NativeSampler(ll, _chain(ll, model, s, g, chains, history), history=history)
    except BaseException:
        for chain in chains:
            ll.llama_sampler_free(chain)
        raise


def _penalised(s: Sampling) -> bool:
    """Whether the repetition penalties change anything (they then keep a token history)."""
    return s.repeat_last_n != 0 and (
        s.repeat_penalty != 1.0 or s.frequency_penalty != 0.0 or s.presence_penalty != 0.0
    )


def _shortlist(s: Sampling) -> int:
    """How many of the most likely tokens the penalties need to see, or 0 for all.

    llama.cpp's penalties look every candidate up in a hash map: ~1 ms a token over
    Gemma's 262,144-token vocabulary. They only lower the logits of the at most
    ``repeat_last_n`` distinct tokens seen, so when the chain then keeps the ``top_k``
    best (or the best one, greedy), only the ``top_k + repeat_last_n`` best before the
    penalties can end up there: keeping those first gives the same candidates. Not when
    a penalty can raise a logit, when DRY or top-n-sigma need the whole vocabulary, or
    when the window is the whole context.
    """
    keep = 1 if s.greedy else s.top_k
    lowers_only = s.repeat_penalty >= 1.0 and s.frequency_penalty >= 0 and s.presence_penalty >= 0
    if keep <= 0 or not lowers_only or s.dry_multiplier > 0 or s.top_n_sigma > 0:
        return 0
    if not 0 < s.repeat_last_n <= 4096:
        return 0
    return keep + s.repeat_last_n


def _chain(
    ll: Any,
    model: Model,
    s: Sampling,
    grammar: Any,
    made: list[Any],
    history: list[tuple[Any, int]],
) -> Any:
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    made.append(chain)
    _fill(ll, model, chain, s, grammar, history)
    return chain


def _fill(
    ll: Any,
    model: Model,
    chain: Any,
    s: Sampling,
    grammar: Any,
    history: list[tuple[Any, int]],
) -> None:
    """Add ``s``'s samplers to ``chain``; those that keep a token history (and how many
    recent tokens they look at, 0 for all) go into ``history``."""

    def add(sampler: Any, window: int | None = None) -> None:
        ll.llama_sampler_chain_add(chain, sampler)
        if window is not None:
            history.append((sampler, window))

    biases = _biases(model, s)
    if biases:
        arr = (ll.llama_logit_bias * len(biases))(*biases.items())
        add(ll.llama_sampler_init_logit_bias(model.n_vocab, len(biases), arr))
    if grammar is not None:
        add(grammar)
    if _penalised(s):
        if pre := _shortlist(s):
            add(ll.llama_sampler_init_top_k(pre))
        last_n = model.n_ctx_train if s.repeat_last_n == -1 else s.repeat_last_n
        add(
            ll.llama_sampler_init_penalties(
                model.n_vocab, last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
            ),
            last_n,
        )
    if s.dry_multiplier > 0:
        breakers = [b.encode() for b in s.dry_sequence_breakers]
        arr = (ctypes.c_char_p * max(1, len(breakers)))(*breakers)
        last_n = model.n_ctx_train if s.dry_penalty_last_n == -1 else s.dry_penalty_last_n
        add(
            ll.llama_sampler_init_dry(
                model.vocab,
                s.dry_multiplier,
                s.dry_base,
                s.dry_allowed_length,
                last_n,
                arr,
                len(breakers),
            ),
            max(0, last_n),
        )
    if s.greedy:
        add(ll.llama_sampler_init_greedy())
        return
    if s.top_n_sigma > 0:
        add(ll.llama_sampler_init_top_n_sigma(s.top_n_sigma))
    if s.top_k > 0:
        add(ll.llama_sampler_init_top_k(s.top_k))
    if s.typical_p < 1.0:
        add(ll.llama_sampler_init_typical(s.typical_p, 1))
    if s.top_p < 1.0:
        add(ll.llama_sampler_init_top_p(s.top_p, 1))
    if s.min_p > 0.0:
        add(ll.llama_sampler_init_min_p(s.min_p, 1))
    seed = s.effective_seed()
    if s.xtc_probability > 0:
        add(ll.llama_sampler_init_xtc(s.xtc_probability, s.xtc_threshold, 1, seed))
    add(ll.llama_sampler_init_temp(float(s.temperature)))
    add(ll.llama_sampler_init_dist(seed))
