"""Conversations saved to disk and brought back after a restart: Python methods, and
llama-server's ``POST /slots/{id}?action=save|restore|erase`` on our server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_inproc import InvalidInputError, Message, Options, Role, Session
from llm_inproc.models.embedded import GEMMA_BASE
from servers import Answer, Server, request, start_ours

pytestmark = [pytest.mark.timeout(300), pytest.mark.model]

SYSTEM = Message(
    Role.SYSTEM,
    "You are the help desk of a lighthouse museum. "
    + " ".join(f"Rule {i}: answer visitors politely and briefly." for i in range(30)),
)


def _opts(**kw: object) -> Options:
    return Options(model=GEMMA_BASE.ref, context_length=2048, parallel=2, **kw)  # type: ignore[arg-type]


def test_the_first_turn_after_a_restart_evaluates_only_the_new_text(
    cache_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    first = [SYSTEM, Message(Role.USER, "When does the museum open?")]
    saved = tmp_path / "bot.kv"
    with Session(_opts(), cache_dir=cache_dir) as s:
        reply = s.complete(first, max_tokens=8, temperature=0)
        history = reply.prompt.count + reply.cached_tokens
        assert s.save_conversations(saved) == 1
    assert saved.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["bot.kv"]  # no temporary file left

    later = [*first, Message(Role.ASSISTANT, reply.text), Message(Role.USER, "And on Sundays?")]
    with Session(_opts(), cache_dir=cache_dir) as s:
        assert s.load_conversations(saved) == 1
        m = s.get_metrics()
        assert m.prompt_cache_tokens >= history
        again = s.complete(later, max_tokens=4, temperature=0)
        assert again.cached_tokens >= history
        assert again.prompt.count <= s.count_tokens(later) - history
    with Session(_opts(), cache_dir=cache_dir) as cold:
        assert cold.complete(later, max_tokens=4, temperature=0).cached_tokens == 0


def test_a_file_from_another_kv_layout_or_a_damaged_one_changes_nothing(
    cache_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "q8.kv"
    with Session(_opts(cache_type_k="q8_0"), cache_dir=cache_dir) as other:
        other.complete([SYSTEM, Message(Role.USER, "Hi")], max_tokens=1, temperature=0)
        other.save_conversations(foreign)
    good = tmp_path / "good.kv"
    with Session(_opts(), cache_dir=cache_dir) as s:
        s.complete([SYSTEM, Message(Role.USER, "Hi")], max_tokens=1, temperature=0)
        s.save_conversations(good)
        data = good.read_bytes()
        (tmp_path / "short.kv").write_bytes(data[: len(data) // 2])
        (tmp_path / "junk.kv").write_bytes(b"\x00" * 100)
        (tmp_path / "head.kv").write_bytes(data[:21] + b"{not json\n" + data[-100:])
        before = s.get_metrics()
        cases = {
            "q8.kv": r"another model or KV layout \(differs in cache_types: \['q8_0', 'f16'\]",
            "short.kv": "truncated or damaged",
            "junk.kv": "not a llm-inproc state file",
            "head.kv": "damaged header",
            "missing.kv": "does not exist",
        }
        for name, message in cases.items():
            with pytest.raises(InvalidInputError, match=message):
                s.load_conversations(tmp_path / name)
        after = s.get_metrics()
        assert after.prompt_cache_tokens == before.prompt_cache_tokens
        assert after.kv_cache_tokens == before.kv_cache_tokens
        assert s.load_conversations(good) == 1  # the good one still loads


# -- the server's slot actions --------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slots") / "saved"  # the server creates it


@pytest.fixture(scope="module")
def saving(model_path: Path, saved_dir: Path) -> Iterator[Server]:
    log = saved_dir.parent / "server.log"
    args = ("-c", "2048", "-np", "1", "--slot-save-path", str(saved_dir))
    with start_ours(model_path, log, *args) as s:
        yield s


def _chat(server: Server) -> dict[str, object]:
    body = {
        "messages": [
            {"role": "system", "content": SYSTEM.content},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 2,
        "temperature": 0,
    }
    answer = request(server.port, "POST", "/v1/chat/completions", body)
    assert answer.status == 200, answer.text
    return answer.json()


def _slot(
    server: Server, action: str, body: dict[str, object] | None = None, slot: str = "0"
) -> Answer:
    return request(server.port, "POST", f"/slots/{slot}?action={action}", body or {})


def test_save_erase_restore_a_slot_as_llama_server_does(saving: Server, saved_dir: Path) -> None:
    first = _chat(saving)
    prompt_tokens = first["usage"]["prompt_tokens"]  # type: ignore[index]
    saved = _slot(saving, "save", {"filename": "desk.bin"})
    assert saved.status == 200, saved.text
    out = saved.json()
    assert out["id_slot"] == 0 and out["filename"] == "desk.bin"
    assert out["n_saved"] >= prompt_tokens and out["n_written"] > 0
    assert out["timings"]["save_ms"] >= 0
    assert (saved_dir / "desk.bin").stat().st_size == out["n_written"]

    erased = _slot(saving, "erase")
    assert erased.json() == {"id_slot": 0, "n_erased": out["n_saved"]}
    restored = _slot(saving, "restore", {"filename": "desk.bin"}).json()
    assert restored["n_restored"] == out["n_saved"] and restored["n_read"] > 0
    again = _chat(saving)
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
    assert cached >= prompt_tokens - 1


@pytest.mark.parametrize(
    ("slot", "action", "body", "message"),
    [
        ("0", "save", {"filename": "../escape.bin"}, "Invalid filename"),
        ("0", "save", {"filename": ""}, "Invalid filename"),
        ("0", "explode", {}, "Invalid action"),
        ("x", "erase", {}, "Invalid slot ID"),
        ("7", "erase", {}, "slot 7 does not exist"),
        ("0", "restore", {"filename": "nothing.bin"}, "not found"),
    ],
)
def test_bad_slot_actions_are_refused(
    saving: Server, slot: str, action: str, body: dict[str, object], message: str
) -> None:
    answer = _slot(saving, action, body, slot)
    assert answer.status == 400, answer.text
    assert message in answer.json()["error"]["message"]


def test_a_damaged_slot_file_is_refused_and_the_slot_kept(saving: Server, saved_dir: Path) -> None:
    _chat(saving)
    (saved_dir / "bad.bin").write_bytes(b"llm-inproc kv states\n{}\n")
    answer = _slot(saving, "restore", {"filename": "bad.bin"})
    assert answer.status == 400 and "damaged header" in answer.json()["error"]["message"]
    again = _chat(saving)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # type: ignore[index]


def test_slot_actions_need_a_save_path(model_path: Path, tmp_path: Path) -> None:
    with start_ours(model_path, tmp_path / "server.log", "-c", "512") as s:
        answer = request(s.port, "POST", "/slots/0?action=erase", {})
    assert answer.status == 501
    assert "--slot-save-path" in answer.json()["error"]["message"]


def test_a_remote_session_says_where_its_conversations_are(saving: Server, tmp_path: Path) -> None:
    with (
        Session(Options(remote=f"127.0.0.1:{saving.port}"), cache_dir=tmp_path) as remote,
        pytest.raises(InvalidInputError, match=r"needs the model in this process.*/slots"),
    ):
        remote.save_conversations(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_the_state_file_format_round_trips_and_refuses_unwritable_places(tmp_path: Path) -> None:
    from llm_inproc.backends.inproc.state_file import read_states, write_states

    me = {"model": "m", "n": 1}
    path = tmp_path / "s.kv"
    n = write_states(path, me, [([1, 2, 3], b"abc"), ([4], b"")])
    assert path.stat().st_size == n
    states = read_states(path, me)
    assert [(t, bytes(d)) for t, d in states] == [([1, 2, 3], b"abc"), ([4], b"")]
    with pytest.raises(InvalidInputError, match=r"differs in n: 1 there, 2 here"):
        read_states(path, {"model": "m", "n": 2})
    with pytest.raises(InvalidInputError, match=r"cannot write .*: .*check that .* exists"):
        write_states(tmp_path / "no" / "such" / "s.kv", me, [])
    with pytest.raises(InvalidInputError, match=r"cannot write"):
        write_states(tmp_path, me, [])  # a directory: nothing half-written is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.kv"]
