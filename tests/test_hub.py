"""Downloading ``hf:`` references through huggingface_hub, against a fake Hub on loopback.

Every test talks HTTP to a real server (tests/fakehub.py); nothing of ours is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakehub import FakeHub, cli_env, make_gguf
from llm_inproc.errors import (
    BackendError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
)
from llm_inproc.models.hub import download_model, list_cached_models
from subproc import run_cli

REPO = "hugginllam/tiny-GGUF"
Q4 = "tiny-q4_k_m.gguf"
REF = f"hf:{REPO}/HEAD/tiny-q4_k_m"
BIG = 12 * 1024 * 1024  # above huggingface_hub's 10 MiB download chunk, so resume can show


@pytest.fixture(autouse=True)
def _no_saved_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see no HF_TOKEN and no saved login from the machine running them."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_repo(
            REPO,
            {
                "main": {
                    Q4: make_gguf(size=5000, seed=1),
                    "tiny-Q8_0.gguf": make_gguf(size=6000, seed=2),
                    "other-model-IQ2_XS.gguf": make_gguf(seed=3),
                    "sub/tiny-Q4_0.gguf": make_gguf(seed=4),
                    "README.md": b"# tiny\n",
                },
                "dev": {Q4: make_gguf(size=5000, seed=5)},
            },
        )
        yield h


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _get(
    hub: FakeHub,
    ref: str,
    cache: Path,
    *,
    token: str | None = None,
    offline: bool | None = None,
    update: bool = False,
) -> Path:
    return download_model(
        ref,
        cache,
        endpoint=hub.endpoint,
        token=token,
        offline=offline,
        update=update,
        progress=False,
    )


def _content(hub: FakeHub, name: str, branch: str = "main") -> bytes:
    f = hub.repos[REPO].commits[hub.commit(REPO, branch)][name]
    return f.read(0, f.size)


def _leftovers(cache: Path) -> list[Path]:
    """Partial or temporary files anywhere in the cache."""
    return [p for p in cache.rglob("*") if p.name.endswith((".incomplete", ".tmp"))]


def test_first_download_then_no_request(hub: FakeHub, cache: Path) -> None:
    path = _get(hub, REF, cache)
    assert path.read_bytes() == _content(hub, Q4)
    assert path.is_relative_to(cache / "hf")
    assert [(r.method, r.path) for r in hub.requests] == [
        ("GET", f"/api/models/{REPO}"),
        ("HEAD", f"/{REPO}/resolve/main/{Q4}"),
        ("GET", f"/{REPO}/resolve/main/{Q4}"),
    ]
    assert "blobs=true" in hub.requests[0].query.lower(), "sizes and sha256 come with the list"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (cache / "verified" / sha).is_file(), "the verified marker is keyed by the sha256"

    hub.clear_log()
    assert _get(hub, REF, cache) == path
    assert hub.requests == [], "a cached file is used without asking the Hub"


def test_pinned_commit_and_branch(hub: FakeHub, cache: Path) -> None:
    commit = hub.commit(REPO, "dev")
    dev = _get(hub, f"hf:{REPO}/dev/tiny-q4_k_m", cache)
    pinned = _get(hub, f"hf:{REPO}/{commit}/tiny-q4_k_m", cache)
    assert dev == pinned
    assert dev.read_bytes() == _content(hub, Q4, "dev") != _content(hub, Q4)
    assert commit in dev.parts
    hub.clear_log()
    assert _get(hub, f"hf:{REPO}/{commit}/tiny-q4_k_m", cache) == pinned
    assert hub.requests == []


def test_update_checks_the_hub_without_downloading_again(hub: FakeHub, cache: Path) -> None:
    path = _get(hub, REF, cache)
    hub.clear_log()
    assert _get(hub, REF, cache, update=True) == path
    assert [r.method for r in hub.requests] == ["GET", "HEAD"], "metadata only, no file GET"


def test_a_moved_branch_is_fetched_only_on_update(hub: FakeHub, cache: Path) -> None:
    old = _get(hub, REF, cache)
    old_bytes = old.read_bytes()
    hub.add_repo(REPO, {"main": {Q4: make_gguf(size=5000, seed=42)}})  # a new commit on main
    assert _get(hub, REF, cache) == old, "without update the cached copy is used"
    new = _get(hub, REF, cache, update=True)
    assert new != old and hub.commit(REPO) in new.parts
    assert new.read_bytes() == make_gguf(size=5000, seed=42)
    assert old.read_bytes() == old_bytes, "the previous snapshot stays intact"
    assert _get(hub, REF, cache) == new, "HEAD now points at the new commit"


def test_update_falls_back_to_the_cache_when_the_hub_is_down(
    hub: FakeHub, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _get(hub, REF, cache)
    dead = _dead_endpoint()
    got = download_model(REF, cache, endpoint=dead, progress=False, update=True)
    assert got == path
    assert "using the cached copy" in caplog.text


def test_offline_serves_the_cache_with_no_request(hub: FakeHub, cache: Path) -> None:
    path = _get(hub, REF, cache)
    hub.clear_log()
    assert _get(hub, REF, cache, offline=True, update=True) == path
    with pytest.raises(ModelNotFoundError, match="offline mode"):
        _get(hub, f"hf:{REPO}/HEAD/tiny-Q8_0", cache, offline=True)
    assert hub.requests == []


def test_wrong_quantization_lists_the_available_ones(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        _get(hub, f"hf:{REPO}/HEAD/tiny-Q5_K_M", cache)
    message = str(info.value)
    assert "no tiny-Q5_K_M.gguf in hugginllam/tiny-GGUF" in message
    listed = message.split("available quantizations: ")[1].split(" (")[0].split(", ")
    assert sorted(listed) == ["Q4_0", "Q4_K_M", "Q8_0"], "same stem only, nested files included"
    assert not any(r.path.endswith(".gguf") for r in hub.requests), "nothing was downloaded"


def test_bad_reference_is_refused_before_any_request(hub: FakeHub, cache: Path) -> None:
    for bad in (f"hf:{REPO}/HEAD/tiny", f"hf:{REPO}/HEAD/tiny-q4_k_m.gguf", f"hf:{REPO}/HEAD"):
        with pytest.raises(InvalidInputError):
            _get(hub, bad, cache)
    assert hub.requests == []


def test_corrupted_bytes_are_rejected_and_deleted(hub: FakeHub, cache: Path) -> None:
    hub.corrupt(REPO, Q4)
    sha = hashlib.sha256(_content(hub, Q4)).hexdigest()
    with pytest.raises(ModelLoadError, match=f"corrupt: sha256 [0-9a-f]{{64}}, expected {sha}"):
        _get(hub, REF, cache)
    storage = cache / "hf" / "models--hugginllam--tiny-GGUF"
    assert not (storage / "blobs" / sha).exists()
    assert not list((storage / "snapshots").rglob(Q4)), "nothing under the final name"
    assert not (cache / "verified" / sha).exists()
    assert _leftovers(cache) == []

    hub.corrupt(REPO, Q4, enabled=False)
    assert _get(hub, REF, cache).read_bytes() == _content(hub, Q4)


def test_a_cached_file_changed_on_disk_is_verified_again(hub: FakeHub, cache: Path) -> None:
    path = _get(hub, REF, cache)
    blob = path.resolve()
    blob.chmod(0o644)
    blob.write_bytes(b"GGUF" + b"\0" * 4996)  # same size, different bytes and mtime
    hub.clear_log()
    again = _get(hub, REF, cache)
    assert again.read_bytes() == _content(hub, Q4)
    assert len(hub.downloads(Q4)) == 1, "the damaged copy was deleted and downloaded again"


def test_cut_connection_resumes_with_a_range_request(hub: FakeHub, cache: Path) -> None:
    data = make_gguf(size=BIG, seed=7)
    hub.add_repo("a/big-GGUF", {"main": {"big-Q8_0.gguf": data}})
    hub.cut_connection("a/big-GGUF", "big-Q8_0.gguf", after=11 * 1024 * 1024)
    path = _get(hub, "hf:a/big-GGUF/HEAD/big-Q8_0", cache)
    assert path.read_bytes() == data
    gets = hub.downloads("big-Q8_0.gguf")
    assert len(gets) == 2
    assert gets[0].header("Range") is None
    assert gets[1].header("Range") == "bytes=10485760-", "resumed after the bytes it kept"


def test_interrupted_download_resumes_on_the_next_call(hub: FakeHub, cache: Path) -> None:
    data = make_gguf(size=BIG, seed=8)
    hub.add_repo("a/big-GGUF", {"main": {"big-Q8_0.gguf": data}})
    hub.cut_connection("a/big-GGUF", "big-Q8_0.gguf", after=11 * 1024 * 1024, then_status=500)
    with pytest.raises(BackendError, match="HTTP 500"):
        _get(hub, "hf:a/big-GGUF/HEAD/big-Q8_0", cache)
    assert _leftovers(cache) == []
    assert not list(cache.rglob("big-Q8_0.gguf")), "nothing under the final name"
    (part,) = (cache / "partial").glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < len(data)

    hub.clear_log()
    assert _get(hub, "hf:a/big-GGUF/HEAD/big-Q8_0", cache).read_bytes() == data
    (get,) = hub.downloads("big-Q8_0.gguf")
    assert get.header("Range") == f"bytes={kept}-", "continued where the first call stopped"
    assert not part.exists()
    assert _leftovers(cache) == []


def test_a_corrupt_partial_download_is_thrown_away(hub: FakeHub, cache: Path) -> None:
    data = make_gguf(size=BIG, seed=10)
    hub.add_repo("a/big-GGUF", {"main": {"big-Q8_0.gguf": data}})
    sha = hashlib.sha256(data).hexdigest()
    part = cache / "partial" / f"{sha}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (1 << 20))  # not the file's first MiB
    with pytest.raises(ModelLoadError, match="corrupt"):
        _get(hub, "hf:a/big-GGUF/HEAD/big-Q8_0", cache)
    assert not part.exists()
    assert _get(hub, "hf:a/big-GGUF/HEAD/big-Q8_0", cache).read_bytes() == data


def test_concurrent_downloads_fetch_the_file_once(hub: FakeHub, cache: Path) -> None:
    data = make_gguf(size=BIG, seed=9)
    hub.add_repo("a/big-GGUF", {"main": {"big-Q8_0.gguf": data}})
    hub.delay = 0.1  # both threads are surely past the metadata requests together
    barrier = threading.Barrier(2)
    results: list[Path | BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(_get(hub, "hf:a/big-GGUF/HEAD/big-Q8_0", cache))
        except BaseException as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and all(isinstance(r, Path) for r in results), results
    assert results[0] == results[1]
    assert Path(results[0]).read_bytes() == data  # type: ignore[arg-type]
    assert len(hub.downloads("big-Q8_0.gguf")) == 1


def test_missing_repository_revision_and_file(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="repository hugginllam/nope not found"):
        _get(hub, "hf:hugginllam/nope/HEAD/x-Q4_0", cache)
    with pytest.raises(ModelNotFoundError, match=r"revision 'v9' not found .* use HEAD"):
        _get(hub, f"hf:{REPO}/v9/tiny-q4_k_m", cache)
    with pytest.raises(ModelNotFoundError, match="available quantizations: Q4_K_M"):
        _get(hub, f"hf:{REPO}/dev/tiny-Q8_0", cache)


def test_private_repository_needs_a_token(
    hub: FakeHub, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(
        "corp/secret-GGUF",
        {"main": {"s-Q4_0.gguf": make_gguf()}},
        private=True,
        tokens=("hf_good",),
    )
    ref = "hf:corp/secret-GGUF/HEAD/s-Q4_0"
    with pytest.raises(ModelNotFoundError, match="private, log in with `hf auth login`"):
        _get(hub, ref, cache)
    assert hub.requests[-1].header("Authorization") is None
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert _get(hub, ref, cache).read_bytes() == make_gguf()
    assert hub.requests[-1].header("Authorization") == "Bearer hf_good"


def test_gated_repository_says_how_to_get_access(hub: FakeHub, cache: Path) -> None:
    hub.add_repo(
        "meta/gated-GGUF",
        {"main": {"g-Q4_0.gguf": make_gguf()}},
        gated=True,
        tokens=("hf_granted",),
    )
    ref = "hf:meta/gated-GGUF/HEAD/g-Q4_0"
    with pytest.raises(BackendError, match=r"gated .* `hf auth login` or set HF_TOKEN") as anon:
        _get(hub, ref, cache)
    assert "huggingface.co/meta/gated-GGUF" in str(anon.value)
    with pytest.raises(BackendError, match="gated"):
        _get(hub, ref, cache, token="hf_not_granted")
    statuses = [r for r in hub.requests if r.method == "HEAD"]
    assert len(statuses) == 2
    assert _get(hub, ref, cache, token="hf_granted").read_bytes() == make_gguf()


def _dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_dead_endpoint_fails_fast(cache: Path) -> None:
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"cannot download .* HF_HUB_OFFLINE=1"):
        download_model(REF, cache, endpoint=_dead_endpoint(), progress=False)
    assert time.monotonic() - start < 3


def test_list_cached_models(hub: FakeHub, cache: Path) -> None:
    assert list_cached_models(cache) == []
    main = _get(hub, REF, cache)
    nested = _get(hub, f"hf:{REPO}/HEAD/sub/tiny-Q4_0", cache)
    dev = _get(hub, f"hf:{REPO}/dev/tiny-q4_k_m", cache)
    models = list_cached_models(cache)
    assert [m.ref for m in models] == [
        f"hf:{REPO}/HEAD/sub/tiny-Q4_0",
        f"hf:{REPO}/HEAD/tiny-q4_k_m",
        f"hf:{REPO}/dev/tiny-q4_k_m",
    ]
    assert [m.path for m in models] == [nested, main, dev]
    assert models[1].size == 5000 and models[1].source == "hf"
    assert models[2].commit == hub.commit(REPO, "dev")


def test_a_file_streamed_from_disk_is_verified_once_then_trusted(
    cache: Path, tmp_path: Path
) -> None:
    """A GGUF the Hub streams from disk with the sha256 it advertises is hashed once; a later
    call trusts the marker stamped with the file's size and modification time (no hashing,
    no request) until the stamp changes. (The bytes are changed under an unchanged stamp:
    only a hash could tell.)"""
    source = tmp_path / "small-q4_k_m.gguf"
    data = make_gguf(source, size=64 * 1024, seed=11)
    sha = hashlib.sha256(data).hexdigest()
    repo = "hugginllam/small-GGUF"
    with FakeHub() as hub:
        hub.add_repo(repo, {"main": {source.name: source}}, sha256={source.name: sha})
        ref = f"hf:{repo}/HEAD/small-q4_k_m"
        path = download_model(ref, cache, endpoint=hub.endpoint, progress=False)
        blob = path.resolve()
        assert blob.name == sha and path.read_bytes() == data
        stamp = blob.stat()
        assert (cache / "verified" / sha).read_text() == f"{stamp.st_size} {stamp.st_mtime_ns}"

        blob.chmod(0o644)
        tampered = data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]
        blob.write_bytes(tampered)
        os.utime(blob, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        hub.clear_log()
        assert download_model(ref, cache, endpoint=hub.endpoint, progress=False) == path
        assert hub.requests == [], "no request"
        assert path.read_bytes() == tampered, "trusted: not hashed again"

        # Another modification time: hashed again, found damaged, downloaded again.
        os.utime(blob, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
        assert download_model(ref, cache, endpoint=hub.endpoint, progress=False) == path
        assert path.read_bytes() == data
        assert len(hub.downloads(source.name)) == 1


# -- command line ----------------------------------------------------------------------


def _cli(hub: FakeHub, cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=cli_env(hub, cache, **env), timeout=120)


def test_cli_pull_and_models(hub: FakeHub, cache: Path) -> None:
    pulled = _cli(hub, cache, "pull", REF)
    assert pulled.returncode == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert pulled.stdout.count("\n") == 1, "only the path on stdout"
    assert path.read_bytes() == _content(hub, Q4)
    assert path.is_relative_to(cache)

    listed = _cli(hub, cache, "models", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    # Models shipped whole in installed packages are listed in place too: only Hub ones here.
    hub_items = [i for i in items if i["source"] == "hf"]
    assert [(i["ref"], i["path"], i["size"], i["source"]) for i in hub_items] == [
        (REF, str(path), 5000, "hf")
    ]
    table = _cli(hub, cache, "models")
    assert table.stdout.splitlines()[0].split() == ["REF", "SIZE", "SOURCE", "COMMIT", "FOR"]
    assert REF in table.stdout and "4.9 KiB" in table.stdout

    hub.clear_log()
    offline = _cli(hub, cache, "pull", REF, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert Path(offline.stdout.strip()) == path
    assert hub.requests == [], "HF_HUB_OFFLINE=1 makes no request"


def test_cli_pull_errors_are_one_line(hub: FakeHub, cache: Path) -> None:
    wrong = _cli(hub, cache, "pull", f"hf:{REPO}/HEAD/tiny-Q2_K")
    assert wrong.returncode == 1
    assert wrong.stdout == ""
    assert wrong.stderr.startswith("llm-inproc: error: no tiny-Q2_K.gguf in hugginllam/tiny-GGUF")
    assert "Q4_K_M" in wrong.stderr and "Traceback" not in wrong.stderr

    offline = _cli(hub, cache, "pull", REF, HF_HUB_OFFLINE="1")
    assert offline.returncode == 1
    assert "offline mode" in offline.stderr
