"""Embedding routes of our server against the real llama-server (same llama.cpp sources,
same model): the same vectors (cosine >= 0.9999 on SmolLM2; 0.9998 on Gemma, whose
kernels are not batch-invariant at 1e-4: see test_embed), the same shapes, statuses and
error types; and a Session on ``Options.remote`` embedding through either server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llm_inproc import InvalidInputError, Options, Session
from llm_inproc.server.flags import settings_from_args
from servers import (
    Answer,
    Server,
    both,
    env_without_key,
    request,
    start_llama_server,
    start_ours,
)
from test_embed import SMOL_BOUND, TEXTS, cosines

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

COMMON = ("-c", "1024", "-np", "1", "-t", "1")
LONG = "The history of the river valley is long. " * 58  # 523 tokens: two of our batches
# (512 each), and past Gemma's 512-token sliding window.
GEMMA_PEER_BOUND = 0.999  # Gemma against llama-server: see test_gemma_vectors_equal_llama_servers


def _theirs(binary: Path, model: Path, log: Path, repack: list[str], *flags: str) -> Any:
    # -ub 1024: llama-server pools a text within one ubatch, so it must hold LONG whole.
    batch = ("-ub", "1024", "-b", "1024")
    return start_llama_server(binary, model, log, *COMMON, *batch, *repack, *flags)


@pytest.fixture(scope="module")
def theirs(
    llama_server_binary: Path,
    repack_flags: list[str],
    chat_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    flags = ("--embedding", "--pooling", "mean")
    with _theirs(llama_server_binary, chat_model_path, log, repack_flags, *flags) as s:
        yield s


@pytest.fixture(scope="module")
def ours(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("ours") / "server.log"
    flags = ("--embeddings", "--pooling", "mean")
    with start_ours(chat_model_path, log, *COMMON[:4], *flags, env=env_without_key()) as s:
        yield s


@pytest.fixture(scope="module")
def theirs_plain(
    llama_server_binary: Path,
    repack_flags: list[str],
    chat_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """No --pooling: the model names none, so one vector per token."""
    log = tmp_path_factory.mktemp("llama-server-plain") / "server.log"
    with _theirs(llama_server_binary, chat_model_path, log, repack_flags, "--embedding") as s:
        yield s


@pytest.fixture(scope="module")
def ours_plain(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("ours-plain") / "server.log"
    with start_ours(chat_model_path, log, *COMMON[:4], "--embedding", env=env_without_key()) as s:
        yield s


def _both(ours: Server, theirs: Server, path: str, body: Any) -> tuple[Answer, Answer]:
    return both(ours, theirs, "POST", path, body=body, timeout=180)


def _vectors(answer: Answer) -> np.ndarray:
    assert answer.status == 200, answer.text
    return np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)


def test_vectors_equal_llama_servers(ours: Server, theirs: Server, chat_session: Any) -> None:
    # A text past one batch is Gemma's test, below: the same path, and its sliding window.
    texts = TEXTS[:16]
    with ThreadPoolExecutor(1) as pool:
        answers = pool.submit(_both, ours, theirs, "/v1/embeddings", {"input": texts})
        local = chat_session.embed(texts)  # meanwhile, in this process
        a, b = answers.result()
    mine, real = _vectors(a), _vectors(b)
    assert cosines(mine, real).min() >= SMOL_BOUND
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    assert a.json()["usage"] == b.json()["usage"]
    assert cosines(local, real).min() >= SMOL_BOUND


def test_gemma_vectors_equal_llama_servers(
    llama_server_binary: Path,
    repack_flags: list[str],
    model_path: Path,
    session: Any,
    tmp_path: Path,
) -> None:
    flags = ("--embedding", "--pooling", "mean")
    texts = [*TEXTS[:4], LONG]

    def peer() -> np.ndarray:
        with _theirs(
            llama_server_binary, model_path, tmp_path / "g.log", repack_flags, *flags
        ) as g:
            return _vectors(
                request(g.port, "POST", "/v1/embeddings", {"input": texts}, timeout=180)
            )

    # llama-server starts and embeds in its own process while this one embeds.
    with ThreadPoolExecutor(1) as pool:
        real = pool.submit(peer)
        mine = session.embed(texts)
    # llama-server batches these texts its own way, and the CPU kernels are not
    # batch-invariant: on one CPU the long text's cosine was 0.99968 (most are 1.0000).
    # A wrong pooling or a missed token gives well under 0.99, so this still tells.
    assert cosines(mine, real.result()).min() >= GEMMA_PEER_BOUND


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/embedding", {"content": "hello world"}),
        ("/embeddings", {"content": ["hello", "world"]}),
        ("/embedding", {"input": "hello world"}),
        ("/v1/embeddings", {"input": "hello world"}),
        ("/v1/embeddings", {"input": ["hello", "big world"], "model": "x"}),
        ("/v1/embeddings", {"input": [504, 3216, 905]}),
        ("/v1/embeddings", {"input": [[504, 3216], [905]]}),
        ("/v1/embeddings", {"input": ["hello", [905, 3216]]}),
        ("/v1/embeddings", {"input": "hello", "encoding_format": "base64"}),
        ("/v1/embeddings", {"input": "hello", "embd_normalize": -1}),
        ("/v1/embeddings", {"input": "hello", "content": "x"}),
    ],
)
def test_same_answers(ours: Server, theirs: Server, path: str, body: Any) -> None:
    a, b = _both(ours, theirs, path, body)
    assert (a.status, b.status) == (200, 200), (a.text, b.text)
    mine, real = a.json(), b.json()
    if isinstance(real, list):  # native: [{"index", "embedding": [[...]]}]
        assert [sorted(x) for x in mine] == [sorted(x) for x in real]
        for x, y in zip(mine, real, strict=True):
            assert cosines(np.array(x["embedding"]), np.array(y["embedding"])).min() >= SMOL_BOUND
        return
    assert sorted(mine) == sorted(real)
    assert mine["usage"] == real["usage"]
    if "model" in body:
        assert mine["model"] == real["model"] == body["model"]
    for x, y in zip(mine["data"], real["data"], strict=True):
        assert sorted(x) == sorted(y) and x["index"] == y["index"]
        vx, vy = x["embedding"], y["embedding"]
        if isinstance(vy, str):
            vx = np.frombuffer(base64.b64decode(vx), dtype="<f4")
            vy = np.frombuffer(base64.b64decode(vy), dtype="<f4")
        assert cosines(np.array(vx), np.array(vy)) >= SMOL_BOUND
        assert np.allclose(np.linalg.norm(vx), np.linalg.norm(vy), rtol=1e-3)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"input": []}),
        ("/v1/embeddings", {}),
        ("/v1/embeddings", {"input": "x", "encoding_format": "bits"}),
        ("/v1/embeddings", {"input": "word " * 1200}),
        ("/embedding", {"content": ["fine", "word " * 1200]}),
        ("/rerank", {"query": "q", "documents": ["a"]}),
    ],
)
def test_same_errors(ours: Server, theirs: Server, path: str, body: Any) -> None:
    a, b = _both(ours, theirs, path, body)
    assert a.status == b.status, (a.text, b.text)
    assert a.json()["error"]["type"] == b.json()["error"]["type"]


def test_a_malformed_input_is_a_400(ours: Server, theirs: Server) -> None:
    # llama-server throws from its tokenizer (a 500); a client's mistake is a 400 here, as
    # for every malformed body of our server (server/parse.py). Same message.
    a, b = _both(ours, theirs, "/v1/embeddings", {"input": [{"foo": 1}]})
    assert (a.status, b.status) == (400, 500)
    assert a.json()["error"]["message"] == b.json()["error"]["message"]


def test_pooling_none_gives_token_vectors(ours_plain: Server, theirs_plain: Server) -> None:
    a, b = _both(ours_plain, theirs_plain, "/embedding", {"content": ["hello big world", "x"]})
    assert (a.status, b.status) == (200, 200)
    assert len(a.json()[0]["embedding"]) == 3  # one vector per token
    for x, y in zip(a.json(), b.json(), strict=True):
        mine, real = np.array(x["embedding"]), np.array(y["embedding"])
        assert mine.shape == real.shape
        assert cosines(mine, real).min() >= SMOL_BOUND
    a, b = _both(ours_plain, theirs_plain, "/v1/embeddings", {"input": "hello"})
    assert (a.status, b.status) == (400, 400)
    assert a.json()["error"]["message"] == b.json()["error"]["message"]


def test_a_remote_session_embeds_through_either_server(
    ours: Server, theirs: Server, theirs_plain: Server, chat_session: Any
) -> None:
    def through(server: Server) -> tuple[np.ndarray, np.ndarray]:
        with Session(Options(remote=f"127.0.0.1:{server.port}")) as remote:
            with pytest.raises(InvalidInputError, match="--pooling"):
                remote.embed("x", pooling="last")
            # Started with --pooling mean: its one row per text is no token vector.
            with pytest.raises(InvalidInputError, match="restart it with --pooling none"):
                remote.embed(["x", "hello big world"], pooling="none")
            return remote.embed(TEXTS[:8]), remote.embed(TEXTS[0], normalize=False)

    # Through both servers at once, and in this process meanwhile: three processes.
    with ThreadPoolExecutor(2) as pool:
        asked = [pool.submit(through, server) for server in (ours, theirs)]
        local = chat_session.embed(TEXTS[:8])
        answers = [f.result() for f in asked]
    for v, raw in answers:
        assert v.shape == local.shape and cosines(v, local).min() >= SMOL_BOUND
        assert not np.isclose(np.linalg.norm(raw), 1.0)
    with Session(Options(remote=f"127.0.0.1:{theirs_plain.port}")) as remote:
        rows = remote.embed(["hello big world"], pooling="none", normalize=False)
        assert rows[0].shape == (len(chat_session.tokenize("hello big world")), 576)


def test_embedding_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from llm_inproc.server.flags import add_server_flags

    def parse(*argv: str) -> Any:
        p = argparse.ArgumentParser()
        add_server_flags(p)
        return settings_from_args(p.parse_args(list(argv)))

    s = parse()
    assert (s.embedding, s.pooling, s.reranking) == (False, "", False)
    s = parse("--embeddings", "--pooling", "last")
    assert (s.embedding, s.pooling, s.reranking) == (True, "last", False)
    s = parse("--rerank")
    assert (s.embedding, s.pooling, s.reranking) == (True, "rank", True)
    monkeypatch.setenv("LLAMA_ARG_EMBEDDINGS", "1")
    monkeypatch.setenv("LLAMA_ARG_POOLING", "cls")
    s = parse()
    assert (s.embedding, s.pooling) == (True, "cls")
