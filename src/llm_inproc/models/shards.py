"""Split (sharded) GGUF file names: llama.cpp's ``<prefix>-00001-of-00003.gguf`` convention.

llama.cpp loads a split model from its first shard and opens the others by this exact
naming in the same directory (``llama_split_path``/``llama_split_prefix`` in ``llama.h``:
``"%s-%05d-of-%05d.gguf"``), so the names are matched exactly as it writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Shard", "first_shards", "parse_shard", "strip_shard"]

_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class Shard:
    """One file of a split model, as its name says."""

    prefix: str
    """The name before ``-00001-of-00003.gguf``; may contain ``/``."""
    number: int
    """1 for the first shard."""
    count: int
    """How many shards the model has."""

    @property
    def filename(self) -> str:
        """This shard's file name."""
        return _name(self.prefix, self.number, self.count)

    def siblings(self) -> list[str]:
        """The file names of every shard of this model, the first first."""
        return [_name(self.prefix, n, self.count) for n in range(1, self.count + 1)]


def _name(prefix: str, number: int, count: int) -> str:
    return f"{prefix}-{number:05d}-of-{count:05d}.gguf"


def parse_shard(filename: str) -> Shard | None:
    """The shard a ``….gguf`` file name is, or None for an ordinary (or malformed) name."""
    m = _SHARD.match(filename)
    if m is None:
        return None
    number, count = int(m["number"]), int(m["count"])
    if not 1 <= number <= count:
        return None
    return Shard(m["prefix"], number, count)


def strip_shard(name: str) -> str:
    """``"m-Q8_0-00001-of-00002.gguf"`` → ``"m-Q8_0.gguf"``; other names unchanged."""
    shard = parse_shard(name)
    return f"{shard.prefix}.gguf" if shard else name


def first_shards(filename: str, names: Iterable[str]) -> list[Shard]:
    """The first shards among ``names`` of split models named ``filename`` without a suffix.

    ``"m-Q8_0.gguf"`` finds ``"m-Q8_0-00001-of-00002.gguf"``; normally one, sorted by count.
    """
    prefix = filename[: -len(".gguf")] if filename.endswith(".gguf") else filename
    found = [s for n in names if (s := parse_shard(n)) and s.number == 1 and s.prefix == prefix]
    return sorted(found, key=lambda s: s.count)
