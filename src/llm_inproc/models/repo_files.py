"""Which files of a repository a reference names: one GGUF file, or every shard of a split.

Pure functions over the repository's file list (from one ``model_info`` call), so the
choice and its errors, such as the quantizations that are there when the one asked for is
not, are decided before any download starts.
"""

from __future__ import annotations

from ..errors import ModelNotFoundError
from .quantizations import quantization_rank, split_quantization
from .references import PackedFileRef
from .shards import Shard, first_shards, parse_shard, strip_shard

__all__ = ["files_to_fetch", "missing_file_message"]


def files_to_fetch(ref: PackedFileRef, names: list[str]) -> list[str]:
    """The repository files ``ref`` needs: the file itself, or every shard of its split model."""
    filename = ref.filename()
    if ref.is_llamafile():  # one file, never split
        if filename in names:
            return [filename]
        found = [n for n in names if n.lower().endswith(".llamafile")]
        raise ModelNotFoundError(
            f"no {filename} in {ref.repo_id()} at revision {ref.revision()}; its llamafiles "
            f"are: {', '.join(found) if found else 'none'}"
        )
    shard = parse_shard(filename)
    if shard is None:
        if filename in names:
            return [filename]
        firsts = first_shards(filename, names)
        if not firsts:
            raise ModelNotFoundError(missing_file_message(ref, names))
        if len(firsts) > 1:
            raise ModelNotFoundError(
                f"{ref.repo_id()} holds several split models named {ref.basename()}: "
                f"{', '.join(s.filename for s in firsts)}; name one by its first shard "
                "(without .gguf) in the reference"
            )
        shard = firsts[0]
    elif filename not in names:
        raise ModelNotFoundError(missing_file_message(ref, names))
    return _complete_split(ref, shard, names)


def _complete_split(ref: PackedFileRef, shard: Shard, names: list[str]) -> list[str]:
    wanted = shard.siblings()
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ModelNotFoundError(
            f"split model {shard.prefix} in {ref.repo_id()} at revision {ref.revision()} "
            f"has {shard.count} shards but the repository lacks {', '.join(missing)}; "
            "llama.cpp needs every shard: choose another quantization or revision"
        )
    return wanted


def missing_file_message(ref: PackedFileRef, names: list[str]) -> str:
    where = f"{ref.repo_id()} at revision {ref.revision()}"
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    if not ggufs:
        return f"no {ref.filename()} in {where}: the repository has no .gguf files"
    # A split model's shards all give the same (stem, quantization): it counts once.
    splits = [(n, s) for n in ggufs if (s := split_quantization(n)) is not None]
    stem = split_quantization(ref.basename())
    # Same model name in any folder (large quantizations often live in sub-folders).
    wanted = stem[0].rsplit("/", 1)[-1] if stem else None
    same_stem = [(n, s) for n, s in splits if s[0].rsplit("/", 1)[-1] == wanted]
    chosen = same_stem or splits
    quants = sorted({s[1] for _, s in chosen}, key=quantization_rank)
    if not quants:
        return f"no {ref.filename()} in {where}; its .gguf files are: {', '.join(ggufs)}"
    example = strip_shard(chosen[0][0])[: -len(".gguf")]
    return (
        f"no {ref.filename()} in {where}; available quantizations: {', '.join(quants)} "
        f"(for example hf:{ref.repo_id()}/{ref.revision()}/{example})"
    )
