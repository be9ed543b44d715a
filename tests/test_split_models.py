"""Split (sharded) GGUF models from the Hub: every shard fetched, the first one loaded.

The shards are real: Gemma 3 270M cut in three with the ``gguf`` package (llama.cpp's
``gguf-split`` is not built here), served by the fake Hub on loopback, downloaded through
the public path and loaded by llama.cpp from the first shard. The behaviour of single files
(resume, integrity, offline) is checked for shards on small synthetic files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakehub import FakeHub, cli_env, make_gguf
from gguf_tools import split_gguf
from llm_inproc.errors import BackendError, InvalidInputError, ModelLoadError, ModelNotFoundError
from llm_inproc.models.hub import download_model, list_cached_models
from subproc import run_cli

REPO = "someone/split-GGUF"
PREFIX = "Q8_0/m-Q8_0"  # large quantizations often live in a folder of their own
SHARDS = [f"{PREFIX}-{n:05d}-of-00003.gguf" for n in (1, 2, 3)]
FIRST_REF = f"hf:{REPO}/HEAD/{PREFIX}-00001-of-00003"
SHARDLESS_REF = f"hf:{REPO}/HEAD/{PREFIX}"
BIG = 12 * 1024 * 1024  # above huggingface_hub's 10 MiB chunk, so resume can show


@pytest.fixture(autouse=True)
def _no_saved_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see no HF_TOKEN and no saved login from the machine running them."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def _shard_bytes(n: int, size: int = 5000) -> bytes:
    return make_gguf(size=size, seed=100 + n)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_repo(
            REPO,
            {
                "main": {
                    **{name: _shard_bytes(n) for n, name in enumerate(SHARDS, 1)},
                    "m-Q4_K_M.gguf": make_gguf(seed=1),
                    "README.md": b"# split\n",
                }
            },
        )
        yield h


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _get(hub: FakeHub, ref: str, cache: Path, **kwargs: object) -> Path:
    return download_model(ref, cache, endpoint=hub.endpoint, progress=False, **kwargs)  # type: ignore[arg-type]


def _file_gets(hub: FakeHub) -> list[str]:
    """The files downloaded (GET on /resolve/), by repository path."""
    return [
        r.path.split("/resolve/main/", 1)[1]
        for r in hub.requests
        if r.method == "GET" and "/resolve/" in r.path
    ]


def _assert_side_by_side(first: Path) -> None:
    """llama.cpp opens ``<prefix>-0000N-of-00003.gguf`` next to the first shard."""
    assert first.name == "m-Q8_0-00001-of-00003.gguf"
    for n in (1, 2, 3):
        shard = first.with_name(f"m-Q8_0-{n:05d}-of-00003.gguf")
        assert shard.read_bytes() == _shard_bytes(n)


# -- references and downloads ------------------------------------------------------------


@pytest.mark.parametrize("ref", [FIRST_REF, SHARDLESS_REF])
def test_every_shard_is_fetched_and_the_first_returned(hub: FakeHub, cache: Path, ref: str) -> None:
    first = _get(hub, ref, cache)
    _assert_side_by_side(first)
    assert first.is_relative_to(cache / "hf")
    assert _file_gets(hub) == SHARDS, "each shard once, in order; nothing else"
    assert hub.requests[0].path == f"/api/models/{REPO}", "one listing decides the files"

    hub.clear_log()
    assert _get(hub, ref, cache) == first
    assert hub.requests == [], "a cached split model is used without asking the Hub"


def test_first_shard_and_shardless_name_share_the_download(hub: FakeHub, cache: Path) -> None:
    first = _get(hub, FIRST_REF, cache)
    hub.clear_log()
    assert _get(hub, SHARDLESS_REF, cache, offline=True) == first
    assert hub.requests == []


@pytest.mark.parametrize("ref", [FIRST_REF, SHARDLESS_REF])
def test_offline_second_call_makes_no_request(hub: FakeHub, cache: Path, ref: str) -> None:
    first = _get(hub, ref, cache)
    hub.clear_log()
    assert _get(hub, ref, cache, offline=True, update=True) == first
    assert hub.requests == []


def test_offline_with_a_shard_missing_from_the_cache(hub: FakeHub, cache: Path) -> None:
    first = _get(hub, FIRST_REF, cache)
    first.with_name("m-Q8_0-00003-of-00003.gguf").unlink()
    hub.clear_log()
    for ref in (FIRST_REF, SHARDLESS_REF):
        with pytest.raises(ModelNotFoundError, match="offline mode"):
            _get(hub, ref, cache, offline=True)
    assert hub.requests == []
    assert _get(hub, FIRST_REF, cache) == first, "online, the missing shard is linked again"
    _assert_side_by_side(first)
    assert _file_gets(hub) == [], "its blob was still in the cache: no download"


def test_a_missing_shard_is_named_before_anything_is_downloaded(hub: FakeHub, cache: Path) -> None:
    hub.add_repo(REPO, {"main": {SHARDS[0]: _shard_bytes(1), SHARDS[2]: _shard_bytes(3)}})
    for ref in (FIRST_REF, SHARDLESS_REF):
        with pytest.raises(ModelNotFoundError) as info:
            _get(hub, ref, cache)
        message = str(info.value)
        assert "has 3 shards" in message and SHARDS[1] in message
        assert SHARDS[0] not in message.split("lacks", 1)[1]
    assert _file_gets(hub) == []


def test_a_missing_first_shard_lists_what_is_there(hub: FakeHub, cache: Path) -> None:
    hub.add_repo(REPO, {"main": {SHARDS[1]: _shard_bytes(2), "m-Q4_K_M.gguf": make_gguf()}})
    with pytest.raises(
        ModelNotFoundError, match=re.escape("no Q8_0/m-Q8_0-00001-of-00003.gguf in")
    ):
        _get(hub, FIRST_REF, cache)


def test_missing_quantization_lists_a_split_model_once(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        _get(hub, f"hf:{REPO}/HEAD/m-Q5_K_M", cache)
    message = str(info.value)
    listed = message.split("available quantizations: ")[1].split(" (")[0]
    assert listed == "Q8_0, Q4_K_M", "the three shards count once; most bits first"
    assert f"for example hf:{REPO}/HEAD/Q8_0/m-Q8_0)" in message, "the shard-less name works"
    assert _file_gets(hub) == []


def test_a_later_shard_is_refused_before_any_request(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(InvalidInputError, match="not the first shard"):
        _get(hub, f"hf:{REPO}/HEAD/{PREFIX}-00002-of-00003", cache)
    assert hub.requests == []


def test_two_splits_under_one_name_are_refused(hub: FakeHub, cache: Path) -> None:
    other = f"{PREFIX}-00001-of-00002.gguf"
    hub.add_repo(
        REPO, {"main": {**{n: _shard_bytes(i) for i, n in enumerate(SHARDS)}, other: b"x"}}
    )
    with pytest.raises(ModelNotFoundError, match="several split models"):
        _get(hub, SHARDLESS_REF, cache)
    assert _file_gets(hub) == []


def test_update_checks_every_shard_without_downloading_again(hub: FakeHub, cache: Path) -> None:
    first = _get(hub, SHARDLESS_REF, cache)
    hub.clear_log()
    assert _get(hub, SHARDLESS_REF, cache, update=True) == first
    assert [r.method for r in hub.requests] == ["GET", "HEAD", "HEAD", "HEAD"]


def test_list_cached_models_shows_a_split_model_once(hub: FakeHub, cache: Path) -> None:
    first = _get(hub, SHARDLESS_REF, cache)
    (model,) = list_cached_models(cache)
    assert model.ref == FIRST_REF
    assert model.path == first
    assert model.size == 3 * 5000, "the size of every shard"


# -- integrity and resume, as for one file ---------------------------------------------------


def test_a_corrupt_shard_is_detected_and_deleted(hub: FakeHub, cache: Path) -> None:
    hub.corrupt(REPO, SHARDS[1])
    with pytest.raises(ModelLoadError, match=r"m-Q8_0-00002-of-00003\.gguf is corrupt: sha256"):
        _get(hub, FIRST_REF, cache)
    sha = hashlib.sha256(_shard_bytes(2)).hexdigest()
    storage = cache / "hf" / "models--someone--split-GGUF"
    assert not (storage / "blobs" / sha).exists()
    assert not list(storage.rglob("m-Q8_0-00002-of-00003.gguf")), "nothing under its name"

    hub.corrupt(REPO, SHARDS[1], enabled=False)
    hub.clear_log()
    _assert_side_by_side(_get(hub, FIRST_REF, cache))
    assert _file_gets(hub) == [SHARDS[1]], "the good shards were kept"


def test_a_cached_shard_changed_on_disk_is_fetched_again(hub: FakeHub, cache: Path) -> None:
    first = _get(hub, FIRST_REF, cache)
    blob = first.with_name("m-Q8_0-00003-of-00003.gguf").resolve()
    blob.chmod(0o644)
    blob.write_bytes(b"GGUF" + b"\0" * 4996)  # same size, other bytes
    hub.clear_log()
    _assert_side_by_side(_get(hub, FIRST_REF, cache))
    assert _file_gets(hub) == [SHARDS[2]]


def test_an_interrupted_shard_resumes_on_the_next_call(hub: FakeHub, cache: Path) -> None:
    big = make_gguf(size=BIG, seed=77)
    hub.add_repo(
        REPO, {"main": {SHARDS[0]: _shard_bytes(1), SHARDS[1]: big, SHARDS[2]: _shard_bytes(3)}}
    )
    hub.cut_connection(REPO, SHARDS[1], after=11 * 1024 * 1024, then_status=500)
    with pytest.raises(BackendError, match="HTTP 500"):
        _get(hub, SHARDLESS_REF, cache)
    (part,) = (cache / "partial").glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < BIG

    hub.clear_log()
    first = _get(hub, SHARDLESS_REF, cache)
    assert first.with_name("m-Q8_0-00002-of-00003.gguf").read_bytes() == big
    (get,) = [r for r in hub.downloads(SHARDS[1])]
    assert get.header("Range") == f"bytes={kept}-", "continued where the first call stopped"
    assert _file_gets(hub) == SHARDS[1:], "shard 1 was already complete"


def test_cli_pull_then_offline_with_hf_hub_offline(hub: FakeHub, cache: Path) -> None:
    pulled = run_cli("pull", SHARDLESS_REF, env=cli_env(hub, cache), timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    first = Path(pulled.stdout.strip())
    _assert_side_by_side(first)
    hub.clear_log()
    offline = run_cli("pull", SHARDLESS_REF, env=cli_env(hub, cache, HF_HUB_OFFLINE="1"))
    assert offline.returncode == 0, offline.stderr
    assert Path(offline.stdout.strip()) == first
    assert hub.requests == [], "HF_HUB_OFFLINE=1 makes no request"


# -- a real split model, loaded by llama.cpp ---------------------------------------------


@pytest.fixture(scope="module")
def gemma_shards(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Gemma 3 270M (Q4_K_M) in three shards."""
    out = tmp_path_factory.mktemp("split") / "gemma-3-270m-Q4_K_M.gguf"
    return split_gguf(model_path, out, 3)


@pytest.mark.model
def test_real_split_model_downloads_and_loads(
    gemma_shards: list[Path], cache: Path, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi

    from llm_inproc import KnownLLM, Message, Options, Session, default_config
    from llm_inproc.models.resolve import resolve_model

    repo = "someone/gemma-split-GGUF"
    names = {f"Q4_K_M/{p.name}": p for p in gemma_shards}
    # Gemma 3 270M is a base model: prompt it through its raw encoding, as the catalogue does.
    (gemma,) = [k for k in default_config().known_llms if "gemma-3-270m" in k.source]
    known = KnownLLM(source=f"hf:{repo}/HEAD/", prompt_encoding=gemma.prompt_encoding)
    with FakeHub() as hub:
        hub.add_repo(repo, {"main": names})
        ref = f"hf:{repo}/HEAD/Q4_K_M/gemma-3-270m-Q4_K_M"  # the shard-less name
        first = resolve_model(ref, cache, hf=lambda: HfApi(endpoint=hub.endpoint), progress=False)
        assert first.name == "gemma-3-270m-Q4_K_M-00001-of-00003.gguf"
        for shard in gemma_shards:
            assert first.with_name(shard.name).stat().st_size == shard.stat().st_size
        assert len(_file_gets(hub)) == 3

        hub.clear_log()
        options = Options(model=f"{ref}-00001-of-00003", context_length=512)
        with Session(options, cache_dir=cache, known_llms=[known]) as session:
            reply = session.prompt([Message("user", "Name a colour.")], max_tokens=8, temperature=0)
        assert reply.strip(), reply
        assert hub.requests == [], "loaded from the cache, every shard found by llama.cpp"
