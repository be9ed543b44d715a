"""Resolve ``hf:`` references to local GGUF files through huggingface_hub.

huggingface_hub does the downloading, locking, progress bars and cache layout (under
``<cache_dir>/hf``). This module adds what a model runner needs on top:

- **Resume across calls.** huggingface_hub resumes a cut connection within one call but
  drops its partial file when the call fails; for large files we keep the partial bytes
  and continue them next time with its own ``http_get`` (see :func:`_fetch_blob`).

- **No request when cached.** A file already in the cache is used without asking the Hub,
  for branches too (as Ollama does); ``update=True`` (``llm-inproc pull``) asks the Hub for
  the branch's current commit and downloads it if it changed. Offline mode
  (``HF_HUB_OFFLINE=1`` or ``offline=True``) never makes a request.
- **Integrity.** huggingface_hub names an LFS blob by the sha256 the Hub advertises
  (``X-Linked-Etag``); the file is hashed once against that name before it is returned
  (:mod:`.checksums` records the check, so later calls are instant). A mismatch deletes
  the blob and its snapshot link.
- **Errors a user can act on**, translated from huggingface_hub and httpx in one function;
  a file missing from the repository lists the quantizations that are there.
- **Split models** (``<prefix>-00001-of-00003.gguf``, :mod:`.shards`): a reference to the
  first shard, or to the name without the shard suffix when the repository holds only
  shards, fetches every shard through the same path as one file (resume, integrity,
  offline) into one snapshot directory, where llama.cpp finds them by name; the first
  shard's path is returned.

``HEAD`` is the default branch, which huggingface_hub spells ``main`` (``revision=None``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, LLMError, ModelLoadError, ModelNotFoundError
from .checksums import file_digest, forget_verified, is_verified, mark_verified
from .hub_cache import CachedModel, cached_files, hf_cache_dir, list_cached_models
from .references import PackedFileRef
from .repo_files import files_to_fetch

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["CachedModel", "download_model", "hf_cache_dir", "list_cached_models"]

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"
_API_TIMEOUT = 10.0  # seconds; huggingface_hub's own default for file metadata
_RESUMABLE_SIZE = 8 << 20  # files this large survive an interrupted download


def download_model(
    ref: str,
    cache_dir: Path,
    *,
    token: str | bool | None = None,
    endpoint: str | None = None,
    offline: bool | None = None,
    progress: bool = True,
    update: bool = False,
    api: HfApi | None = None,
) -> Path:
    """The local path of ``ref``'s GGUF file, downloading and verifying it if needed.

    For a split model, every shard is fetched and the first shard's path returned.

    ``token``: None for huggingface_hub's usual sources (``HF_TOKEN``, ``hf auth login``),
    False for none. ``endpoint``: None for ``HF_ENDPOINT``. ``offline``: None for
    ``HF_HUB_OFFLINE``. ``update``: ask the Hub whether the revision moved even when a copy
    is cached (a cached copy is kept, with a warning, when the Hub cannot be reached).
    ``api``: an ``HfApi`` whose endpoint and token to use when those are not given.
    Raises ModelNotFoundError, BackendError (network, server, access), ModelLoadError
    (corrupt download) or InvalidInputError (bad reference).
    """
    ref = PackedFileRef(ref)
    ref.validate()
    offline = _is_offline() if offline is None else offline
    cached = cached_files(ref, cache_dir)
    if cached is not None and (offline or not update):
        problems = _verify_all(cached, cache_dir)
        if not problems:
            return cached[0]
        logger.warning("cached copy of %s was deleted, downloading again: %s", ref, problems)
        cached = None
    if offline:
        raise ModelNotFoundError(
            f"{ref} is not in the cache {hf_cache_dir(cache_dir)} and offline mode is on "
            "(HF_HUB_OFFLINE); download it first with `llm-inproc pull` while online"
        )
    if api is not None:
        endpoint = endpoint or api.endpoint
        token = api.token if token is None else token
    try:
        paths = _download(ref, cache_dir, token=token, endpoint=endpoint, progress=progress)
    except LLMError:
        raise
    except Exception as e:
        error = _translate(e, ref, endpoint)
        # update=True with the Hub unreachable: the cached copy still serves.
        if isinstance(error, BackendError) and cached and not _verify_all(cached, cache_dir):
            logger.warning("could not check %s for updates, using the cached copy: %s", ref, error)
            return cached[0]
        raise error from e
    problems = _verify_all(paths, cache_dir)
    if problems:
        raise ModelLoadError(
            f"download of {ref} failed its integrity check: {problems}; "
            "the corrupt file was deleted, try again"
        )
    return paths[0]


def _is_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _download(
    ref: PackedFileRef,
    cache_dir: Path,
    *,
    token: str | bool | None,
    endpoint: str | None,
    progress: bool,
) -> list[Path]:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.utils.tqdm import silent_tqdm

    api = HfApi(endpoint=endpoint, token=token)
    # One API call answers "does the repository, revision and file exist?" quickly (no
    # retries, unlike the download's metadata request), lists the alternatives, and gives
    # each file's size and LFS sha256 for the resumable transfer below.
    info = api.model_info(
        ref.repo_id(), revision=ref.hf_revision(), files_metadata=True, timeout=_API_TIMEOUT
    )
    siblings = {s.rfilename: s for s in info.siblings or []}
    tqdm_class: Any = None if progress else silent_tqdm
    paths: list[Path] = []
    for filename in files_to_fetch(ref, list(siblings)):
        wanted = siblings[filename]
        if wanted.lfs is not None and wanted.lfs.size >= _RESUMABLE_SIZE:
            _fetch_blob(
                ref,
                filename,
                cache_dir,
                sha256=wanted.lfs.sha256,
                size=wanted.lfs.size,
                token=token,
                endpoint=endpoint,
                tqdm_class=tqdm_class,
            )
        try:
            path = hf_hub_download(
                ref.repo_id(),
                filename,
                revision=ref.hf_revision(),
                cache_dir=hf_cache_dir(cache_dir),
                token=token,
                endpoint=endpoint,
                tqdm_class=tqdm_class,
            )
        except EntryNotFoundError as e:  # listed, then gone: name the file, maybe a shard
            raise ModelNotFoundError(
                f"{filename} of {ref} vanished from {ref.repo_id()} during the download; "
                "try again, or pin a commit as the reference's revision"
            ) from e
        paths.append(Path(path))
    _check_side_by_side(ref, paths)
    return paths


def _check_side_by_side(ref: PackedFileRef, paths: list[Path]) -> None:
    """llama.cpp finds the other shards next to the first: all must be in one snapshot."""
    dirs = {p.parent for p in paths}
    if len(dirs) > 1:
        raise BackendError(
            f"the shards of {ref} came from different commits (the branch moved during the "
            "download); try again, or pin a commit as the reference's revision"
        )


def _fetch_blob(
    ref: PackedFileRef,
    filename: str,
    cache_dir: Path,
    *,
    sha256: str,
    size: int,
    token: str | bool | None,
    endpoint: str | None,
    tqdm_class: Any,
) -> None:
    """Put a large LFS file's blob into huggingface_hub's cache, resuming an earlier attempt.

    huggingface_hub 2.x resumes only within one call: it deletes its partial file when a
    download fails. We keep ours in ``<cache_dir>/partial/<sha256>.part``, continue it with
    huggingface_hub's own ``http_get`` (Range requests, retries, progress bar), check the
    sha256, and move it to the blob path; ``hf_hub_download`` then finds the blob and only
    links it into the snapshot.
    """
    from filelock import FileLock
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils._headers import build_hf_headers

    storage = hf_cache_dir(cache_dir) / repo_folder_name(repo_id=ref.repo_id(), repo_type="model")
    blob = storage / "blobs" / sha256
    if blob.exists():
        return
    part = cache_dir / "partial" / f"{sha256}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{part}.lock"):
        if blob.exists():  # another thread or process finished it meanwhile
            return
        with part.open("r+b" if part.exists() else "wb") as f:
            have = f.seek(0, os.SEEK_END)
            if have > size:
                f.truncate(0)
                have = f.seek(0)
            if have:
                logger.info("resuming %s at %d of %d bytes", filename, have, size)
            if have < size:
                url = hf_hub_url(
                    ref.repo_id(), filename, revision=ref.hf_revision(), endpoint=endpoint
                )
                http_get(
                    url,
                    f,
                    resume_size=have,
                    headers=build_hf_headers(token=token),
                    expected_size=size,
                    displayed_filename=filename,
                    tqdm_class=tqdm_class,
                )
        actual = file_digest(part)
        if actual != sha256:
            part.unlink()
            raise ModelLoadError(
                f"downloaded file {filename} for {ref} is corrupt: sha256 {actual}, "
                f"expected {sha256}; it was deleted, try again"
            )
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, blob)
        mark_verified(blob, sha256, cache_dir)


def _translate(error: BaseException, ref: PackedFileRef, endpoint: str | None) -> LLMError:
    """Map a huggingface_hub or httpx exception to an llm_inproc error that says what to do."""
    import httpx2
    from huggingface_hub import constants, errors

    hub = endpoint or constants.ENDPOINT
    repo, rev = ref.repo_id(), ref.revision()
    if isinstance(error, errors.GatedRepoError):
        return BackendError(
            f"{repo} is a gated repository: accept its conditions on {ref.repo_url()}, "
            f"then {_LOGIN_HINT} with a token that has access"
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return ModelNotFoundError(
            f"repository {repo} not found on {hub}: check the name; if it is private, {_LOGIN_HINT}"
        )
    if isinstance(error, errors.RevisionNotFoundError):
        return ModelNotFoundError(
            f"revision {rev!r} not found in {repo}: use HEAD for the default branch, "
            "or an existing branch, tag or commit"
        )
    if isinstance(error, errors.EntryNotFoundError):
        return ModelNotFoundError(f"{ref.filename()} not found in {repo} at revision {rev}")
    if isinstance(error, errors.OfflineModeIsEnabled):
        return ModelNotFoundError(
            f"{ref} is not cached and offline mode is on (HF_HUB_OFFLINE); "
            "download it first with `llm-inproc pull` while online"
        )
    if isinstance(error, errors.HfHubHTTPError):
        status = error.response.status_code
        if status in (401, 403):
            return BackendError(f"{hub} refused access to {repo} (HTTP {status}): {_LOGIN_HINT}")
        return BackendError(
            f"{hub} answered HTTP {status} for {repo}; try again later ({_one_line(error)})"
        )
    cause = error.__cause__ if isinstance(error, errors.LocalEntryNotFoundError) else error
    if isinstance(cause, (httpx2.TransportError, OSError)):
        return BackendError(
            f"cannot download {ref} from {hub}: {_one_line(cause)}; check the network "
            "(and HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use only cached models"
        )
    return BackendError(f"downloading {ref} from {hub} failed: {_one_line(error)}")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- integrity --------------------------------------------------------------------------


def _verify_all(paths: list[Path], cache_dir: Path) -> str:
    """Check every file (all shards of a split model); "" when all are good.

    Otherwise the problems, each naming its file, e.g. ``"m.gguf is corrupt: sha256 …"``.
    """
    problems = [
        f"{p.name} is corrupt: {problem}" for p in paths if (problem := _verify(p, cache_dir))
    ]
    return "; ".join(problems)


def _verify(path: Path, cache_dir: Path) -> str | None:
    """Check ``path`` once against the hash its blob is named by; None when it is good.

    A corrupt file is deleted (snapshot link and blob) and the problem returned.
    """
    blob = path.resolve()
    expected = blob.name
    kind = "sha256" if _SHA256.match(expected) else "git" if _GIT_SHA1.match(expected) else ""
    if not kind:
        logger.debug("%s is not named by its hash (no symlinks?); not verified", path)
        return None if path.exists() else "the file vanished"
    try:
        if is_verified(blob, expected, cache_dir):
            return None
        actual = file_digest(blob, git=kind == "git")
    except FileNotFoundError:
        return "the file vanished"
    if actual != expected:
        for p in (path, blob):
            p.unlink(missing_ok=True)
        forget_verified(expected, cache_dir)
        return f"{kind} {actual}, expected {expected}"
    mark_verified(blob, expected, cache_dir)
    return None
