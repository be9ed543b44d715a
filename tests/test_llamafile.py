"""llamafiles as a model source: built here as Mozilla's tools build them, a shell stub
followed by a zip whose GGUF member is stored and aligned (``zipalign``), plus ``.args``."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from fakehub import FakeHub, make_gguf
from llm_inproc import InvalidInputError, ModelLoadError, Options, PackedFileRef, Session
from llm_inproc.models.llamafile import (
    apply_llamafile_args,
    extract_gguf,
    open_llamafile,
    plain_gguf,
)
from llm_inproc.models.resolve import resolve_model

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
STUB = b'#!/bin/sh\nexec llamafile-runtime "$0" "$@"\n'
ARGS = "-m\ngemma-3-270m-q4_k_m.gguf\n-c\n1024\n--host\n0.0.0.0\n-ngl\n9999\n...\n"
PROMPT = "<start_of_turn>user\nName three colours.<end_of_turn>\n<start_of_turn>model\n"


def build_llamafile(
    dest: Path, gguf: Path | bytes, *, align: int = 4096, args: str | None = ARGS
) -> Path:
    """``dest``: the stub, then a zip holding ``gguf`` stored at an ``align``-byte boundary
    (padded in its local header's extra field, as zipalign does), then ``.args``."""
    name = "gguf-model.gguf" if args is None else "gemma-3-270m-q4_k_m.gguf"
    with dest.open("wb") as f:
        f.write(STUB)
    with zipfile.ZipFile(dest, "a") as zf:  # appended after the stub, as a llamafile is
        assert zf.fp is not None
        header_at = zf.fp.tell()
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        data_at = header_at + 30 + len(name) + 6  # 6: the alignment extra block's header
        pad = (-data_at) % align if align > 1 else 1  # align=1: deliberately misaligned
        if align == 1 and data_at % 32 == 0:
            pad = 3
        info.extra = struct.pack("<HHH", 0xD935, 2 + pad, align) + b"\0" * pad
        if isinstance(gguf, bytes):
            zf.writestr(info, gguf)
        else:
            info.file_size = gguf.stat().st_size
            with zf.open(info, "w") as out, gguf.open("rb") as src:
                shutil.copyfileobj(src, out, 8 << 20)
        if args is not None:
            zf.writestr(".args", args)
    dest.chmod(0o755)
    return dest


@pytest.fixture(scope="module")
def llamafile(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llamafile(tmp_path_factory.mktemp("lf") / "gemma.llamafile", model_path)


def _greedy(model: str, cache_dir: Path, **kw: object) -> tuple[str, int]:
    from llm_inproc.backends.base import GenerationRequest
    from llm_inproc.sampling import Sampling

    with Session(Options(model=model, threads=2, **kw), cache_dir=cache_dir) as s:  # type: ignore[arg-type]
        request = GenerationRequest(Sampling(temperature=0.0, max_tokens=24), prompt=PROMPT)
        stream = s.generate(request)
        text = "".join(stream)
        return text, s.model_info.n_ctx


def test_the_gguf_is_found_stored_and_aligned(llamafile: Path, model_path: Path) -> None:
    found = open_llamafile(llamafile)
    assert found.member == "gemma-3-270m-q4_k_m.gguf"
    assert found.size == model_path.stat().st_size
    assert found.offset % 4096 == 0 and found.offset > len(STUB)
    assert found.stored and found.in_place
    assert found.args[:4] == ("-m", "gemma-3-270m-q4_k_m.gguf", "-c", "1024")


def test_a_session_loads_it_in_place_with_its_args_and_replies_as_the_plain_file(
    llamafile: Path, model_path: Path, tmp_path: Path
) -> None:
    from_llamafile, n_ctx = _greedy(str(llamafile), tmp_path)
    assert n_ctx == 1024  # -c 1024 from .args
    assert not (tmp_path / "llamafile").exists()  # loaded in place: nothing extracted
    plain, _ = _greedy(str(model_path), tmp_path, context_length=1024)
    assert from_llamafile == plain and from_llamafile.strip()


def test_explicit_options_win_over_args() -> None:
    args = ("-c", "1024", "-ngl", "9999", "-t", "3", "-fa", "on", "--host", "0.0.0.0")
    filled = apply_llamafile_args(Options(), args)
    assert (filled.context_length, filled.gpu_layers, filled.threads) == (1024, -1, 3)
    assert filled.flash_attention is True
    given = apply_llamafile_args(Options(context_length=2048, threads=1), args)
    assert (given.context_length, given.threads) == (2048, 1)
    assert apply_llamafile_args(Options(), ("-c", "many")).context_length == 0  # ignored


def test_a_misaligned_member_is_extracted_once_verified_and_reused(
    model_path: Path, tmp_path: Path
) -> None:
    lf = build_llamafile(tmp_path / "odd.llamafile", model_path, align=1)
    found = open_llamafile(lf)
    assert not found.in_place
    cache = tmp_path / "cache"
    text, _ = _greedy(str(lf), cache)  # the backend extracts it, then loads the copy
    assert text.strip()
    copy = plain_gguf(lf, cache)
    assert copy.parent == cache / "llamafile" and copy.stat().st_size == found.size
    manifest = copy.with_name(copy.name + ".json").read_text()
    assert GEMMA_SHA256 in manifest
    before = copy.stat().st_mtime_ns
    assert extract_gguf(found, cache) == copy and copy.stat().st_mtime_ns == before
    assert not list((cache / "llamafile").glob(".extract-*"))


def test_a_damaged_member_fails_its_check_and_leaves_no_file(tmp_path: Path) -> None:
    gguf = make_gguf(size=64 << 10)
    lf = build_llamafile(tmp_path / "bad.llamafile", gguf, args=None)
    found = open_llamafile(lf)
    with lf.open("r+b") as f:  # flip one byte of the stored GGUF
        f.seek(found.offset + found.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelLoadError, match="damaged"):
        extract_gguf(found, tmp_path / "cache")
    left = [p.name for p in (tmp_path / "cache" / "llamafile").iterdir()]
    assert all(name.endswith(".lock") for name in left), left  # no copy, no temporary file


def test_a_file_that_is_not_a_llamafile_says_so(tmp_path: Path) -> None:
    fake = tmp_path / "notes.llamafile"
    fake.write_text("#!/bin/sh\necho hello\n")
    with pytest.raises(InvalidInputError, match="not a llamafile"):
        resolve_model(str(fake), tmp_path)
    with pytest.raises(InvalidInputError, match="not a llamafile"):
        Session(Options(model=str(fake)), cache_dir=tmp_path)


def test_a_llamafile_without_a_gguf_says_so(tmp_path: Path) -> None:
    bare = tmp_path / "runtime.llamafile"
    bare.write_bytes(STUB)
    with zipfile.ZipFile(bare, "a") as zf:
        zf.writestr(".args", "--host\n0.0.0.0\n")
        zf.writestr("llamafile/README", "runtime only")
    with pytest.raises(ModelLoadError, match="holds no GGUF model"):
        resolve_model(str(bare), tmp_path)


def test_an_hf_reference_to_a_llamafile_downloads_it(tmp_path: Path) -> None:
    ref = PackedFileRef("hf:Mozilla/tiny-llamafile/HEAD/tiny.Q4_K_M.llamafile")
    ref.validate()
    assert ref.is_llamafile() and ref.filename() == "tiny.Q4_K_M.llamafile"
    PackedFileRef("hf:Mozilla/tiny-llamafile/HEAD/llava-v1.5-7b-q4.llamafile").validate()
    lf = build_llamafile(tmp_path / "tiny.llamafile", make_gguf(size=8192), args=None)
    from huggingface_hub import HfApi

    with FakeHub() as hub:
        hub.add_repo("Mozilla/tiny-llamafile", {"main": {"tiny.Q4_K_M.llamafile": lf}})
        cache = tmp_path / "cache"
        path = resolve_model(ref, cache, hf=lambda: HfApi(endpoint=hub.endpoint), progress=False)
        assert path.read_bytes() == lf.read_bytes()
        assert open_llamafile(path).size == 8192
        missing = PackedFileRef("hf:Mozilla/tiny-llamafile/HEAD/other.Q8_0.llamafile")
        with pytest.raises(FileNotFoundError, match=r"tiny\.Q4_K_M\.llamafile"):
            resolve_model(missing, cache, hf=lambda: HfApi(endpoint=hub.endpoint), progress=False)
