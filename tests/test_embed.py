"""Session.embed / aembed / rerank in-process, on the real embedded models.

Tolerances: llama.cpp's CPU kernels are not batch-invariant (a token's hidden state
depends in its last bits on what else is in the batch and where its KV cells lie), so
vectors are compared by cosine. SmolLM2 gives identical vectors alone and in a batch;
Gemma 3 270M (Q4_K_M), whose activations are very large, gives a cosine of 0.99989 at
worst over 64 texts (measured), hence its bound of 0.9998.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gguf_tools import _kv_scalar, _write, read_layout
from llm_inproc import (
    ContextOverflowError,
    InvalidInputError,
    Message,
    Options,
    RankedDocument,
    Session,
)
from llm_inproc.models.gguf_header import read_gguf_header

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

TEXTS = [
    f"Sentence {i}: the {'quick brown fox' if i % 3 else 'lazy dog'} number {i * 7}"
    for i in range(64)
]
SMOL_BOUND = 0.9999
GEMMA_BOUND = 0.9998
_UINT32 = 4


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.asarray((a * b).sum(axis=-1))


def with_pooling(src: Path, dst: Path, pooling: int) -> Path:
    """A copy of the GGUF ``src`` whose metadata names pooling type ``pooling``
    (``<arch>.pooling_type``, a uint32, as convert_hf_to_gguf writes it)."""
    layout = read_layout(src)
    key = f"{read_gguf_header(src).architecture}.pooling_type"
    kv = [raw for k, raw in layout.kv if k != key] + [_kv_scalar(key, _UINT32, "I", pooling)]
    _write(src, dst, layout, kv, layout.tensors)
    return dst


@pytest.fixture(scope="module")
def small(cache_dir: Path, model_path: Path) -> Iterator[Session]:
    """Gemma with a 256-token context, for the overflow cases (it embeds whole contexts
    twice as fast as SmolLM2, whose Q4_1 weights evaluate prompts slowly on CPUs)."""
    with Session(Options(model=str(model_path), context_length=256), cache_dir=cache_dir) as s:
        yield s


def test_rows_are_float32_unit_vectors(chat_session: Any) -> None:
    v = chat_session.embed(["hello world", "the cat sat on the mat", "ok"])
    assert v.dtype == np.float32 and v.shape == (3, 576)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    one = chat_session.embed("hello world")
    assert one.shape == (576,)
    assert cosines(one, v[0]) >= SMOL_BOUND


def test_normalize_false_gives_the_raw_vectors(chat_session: Any) -> None:
    raw = chat_session.embed(TEXTS[:4], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    unit = chat_session.embed(TEXTS[:4])
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)


@pytest.mark.parametrize(
    ("fixture", "bound"), [("chat_session", SMOL_BOUND), ("session", GEMMA_BOUND)]
)
def test_alone_equals_within_a_batch_of_32(
    request: pytest.FixtureRequest, fixture: str, bound: float
) -> None:
    s = request.getfixturevalue(fixture)
    batch = s.embed(TEXTS[:32])
    alone = np.array([s.embed(t) for t in TEXTS[:32:8]])
    assert cosines(alone, batch[::8]).min() >= bound


def test_pooling_none_gives_each_token_vector(chat_session: Any) -> None:
    per_token = chat_session.embed(TEXTS[:3], pooling="none", normalize=False)
    assert isinstance(per_token, list) and len(per_token) == 3
    for text, rows in zip(TEXTS[:3], per_token, strict=True):
        assert rows.shape == (len(chat_session.tokenize(text)), 576)
    mean = chat_session.embed(TEXTS[:3], pooling="mean", normalize=False)
    last = chat_session.embed(TEXTS[:3], pooling="last", normalize=False)
    cls = chat_session.embed(TEXTS[:3], pooling="cls", normalize=False)
    for i, rows in enumerate(per_token):
        assert cosines(mean[i], rows.mean(axis=0)) >= SMOL_BOUND
        assert cosines(last[i], rows[-1]) >= SMOL_BOUND
        assert cosines(cls[i], rows[0]) >= SMOL_BOUND
    unit = chat_session.embed(TEXTS[0], pooling="none")
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_a_text_longer_than_the_context_names_both_numbers(small: Session) -> None:
    long = "word " * 400
    n = len(small.tokenize(long))
    with pytest.raises(
        ContextOverflowError, match=rf"text 1 is {n} tokens but the context holds 256"
    ):
        small.embed(["short", long])
    many = ["short"] * 300 + [long]
    with pytest.raises(ContextOverflowError, match=rf"text 300 is {n} tokens"):
        small.embed(many)
    cut = small.embed(long, truncate=True)
    first = small.detokenize(small.tokenize(long)[:256])
    assert cosines(cut, small.embed(first)) >= 0.999  # the same tokens, retokenized


def test_an_iterator_streams_through_with_progress(chat_session: Any) -> None:
    # Three chunks (256 texts each) of an iterator of unknown length. One-token filler keeps
    # the batches cheap; a marked text in each chunk shows its row lands in its place.
    marked = {0: "The first text", 300: "one in the middle", 512: "the very last"}
    seen: list[tuple[int, int | None]] = []
    texts = (marked.get(i, "x") for i in range(513))
    v = chat_session.embed(texts, progress=lambda done, total: seen.append((done, total)))
    assert v.shape == (513, 576)
    assert seen == [(256, None), (512, None), (513, None)]
    listed: list[tuple[int, int | None]] = []
    chat_session.embed(["x"] * 257, progress=lambda d, t: listed.append((d, t)))
    assert listed == [(256, 257), (257, 257)]
    apart = chat_session.embed(list(marked.values()))
    assert cosines(v[list(marked)], apart).min() >= SMOL_BOUND


@pytest.mark.parametrize(
    ("texts", "kw", "match"),
    [
        ([], {}, "no texts"),
        ([1], {}, "text 0 is a int"),
        (b"x", {}, "bytes"),
        (["x"], {"pooling": "max"}, "pooling must be"),
        (["x"], {"pooling": "rank"}, "rerank"),
        (["x"], {"truncate": "yes"}, "True or False"),
    ],
)
def test_bad_input_is_refused(
    chat_session: Any, texts: Any, kw: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        chat_session.embed(texts, **kw)


def test_aembed_equals_embed(chat_session: Any) -> None:
    async def go() -> Any:
        return await chat_session.aembed(TEXTS[:8])

    assert cosines(asyncio.run(go()), chat_session.embed(TEXTS[:8])).min() >= SMOL_BOUND


def test_embedding_does_not_disturb_generation_or_the_slots(chat_session: Any) -> None:
    question = [Message("user", "Count from one to twenty in words.")]
    expected = chat_session.prompt(question, max_tokens=24, temperature=0)
    cached = [s.n_cached for s in chat_session.slots()]
    stream = chat_session.prompt_streaming(question, max_tokens=24, temperature=0)
    it = iter(stream)
    pieces = [next(it)]  # generating now: the embedding's batches run between its steps
    done = threading.Event()
    vectors: list[Any] = []
    texts = [f"{i}" for i in range(100)]  # two short batches (64 texts at most each)

    def embed() -> None:
        vectors.append(chat_session.embed(texts))
        done.set()

    worker = threading.Thread(target=embed)
    worker.start()
    pieces += list(it)
    assert done.wait(120)
    worker.join()
    assert "".join(pieces).strip() == expected
    assert vectors[0].shape == (100, 576)
    # The embedding context has cells of its own: the slots hold what they held.
    assert [s.n_cached for s in chat_session.slots()] == cached


def test_the_gguf_pooling_type_is_the_default(
    chat_session: Any, chat_model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    copy = with_pooling(chat_model_path, tmp_path / "smol-last.gguf", 3)  # LAST
    with Session(Options(model=str(copy), context_length=512), cache_dir=cache_dir) as s:
        assert s.model_pooling == "last"
        # llama.cpp pools this one itself: the same vectors as our own pooling of the
        # original file's token vectors.
        assert cosines(s.embed(TEXTS[:8]), chat_session.embed(TEXTS[:8], pooling="last")).min() >= (
            SMOL_BOUND
        )
        mean = s.embed(TEXTS[:2], pooling="mean")
        assert cosines(mean, chat_session.embed(TEXTS[:2], pooling="mean")).min() >= SMOL_BOUND


def test_rerank_refuses_a_model_that_is_not_a_reranker(chat_session: Any) -> None:
    with pytest.raises(InvalidInputError, match="not a reranker"):
        chat_session.rerank("which fruit?", ["apple", "car"])


def test_rerank_refuses_rank_pooling_without_a_classification_head(
    chat_model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    # llama.cpp loads this copy (pooling is only metadata), but its llama architecture has
    # no cls/cls.output tensors: rank pooling would return a hidden-state value as the
    # "score". No reranker GGUF ships on PyPI, so this error is what can be tested here.
    copy = with_pooling(chat_model_path, tmp_path / "smol-rank.gguf", 4)  # RANK
    with Session(Options(model=str(copy), context_length=512), cache_dir=cache_dir) as s:
        assert s.model_pooling == "rank"
        with pytest.raises(InvalidInputError, match="classification head"):
            s.rerank("which fruit?", ["apple", "car"])


@pytest.mark.parametrize(
    ("query", "documents", "top_n", "match"),
    [
        (1, ["a"], None, "query must be a str"),
        ("q", [], None, "documents is empty"),
        ("q", "abc", None, "list of str"),
        ("q", ["a"], 0, "top_n"),
    ],
)
def test_rerank_checks_its_arguments_first(
    chat_session: Any, query: Any, documents: Any, top_n: Any, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        chat_session.rerank(query, documents, top_n)


def test_ranked_document_is_exported() -> None:
    r = RankedDocument(index=2, score=0.5, document="x")
    assert (r.index, r.score, r.document) == (2, 0.5, "x")


def test_cli_writes_json_lines_and_npy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chat_session: Any
) -> None:
    import json

    from llm_inproc.cli import main

    assert main(["embed", "hello world", "second text", "--context-length", "512"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["index"] for x in lines] == [0, 1]
    v = np.array([x["embedding"] for x in lines], dtype=np.float32)
    assert cosines(v, chat_session.embed(["hello world", "second text"])).min() >= SMOL_BOUND
    # One line past a chunk of 256, then a blank line (skipped). One-token filler keeps it
    # cheap; the marked lines show the rows of both chunks land in their places.
    marked = {0: "The first line", 256: "the last line"}
    src = tmp_path / "texts.txt"
    src.write_text("".join(marked.get(i, "x") + "\n" for i in range(257)) + "\n")
    out = tmp_path / "v.npy"
    assert main(["embed", "--file", str(src), "--out", str(out), "--context-length", "512"]) == 0
    rows = np.load(out)
    assert rows.shape == (257, 576)
    apart = chat_session.embed(list(marked.values()))
    assert cosines(rows[list(marked)], apart).min() >= SMOL_BOUND
    assert "embedded 257 texts" in capsys.readouterr().err
    assert main(["embed"]) == 1
    assert "nothing to embed" in capsys.readouterr().err
