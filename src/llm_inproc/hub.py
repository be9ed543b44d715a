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

``HEAD`` is the default branch, which huggingface_hub spells ``main`` (``revision=None``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checksums import file_digest, forget_verified, is_verified, mark_verified
from .errors import BackendError, LLMError, ModelLoadError, ModelNotFoundError
from .references import QUANTIZATIONS, PackedFileRef, split_quantization

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["CachedModel", "download_model", "hf_cache_dir", "list_cached_models"]

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"
_API_TIMEOUT = 10.0  # seconds; huggingface_hub's own default for file metadata
_RESUMABLE_SIZE = 8 << 20  # files this large survive an interrupted download


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

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (``path`` as a string), for ``models`` and ``info``."""
        return {**dataclasses.asdict(self), "path": str(self.path)}


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
    cached = _cached_path(ref, cache_dir)
    if cached is not None and (offline or not update):
        problem = _verify(cached, cache_dir)
        if problem is None:
            return cached
        logger.warning("cached copy of %s is corrupt (%s) and was deleted", ref, problem)
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
        path = _download(ref, cache_dir, token=token, endpoint=endpoint, progress=progress)
    except LLMError:
        raise
    except Exception as e:
        error = _translate(e, ref, endpoint)
        # update=True with the Hub unreachable: the cached copy still serves.
        if isinstance(error, BackendError) and cached and _verify(cached, cache_dir) is None:
            logger.warning("could not check %s for updates, using the cached copy: %s", ref, error)
            return cached
        raise error from e
    problem = _verify(path, cache_dir)
    if problem is not None:
        raise ModelLoadError(
            f"downloaded file for {ref} is corrupt: {problem}; it was deleted, try again"
        )
    return path


def _is_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _cached_path(ref: PackedFileRef, cache_dir: Path) -> Path | None:
    """The cached file for ``ref``'s revision, found without any request."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        ref.repo_id(),
        ref.filename(),
        cache_dir=hf_cache_dir(cache_dir),
        revision=ref.hf_revision(),
    )
    return Path(found) if isinstance(found, str) else None


def _download(
    ref: PackedFileRef,
    cache_dir: Path,
    *,
    token: str | bool | None,
    endpoint: str | None,
    progress: bool,
) -> Path:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.utils.tqdm import silent_tqdm

    api = HfApi(endpoint=endpoint, token=token)
    # One API call answers "does the repository, revision and file exist?" quickly (no
    # retries, unlike the download's metadata request), lists the alternatives, and gives
    # each file's size and LFS sha256 for the resumable transfer below.
    info = api.model_info(
        ref.repo_id(), revision=ref.hf_revision(), files_metadata=True, timeout=_API_TIMEOUT
    )
    siblings = {s.rfilename: s for s in info.siblings or []}
    wanted = siblings.get(ref.filename())
    if wanted is None:
        raise ModelNotFoundError(_missing_file_message(ref, list(siblings)))
    tqdm_class: Any = None if progress else silent_tqdm
    if wanted.lfs is not None and wanted.lfs.size >= _RESUMABLE_SIZE:
        _fetch_blob(
            ref,
            cache_dir,
            sha256=wanted.lfs.sha256,
            size=wanted.lfs.size,
            token=token,
            endpoint=endpoint,
            tqdm_class=tqdm_class,
        )
    path = hf_hub_download(
        ref.repo_id(),
        ref.filename(),
        revision=ref.hf_revision(),
        cache_dir=hf_cache_dir(cache_dir),
        token=token,
        endpoint=endpoint,
        tqdm_class=tqdm_class,
    )
    return Path(path)


def _fetch_blob(
    ref: PackedFileRef,
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
                logger.info("resuming %s at %d of %d bytes", ref.filename(), have, size)
            if have < size:
                url = hf_hub_url(
                    ref.repo_id(), ref.filename(), revision=ref.hf_revision(), endpoint=endpoint
                )
                http_get(
                    url,
                    f,
                    resume_size=have,
                    headers=build_hf_headers(token=token),
                    expected_size=size,
                    displayed_filename=ref.filename(),
                    tqdm_class=tqdm_class,
                )
        actual = file_digest(part)
        if actual != sha256:
            part.unlink()
            raise ModelLoadError(
                f"downloaded file for {ref} is corrupt: sha256 {actual}, expected {sha256}; "
                "it was deleted, try again"
            )
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, blob)
        mark_verified(blob, sha256, cache_dir)


def _missing_file_message(ref: PackedFileRef, names: list[str]) -> str:
    where = f"{ref.repo_id()} at revision {ref.revision()}"
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    if not ggufs:
        return f"no {ref.filename()} in {where}: the repository has no .gguf files"
    splits = [(n, s) for n in ggufs if (s := split_quantization(n)) is not None]
    stem = split_quantization(ref.basename())
    # Same model name in any folder (large quantizations often live in sub-folders).
    wanted = stem[0].rsplit("/", 1)[-1] if stem else None
    same_stem = [(n, s) for n, s in splits if s[0].rsplit("/", 1)[-1] == wanted]
    chosen = same_stem or splits
    quants = sorted({s[1] for _, s in chosen}, key=QUANTIZATIONS.index)
    if not quants:
        return f"no {ref.filename()} in {where}; its .gguf files are: {', '.join(ggufs)}"
    example = chosen[0][0][: -len(".gguf")]
    return (
        f"no {ref.filename()} in {where}; available quantizations: {', '.join(quants)} "
        f"(for example hf:{ref.repo_id()}/{ref.revision()}/{example})"
    )


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


# -- listing ----------------------------------------------------------------------------


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
            for f in revision.files:
                rel = f.file_path.relative_to(revision.snapshot_path).as_posix()
                if not rel.lower().endswith(".gguf"):
                    continue
                models.append(
                    CachedModel(
                        ref=f"hf:{repo.repo_id}/{name}/{rel[: -len('.gguf')]}",
                        path=f.file_path,
                        size=f.size_on_disk,
                        commit=revision.commit_hash,
                    )
                )
    return sorted(models, key=lambda m: m.ref)
