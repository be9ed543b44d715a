"""A request's native sampler chain: built in C once per request, freed when it ends."""

from __future__ import annotations

from typing import Any

from ...sampling import Sampling

__all__ = ["build_sampler"]


def build_sampler(ll: Any, s: Sampling) -> Any:
    """llama-server's default chain (top-k 40, top-p 0.95, min-p 0.05, temperature),
    or plain greedy at temperature 0. Every step runs in llama.cpp, none in Python."""
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    add = ll.llama_sampler_chain_add
    if s.greedy:
        add(chain, ll.llama_sampler_init_greedy())
        return chain
    add(chain, ll.llama_sampler_init_top_k(40))
    add(chain, ll.llama_sampler_init_top_p(0.95, 1))
    add(chain, ll.llama_sampler_init_min_p(0.05, 1))
    add(chain, ll.llama_sampler_init_temp(float(s.temperature)))
    add(chain, ll.llama_sampler_init_dist(s.effective_seed()))
    return chain
