"""Packed Hugging Face references: one string that names a model file or a repository.

A model is named by ``hf:<author>/<repo>/<revision>/<file path without .gguf>`` so that a
single option (and a single YAML value) can say where a model comes from. This module parses
and validates those strings without any I/O, and knows the GGUF quantization suffixes
(:mod:`.quantizations`) and split-file names (:mod:`.shards`), so bad references are
refused before anything is downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInputError
from .quantizations import QUANTIZATIONS, split_quantization
from .shards import parse_shard

__all__ = [
    "QUANTIZATIONS",
    "ModelRef",
    "PackedFileRef",
    "PackedRepoRef",
    "make_packed_file_ref",
    "split_quantization",
]

HF_URL = "https://huggingface.co"
_PREFIX = "hf:"
_HEAD = "HEAD"
_LLAMAFILE = ".llamafile"

# Something that looks like a quantization but is not a known one, e.g. "Q7_K" or "FP8".
_QUANT_LIKE = re.compile(r"[-._]((?:UD[-_])?(?:[IT]?Q\d\w*|(?:B|MX|NV)?FP?\d+\w*))$", re.IGNORECASE)
_SHARD_LIKE = re.compile(r"-(\d+)-of-(\d+)$")
_HF_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_HF_NAME_MAX = 96
_BAD_REVISION_CHARS = re.compile(r"[\s~^:?*\[\\\x00-\x1f\x7f]")


def _valid_list() -> str:
    return ", ".join(QUANTIZATIONS)


def _check_hf_name(kind: str, name: str, ref: str) -> None:
    """Apply the Hub's rules for an author or repository name."""
    problem = ""
    if not name:
        problem = "is empty"
    elif len(name) > _HF_NAME_MAX:
        problem = f"is {len(name)} characters long, the maximum is {_HF_NAME_MAX}"
    elif not _HF_NAME.match(name):
        problem = "may only contain letters, digits, '-', '_' and '.'"
    elif name[0] in "-." or name[-1] in "-.":
        problem = "may not start or end with '-' or '.'"
    elif "--" in name or ".." in name:
        problem = "may not contain '--' or '..'"
    if problem:
        raise InvalidInputError(
            f"invalid {kind} {name!r} in reference {ref!r}: it {problem}; "
            "use the name exactly as it appears on huggingface.co"
        )


def _check_revision(revision: str, ref: str) -> None:
    problem = ""
    if not revision:
        problem = "is empty"
    elif _BAD_REVISION_CHARS.search(revision):
        problem = "contains whitespace or one of ~ ^ : ? * [ \\"
    elif ".." in revision or "@{" in revision:
        problem = "contains '..' or '@{'"
    elif revision[0] in "-." or revision.endswith((".", ".lock")):
        problem = "starts with '-' or '.', or ends with '.' or '.lock'"
    if problem:
        raise InvalidInputError(
            f"invalid revision {revision!r} in reference {ref!r}: it {problem}; "
            "use HEAD for the default branch, a branch name, or a commit hash"
        )


def _check_path(basename: str, ref: str, *, allow_empty: bool) -> None:
    """Rules for the file path after the revision (or a prefix of it)."""
    if not basename:
        if allow_empty:
            return
        raise InvalidInputError(
            f"reference {ref!r} has no file name after the revision; "
            "use hf:<author>/<repo>/<revision>/<file without .gguf>"
        )
    problem = ""
    if basename.startswith("/"):
        problem = "starts with '/'"
    elif "\\" in basename or any(ord(c) < 0x20 or c == "\x7f" for c in basename):
        problem = "contains a backslash or a control character"
    else:
        segments = basename.split("/")
        # A prefix may end with '/', meaning "any file in that folder".
        inner = segments[:-1] if allow_empty else segments
        if any(s == "" for s in inner):
            problem = "has an empty path segment ('//' or a trailing '/')"
        elif any(s in (".", "..") for s in segments):
            problem = "has a '.' or '..' path segment"
    if problem:
        raise InvalidInputError(
            f"invalid file path {basename!r} in reference {ref!r}: it {problem}; "
            "give the file's path inside the repository"
        )
    if basename.lower().endswith(".gguf"):
        raise InvalidInputError(
            f"file name {basename!r} in reference {ref!r} ends with '.gguf'; "
            "drop the .gguf suffix, it is added automatically"
        )


def _check_shard(basename: str, ref: str) -> str:
    """The basename without a split file's ``-00001-of-00003``, refusing any other shard."""
    m = _SHARD_LIKE.search(basename)
    if m is None:
        return basename
    shard = parse_shard(basename + ".gguf")
    if shard is None or shard.number != 1:
        first = f"{basename[: m.start()]}-00001-of-{int(m.group(2)):05d}"
        raise InvalidInputError(
            f"file name {basename!r} in reference {ref!r} is not the first shard of a split "
            f"model; llama.cpp loads a split model from its first shard: name {first!r}, "
            f"or {basename[: m.start()]!r} to let the repository say how many shards there are"
        )
    return shard.prefix


def _check_quantization(basename: str, ref: str) -> None:
    name = _check_shard(basename, ref)
    if split_quantization(name) is not None:
        return
    unknown = _QUANT_LIKE.search(name)
    if unknown:
        what = f"ends with unknown quantization {unknown.group(1)!r}"
    else:
        what = "does not end with a quantization suffix"
    raise InvalidInputError(
        f"file name {basename!r} in reference {ref!r} {what}; "
        f"end it with '-' or '.' and one of: {_valid_list()} (for example '-Q4_K_M'; "
        "unsloth's dynamic quants add 'UD-', as in '-UD-Q4_K_XL', and a split model's "
        "first shard ends with '-00001-of-0000N')"
    )


def _require_prefix(ref: str, form: str) -> str:
    if not ref.startswith(_PREFIX):
        raise InvalidInputError(f"reference {ref!r} does not start with 'hf:'; use the form {form}")
    return ref[len(_PREFIX) :]


@dataclass(frozen=True)
class ModelRef:
    """A Hugging Face model repository."""

    author: str
    """The user or organisation owning the repository."""
    repo: str
    """The repository name."""

    @property
    def repo_id(self) -> str:
        """``"author/repo"``, as huggingface_hub wants it."""
        return f"{self.author}/{self.repo}"

    @property
    def url(self) -> str:
        """The repository's page on huggingface.co."""
        return f"{HF_URL}/{self.repo_id}"


class PackedFileRef(str):
    """``"hf:<author>/<repo>/<revision>/<file path without .gguf>"``.

    ``HEAD`` as revision means the repository's default branch. Accessors never raise:
    on a malformed string they return ``""`` for missing parts; call :meth:`validate`.
    """

    __slots__ = ()
    _FORM = "hf:<author>/<repo>/<revision>/<file without .gguf>"

    def _parts(self) -> tuple[str, str, str, str]:
        body = self[len(_PREFIX) :] if self.startswith(_PREFIX) else ""
        parts = body.split("/", 3) if body else []
        parts += [""] * (4 - len(parts))
        return parts[0], parts[1], parts[2], parts[3]

    def author(self) -> str:
        """The ``<author>`` part."""
        return self._parts()[0]

    def repo(self) -> str:
        """The ``<repo>`` part."""
        return self._parts()[1]

    def revision(self) -> str:
        """The revision as written (``HEAD``, a branch or a commit)."""
        return self._parts()[2]

    def hf_revision(self) -> str | None:
        """The revision for huggingface_hub: None (default branch) for ``HEAD``."""
        rev = self.revision()
        return None if rev == _HEAD else rev

    def basename(self) -> str:
        """Everything after the revision; may contain ``/``."""
        return self._parts()[3]

    def filename(self) -> str:
        """The file's path in the repository: the basename plus ``.gguf`` (a ``.llamafile``
        is named with its suffix, as it is not a GGUF)."""
        if self.is_llamafile():
            return self.basename()
        return self.basename() + ".gguf"

    def is_llamafile(self) -> bool:
        """Whether the reference names a llamafile (its file name ends with ``.llamafile``)."""
        return self.basename().lower().endswith(_LLAMAFILE)

    def quantization(self) -> str:
        """The canonical quantization (``"Q4_K_M"``), or ``""`` when there is none."""
        split = split_quantization(self.basename())
        return split[1] if split else ""

    def repo_id(self) -> str:
        """``"author/repo"``."""
        return self.model_ref().repo_id

    def repo_url(self) -> str:
        """``"https://huggingface.co/author/repo"``."""
        return self.model_ref().url

    def model_ref(self) -> ModelRef:
        """The repository holding this file."""
        author, repo, _, _ = self._parts()
        return ModelRef(author, repo)

    def _validate_repo(self) -> tuple[str, str, str, str]:
        ref = str(self)
        body = _require_prefix(ref, self._FORM)
        if body.count("/") < 3:
            raise InvalidInputError(
                f"reference {ref!r} is incomplete; use the form {self._FORM}, "
                "with HEAD as revision for the default branch"
            )
        author, repo, revision, basename = self._parts()
        _check_hf_name("author", author, ref)
        _check_hf_name("repository", repo, ref)
        _check_revision(revision, ref)
        return author, repo, revision, basename

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the bad part, if any."""
        basename = self._validate_repo()[3]
        _check_path(basename, str(self), allow_empty=False)
        if basename.lower().endswith(_LLAMAFILE):
            # Mozilla names them <model>.<quantization>.llamafile, but the quantization
            # is inside the file, so a name without one is still a valid reference.
            if len(basename) == len(_LLAMAFILE) or basename.endswith("/" + _LLAMAFILE):
                raise InvalidInputError(
                    f"reference {str(self)!r} names a file called only {_LLAMAFILE!r}; "
                    "give the llamafile's full name"
                )
            return
        _check_quantization(basename, str(self))

    def validate_prefix(self) -> None:
        """Validate as a :class:`KnownLLM` source: a reference cut anywhere in the file name."""
        _check_path(self._validate_repo()[3], str(self), allow_empty=True)


class PackedRepoRef(str):
    """``"hf:<author>/<repo>"``: a Hugging Face model repository."""

    __slots__ = ()
    _FORM = "hf:<author>/<repo>"

    def model_ref(self) -> ModelRef:
        """The repository as a :class:`ModelRef`."""
        body = self[len(_PREFIX) :] if self.startswith(_PREFIX) else ""
        author, _, repo = body.partition("/")
        return ModelRef(author, repo)

    def repo_id(self) -> str:
        """``"author/repo"``."""
        return self.model_ref().repo_id

    def repo_url(self) -> str:
        """``"https://huggingface.co/author/repo"``."""
        return self.model_ref().url

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the bad part, if any."""
        ref = str(self)
        body = _require_prefix(ref, self._FORM)
        if body.count("/") != 1:
            raise InvalidInputError(
                f"reference {ref!r} must have exactly one '/'; use the form {self._FORM}"
            )
        ref_ = self.model_ref()
        _check_hf_name("author", ref_.author, ref)
        _check_hf_name("repository", ref_.repo, ref)


def make_packed_file_ref(author: str, repo: str, revision: str, file: str) -> PackedFileRef:
    """Build ``hf:<author>/<repo>/<revision>/<file>``; call ``validate()`` to check it."""
    return PackedFileRef(f"{_PREFIX}{author}/{repo}/{revision}/{file}")
