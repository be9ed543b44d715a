"""What huggingface_hub's cache under llm_inproc's cache directory holds, found with no request.

Finding a model there must cost no request (offline mode, and every Session start), so
these functions read the cache's layout: ``models--<author>--<repo>/refs/<branch>`` holds a
commit, ``snapshots/<commit>/<path>`` links to ``blobs/<hash>``. A split model's shards lie
side by side in one snapshot directory, where llama.cpp finds them from the first.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .references import PackedFileRef
from .shards import first_shards, parse_shard

__all__ = ["CachedModel", "cached_files", "hf_cache_dir", "list_cached_models"]

logger = logging.getLogger(__name__)

_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


def hf_cache_dir(cache_dir: Path) -> Path:
    """The huggingface_hub cache inside llm_inproc's cache directory."""
    return cache_dir / "hf"


@dataclass(frozen=True)
class CachedModel:
    """A model file present in the cache."""

    ref: str
    """The reference that resolves to it, e.g. ``hf:author/repo/HEAD/name-Q4_K_M``."""
    path: Path
    """The file to load."""
    size: int
    """Size on disk, in bytes."""
    commit: str
    """The repository commit it was downloaded from ("" when not from a repository)."""
    source: str = "hf"
    """Where it came from: ``"hf"`` for the Hugging Face cache."""
    purpose: str = ""
    """What the model is for, when we know (the embedded ones)."""

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (``path`` as a string), for ``models`` and ``info``."""
        return {**dataclasses.asdict(self), "path": str(self.path)}


def cached_files(ref: PackedFileRef, cache_dir: Path) -> list[Path] | None:
    """The cached file(s) for ``ref``'s revision, found without any request; first to load."""
    from huggingface_hub import try_to_load_from_cache

    shard = parse_shard(ref.filename())
    if shard is None:
        found = try_to_load_from_cache(
            ref.repo_id(),
            ref.filename(),
            cache_dir=hf_cache_dir(cache_dir),
            revision=ref.hf_revision(),
        )
        if isinstance(found, str):
            return [Path(found)]
    snapshot = _snapshot_dir(ref, cache_dir)
    if snapshot is None:
        return None
    if shard is None:  # a split model named without its shard suffix?
        present = [p.relative_to(snapshot).as_posix() for p in snapshot.glob(_first_glob(ref))]
        firsts = first_shards(ref.filename(), present)
        if len(firsts) != 1:
            return None
        shard = firsts[0]
    paths = [snapshot / name for name in shard.siblings()]
    return paths if all(p.is_file() for p in paths) else None


def _snapshot_dir(ref: PackedFileRef, cache_dir: Path) -> Path | None:
    """``snapshots/<commit>`` for ``ref``'s revision in huggingface_hub's cache, if known.

    The layout (``refs/<branch>`` holding the commit) is huggingface_hub's documented cache
    format, the one ``try_to_load_from_cache`` reads; checked against huggingface_hub 2.4.
    """
    from huggingface_hub.file_download import repo_folder_name

    storage = hf_cache_dir(cache_dir) / repo_folder_name(repo_id=ref.repo_id(), repo_type="model")
    revision = ref.hf_revision() or "main"
    try:
        commit = (storage / "refs" / revision).read_text().strip()
    except OSError:
        commit = revision if _GIT_SHA1.match(revision) else ""
    snapshot = storage / "snapshots" / commit
    return snapshot if commit and snapshot.is_dir() else None


def _first_glob(ref: PackedFileRef) -> str:
    """A glob for the first shards of a split model named like ``ref`` (no shard suffix)."""
    return glob.escape(ref.basename()) + "-00001-of-[0-9][0-9][0-9][0-9][0-9].gguf"


def list_cached_models(cache_dir: Path) -> list[CachedModel]:
    """The GGUF files in the Hugging Face cache under ``cache_dir``, sorted by reference."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_cache_dir(cache_dir))
    except CacheNotFound:
        return []
    for warning in info.warnings:
        logger.debug("ignoring %s", warning)
    models: list[CachedModel] = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            refs = sorted(revision.refs)
            # huggingface_hub records the default branch as "main": our HEAD.
            name = "HEAD" if "main" in refs else refs[0] if refs else revision.commit_hash
            files = {
                f.file_path.relative_to(revision.snapshot_path).as_posix(): f
                for f in revision.files
            }
            for rel, f in files.items():
                if not rel.lower().endswith(".gguf"):
                    continue
                size = f.size_on_disk
                shard = parse_shard(rel)
                if shard is not None:  # a split model is listed once, by its first shard
                    if shard.number != 1:
                        continue
                    size = sum(files[n].size_on_disk for n in shard.siblings() if n in files)
                models.append(
                    CachedModel(
                        ref=f"hf:{repo.repo_id}/{name}/{rel[: -len('.gguf')]}",
                        path=f.file_path,
                        size=size,
                        commit=revision.commit_hash,
                    )
                )
    return sorted(models, key=lambda m: m.ref)
