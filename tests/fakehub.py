"""A fake Hugging Face Hub: a real HTTP server on 127.0.0.1 for tests.

huggingface.co is not reachable from CI, and tests must never need the network, so this
server speaks the part of the Hub protocol huggingface_hub 2.x uses to download a file and
describe a repository (read from its source: ``file_download.py``, ``hf_api.py``,
``utils/_http.py``):

- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}``: ``ETag``, ``X-Repo-Commit``,
  ``X-Linked-Etag`` (the LFS sha256) and ``X-Linked-Size`` for LFS files (``*.gguf``),
  ``Content-Length``, ``Range`` requests answered with 206 and ``Content-Range``;
- ``GET /api/models/{repo_id}[/revision/{revision}]`` with ``siblings`` (sizes and LFS
  hashes when ``?blobs=True``), and ``GET /api/models/{repo_id}/tree/{revision}[/{path}]``;
- errors as the Hub sends them: ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``, ``GatedRepo``) and ``X-Error-Message``, 401 without a valid token on
  private or gated repositories, 403 for a token that was not granted access.

Fault injection: cut the connection after N bytes of a file, serve corrupted bytes while
advertising the true sha256, delay every request. Every request is logged so tests can
assert that no request was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from subproc import child_env

__all__ = ["FakeFile", "FakeHub", "FakeRepo", "LoggedRequest", "cli_env", "make_gguf"]

_CHUNK = 1 << 20


def make_gguf(path: Path | None = None, *, size: int = 4096, seed: int = 0) -> bytes:
    """Bytes that look like a GGUF file (magic, version 3, no tensors, no metadata).

    The rest is deterministic noise from ``seed``, so different seeds give different hashes.
    Written to ``path`` too when one is given.
    """
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    if size < len(header):
        raise ValueError(f"size must be at least {len(header)}")
    data = header + random.Random(seed).randbytes(size - len(header))
    if path is not None:
        path.write_bytes(data)
    return data


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeFile:
    """One file of a fake repository, held in memory or streamed from disk."""

    data: bytes | None
    source: Path | None
    size: int
    sha256: str
    lfs: bool

    @classmethod
    def of(cls, name: str, content: bytes | Path, sha256: str | None = None) -> FakeFile:
        """Wrap bytes or a file path; ``*.gguf`` files are served as LFS files."""
        lfs = name.endswith(".gguf")
        if isinstance(content, Path):
            digest = sha256 or _sha256_file(content)
            return cls(None, content, content.stat().st_size, digest, lfs)
        return cls(content, None, len(content), hashlib.sha256(content).hexdigest(), lfs)

    @property
    def git_oid(self) -> str:
        """The git object id: of the LFS pointer for LFS files, of the content otherwise."""
        if self.lfs:
            return _git_blob_oid(self.lfs_pointer)
        return _git_blob_oid(self.read(0, self.size))

    @property
    def lfs_pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {self.size}\n"
        ).encode()

    def read(self, start: int, end: int) -> bytes:
        return b"".join(self.chunks(start, end))

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes ``[start, end)``, in pieces."""
        if self.data is not None:
            for pos in range(start, end, _CHUNK):
                yield self.data[pos : min(end, pos + _CHUNK)]
            return
        assert self.source is not None
        with self.source.open("rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                piece = f.read(min(_CHUNK, end - pos))
                if not piece:
                    return
                pos += len(piece)
                yield piece


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(_CHUNK):
            h.update(piece)
    return h.hexdigest()


@dataclass
class FakeRepo:
    """A model repository: branches pointing at commits, each commit a set of files."""

    repo_id: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, FakeFile]] = field(default_factory=dict)
    default_branch: str = "main"
    gated: bool = False
    private: bool = False
    tokens: set[str] = field(default_factory=set)
    """Tokens granted access to a private or gated repository."""

    def commit_of(self, revision: str | None) -> str | None:
        rev = self.default_branch if revision is None else revision
        if rev in self.branches:
            return self.branches[rev]
        return rev if rev in self.commits else None


@dataclass(frozen=True)
class LoggedRequest:
    """A request the fake Hub received."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Lower-cased header names."""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class _Fault:
    cut_after: int | None = None
    cuts_left: int = 0
    then_status: int | None = None
    status_left: int = 0
    corrupt: bool = False


class FakeHub:
    """A fake Hub on ``127.0.0.1``; use as a context manager or call start()/stop().

    ``add_repo("author/name", {"main": {"file.gguf": b"..."}})`` adds a repository whose
    ``main`` branch has one commit; values may be bytes or a path to stream from.
    """

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        """Seconds to sleep before answering each request."""
        self.repos: dict[str, FakeRepo] = {}
        self._log: list[LoggedRequest] = []
        self._faults: dict[tuple[str, str], _Fault] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content -------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        revisions: Mapping[str, Mapping[str, bytes | Path]],
        *,
        default_branch: str = "main",
        gated: bool = False,
        private: bool = False,
        tokens: tuple[str, ...] = (),
        sha256: Mapping[str, str] | None = None,
    ) -> FakeRepo:
        """Add a repository; each key of ``revisions`` is a branch with one commit.

        ``sha256`` may give known hashes of path-backed files to skip hashing them.
        """
        repo = FakeRepo(
            repo_id, default_branch=default_branch, gated=gated, private=private, tokens=set(tokens)
        )
        for branch, files in revisions.items():
            wrapped = {
                name: FakeFile.of(name, content, (sha256 or {}).get(name))
                for name, content in files.items()
            }
            seed = f"{repo_id}\0{branch}\0" + "".join(
                f"{n}\0{f.sha256}\0" for n, f in sorted(wrapped.items())
            )
            commit = hashlib.sha1(seed.encode()).hexdigest()
            repo.commits[commit] = wrapped
            repo.branches[branch] = commit
        self.repos[repo_id] = repo
        return repo

    def commit(self, repo_id: str, branch: str = "main") -> str:
        """The commit sha a branch points at."""
        return self.repos[repo_id].branches[branch]

    # -- faults --------------------------------------------------------------------------

    def cut_connection(
        self,
        repo_id: str,
        filename: str,
        after: int,
        *,
        times: int = 1,
        then_status: int | None = None,
    ) -> None:
        """Close the connection after ``after`` body bytes on the next ``times`` GETs.

        With ``then_status``, the GET following the last cut is answered with that status.
        """
        with self._lock:
            fault = self._faults.setdefault((repo_id, filename), _Fault())
            fault.cut_after, fault.cuts_left = after, times
            fault.then_status, fault.status_left = then_status, int(then_status is not None)

    def corrupt(self, repo_id: str, filename: str, enabled: bool = True) -> None:
        """Serve flipped bytes for a file while advertising its true sha256 and size."""
        with self._lock:
            self._faults.setdefault((repo_id, filename), _Fault()).corrupt = enabled

    # -- request log ---------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of every request received so far."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def downloads(self, filename: str) -> list[LoggedRequest]:
        """The GET requests for ``.../resolve/.../filename``."""
        suffix = "/" + filename
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(suffix)]

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``, for ``HF_ENDPOINT`` or ``endpoint=``."""
        if self._server is None:
            raise RuntimeError("the fake hub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler -------------------------------------------------------------

    def _record(self, request: LoggedRequest) -> None:
        with self._lock:
            self._log.append(request)

    def _take_fault(self, repo_id: str, filename: str) -> tuple[int | None, int | None, bool]:
        """(cut after N bytes, status to answer, corrupt) for this GET; consumes one-shots."""
        with self._lock:
            fault = self._faults.get((repo_id, filename))
            if fault is None:
                return None, None, False
            if fault.cuts_left > 0:
                fault.cuts_left -= 1
                return fault.cut_after, None, fault.corrupt
            if fault.status_left > 0:
                fault.status_left -= 1
                return None, fault.then_status, fault.corrupt
            return None, None, fault.corrupt


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake_hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the hub keeps its own log

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # -- dispatch ------------------------------------------------------------------------

    def _serve(self, *, body: bool) -> None:
        hub = self.fake_hub
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        hub._record(LoggedRequest(self.command, url.path, url.query, headers))
        if hub.delay:
            time.sleep(hub.delay)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2:], query, body=body)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), body=body)
            else:
                raise _HubError(404, None, "Not Found")
        except _HubError as e:
            extra = {"X-Error-Message": e.message}
            if e.code:
                extra["X-Error-Code"] = e.code
            if e.commit:
                extra["X-Repo-Commit"] = e.commit
            self._send_json(e.status, {"error": e.message}, extra, body=body)

    def _repo(self, repo_id: str, *, download: bool) -> FakeRepo:
        repo = self.fake_hub.repos.get(repo_id)
        if repo is None:
            raise _HubError(404, "RepoNotFound", "Repository not found")
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if repo.private and token not in repo.tokens:
            raise _HubError(401, "RepoNotFound", "Invalid username or password.")
        if repo.gated and download and token not in repo.tokens:
            if token is None:
                raise _HubError(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in.",
                )
            raise _HubError(
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the authorized "
                f"list. Visit https://huggingface.co/{repo_id} to ask for access.",
            )
        return repo

    @staticmethod
    def _commit(repo: FakeRepo, revision: str | None) -> str:
        commit = repo.commit_of(revision)
        if commit is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # -- /api/models ---------------------------------------------------------------------

    def _api(self, parts: list[str], query: dict[str, list[str]], *, body: bool) -> None:
        repo = self._repo(f"{parts[0]}/{parts[1]}", download=False)
        rest = parts[2:]
        if not rest or rest[0] == "revision":
            revision = "/".join(rest[1:]) if rest else None
            commit = self._commit(repo, revision or None)
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            self._send_json(200, self._info(repo, commit, blobs=blobs), body=body)
        elif rest[0] == "tree" and len(rest) >= 2:
            commit = self._commit(repo, rest[1])
            prefix = "/".join(rest[2:])
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            self._send_json(200, self._tree(repo, commit, prefix, recursive), body=body)
        else:
            raise _HubError(404, None, "Not Found")

    @staticmethod
    def _info(repo: FakeRepo, commit: str, *, blobs: bool) -> dict[str, Any]:
        siblings: list[dict[str, Any]] = []
        for name, f in sorted(repo.commits[commit].items()):
            entry: dict[str, Any] = {"rfilename": name}
            if blobs:
                entry.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    entry["lfs"] = {
                        "size": f.size,
                        "sha256": f.sha256,
                        "pointerSize": len(f.lfs_pointer),
                    }
            siblings.append(entry)
        author = repo.repo_id.split("/")[0]
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author,
            "sha": commit,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "library_name": "gguf",
            "tags": ["gguf"],
            "siblings": siblings,
        }

    @staticmethod
    def _tree(repo: FakeRepo, commit: str, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = prefix.rstrip("/") + "/" if prefix else ""
        files = repo.commits[commit]
        if prefix and not any(n.startswith(base) for n in files):
            raise _HubError(404, "EntryNotFound", f"{prefix} does not exist", commit)
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for name, f in sorted(files.items()):
            if not name.startswith(base):
                continue
            rel = name[len(base) :]
            for i in range(rel.count("/")):
                folder = base + "/".join(rel.split("/")[: i + 1])
                if (recursive or i == 0) and folder not in folders:
                    folders.add(folder)
                    oid = hashlib.sha1(folder.encode()).hexdigest()
                    entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
            if not recursive and "/" in rel:
                continue
            entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": name}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.lfs_pointer)}
            entries.append(entry)
        return entries

    # -- /resolve ------------------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, filename: str, *, body: bool) -> None:
        repo = self._repo(repo_id, download=True)
        commit = self._commit(repo, revision)
        f = repo.commits[commit].get(filename)
        if f is None:
            raise _HubError(404, "EntryNotFound", f"{filename} does not exist", commit)
        headers = {
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "ETag": f'"{f.git_oid}"',
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        cut, status, corrupt = (None, None, False)
        if body:
            cut, status, corrupt = self.fake_hub._take_fault(repo_id, filename)
        if status is not None:
            raise _HubError(status, None, f"injected HTTP {status}")
        start, end = 0, f.size
        code = 200
        range_header = self.headers.get("Range")
        if range_header:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if m is None or int(m.group(1)) >= f.size:
                self._send_json(
                    416,
                    {"error": "range not satisfiable"},
                    {"Content-Range": f"bytes */{f.size}"},
                    body=body,
                )
                return
            start = int(m.group(1))
            end = min(f.size, int(m.group(2)) + 1) if m.group(2) else f.size
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        headers["Content-Length"] = str(end - start)
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not body:
            return
        sent = 0
        flip_at = f.size // 2
        for piece in f.chunks(start, end):
            if corrupt and start + sent <= flip_at < start + sent + len(piece):
                i = flip_at - start - sent
                piece = piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1 :]
            if cut is not None and sent + len(piece) >= cut:
                self.wfile.write(piece[: cut - sent])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(piece)
            sent += len(piece)

    # -- helpers -------------------------------------------------------------------------

    def _send_json(
        self, status: int, payload: Any, extra: Mapping[str, str] | None = None, *, body: bool
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)


def cli_env(hub: FakeHub, cache: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``llm-inproc`` subprocess that talks only to ``hub``.

    The machine's own Hugging Face and llm_inproc settings (tokens, endpoint, cache) are
    dropped so the child sees the fake Hub and an isolated cache.
    """
    own = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "LLM_"))}
    return child_env(
        own,
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(cache.parent / "hf-home"),
        LLM_INPROC_CACHE=str(cache),
        **extra,
    )
