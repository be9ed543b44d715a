"""Weight repacking: the probe that keeps an AMX-reporting CPU that cannot run AMX from
killing the process, its cached verdict, and the override.

The child's death is a real SIGILL in a real child process; the real probe runs on the
real model wherever the llama.cpp build carries AMX kernels.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from llm_inproc import Message, Options, Role, Session
from llm_inproc.backends.inproc.repack import (
    RepackProbe,
    Verdict,
    build_has_amx,
    fingerprint,
    resolve_repack,
)
from llm_inproc.host.sysinfo import llama_system_info

SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
EXIT_OK = [sys.executable, "-c", "import sys"]
EXIT_FAIL = [sys.executable, "-c", "raise SystemExit(7)"]
AMX_INFO = "CPU : SSE3 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 |"


def test_a_real_sigill_in_the_child_turns_repacking_off_and_is_remembered(
    tmp_path: Path, model_path: Path
) -> None:
    probe = RepackProbe(tmp_path, "k1", command=SIGILL)
    verdict = probe.verdict(model_path)
    assert verdict == Verdict(False, "a prompt batch with repacking on died with SIGILL")
    saved = json.loads(probe.path.read_text())
    assert saved == {"safe": False, "reason": verdict.reason}
    # The verdict is read back: a child that would succeed is never started.
    again = RepackProbe(tmp_path, "k1", command=EXIT_OK)
    assert again.verdict(model_path) == verdict


def test_a_clean_probe_says_safe_and_another_machine_probes_again(
    tmp_path: Path, model_path: Path
) -> None:
    assert RepackProbe(tmp_path, "k2", command=EXIT_OK).verdict(model_path).safe
    # Another fingerprint (CPU, kernel or build) is another verdict.
    assert not RepackProbe(tmp_path, "k3", command=SIGILL).verdict(model_path).safe
    assert RepackProbe(tmp_path, "k2", command=SIGILL).verdict(model_path).safe


def test_a_probe_that_fails_without_a_signal_is_not_remembered(
    tmp_path: Path, model_path: Path
) -> None:
    probe = RepackProbe(tmp_path, "k4", command=EXIT_FAIL)
    verdict = probe.verdict(model_path)
    assert not verdict.safe and not verdict.conclusive  # off for this load: a crash costs more
    assert not probe.path.exists()
    assert RepackProbe(tmp_path, "k4", command=EXIT_OK).verdict(model_path).safe


def test_a_damaged_verdict_file_is_probed_again(tmp_path: Path, model_path: Path) -> None:
    probe = RepackProbe(tmp_path, "k5", command=EXIT_OK)
    probe.path.parent.mkdir(parents=True)
    probe.path.write_text("{not json")
    assert probe.cached() is None
    assert probe.verdict(model_path).safe
    assert probe.cached() == Verdict(True, "a prompt batch ran with repacking on")


def test_the_option_overrides_any_verdict_and_no_amx_means_no_probe(
    tmp_path: Path, model_path: Path
) -> None:
    # A cache dir where nothing could be written: no probe may run for these.
    assert resolve_repack(True, model_path, tmp_path, AMX_INFO) == (True, "set by Options.repack")
    assert resolve_repack(False, model_path, tmp_path, AMX_INFO)[0] is False
    no_amx = AMX_INFO.replace("AMX_INT8 = 1", "AVX512_BF16 = 1")
    assert resolve_repack(None, model_path, tmp_path, no_amx)[0] is True
    assert not (tmp_path / "probes").exists()
    assert build_has_amx(AMX_INFO) and not build_has_amx(no_amx)


def test_the_fingerprint_names_the_build() -> None:
    assert fingerprint(AMX_INFO) == fingerprint(AMX_INFO)
    assert fingerprint(AMX_INFO) != fingerprint(AMX_INFO + " X = 1")


def test_the_probe_that_dies_warns_once_and_later_loads_only_read_it(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "llm_inproc")
    first = resolve_repack(None, model_path, tmp_path, AMX_INFO, probe_command=SIGILL)
    assert first == (False, "a prompt batch with repacking on died with SIGILL")
    # The next load reads the cached verdict: a child that would succeed never starts.
    assert resolve_repack(None, model_path, tmp_path, AMX_INFO, probe_command=EXIT_OK) == first
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "repacking is off" in r.msg]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO]
    warning = said[0][1]
    assert "SIGILL" in warning and "--repack" in warning and "repack=True" in warning
    assert str(tmp_path / "probes") in warning


@pytest.mark.model
def test_repack_off_loads_and_answers_a_long_prompt(tmp_path: Path, model_path: Path) -> None:
    opts = Options(model=str(model_path), context_length=512, parallel=1, repack=False)
    with Session(opts, cache_dir=tmp_path) as s:
        assert s.model_info.repack is False
        text = " ".join(["Ships came in at dawn."] * 20)
        reply = s.complete([Message(Role.USER, text)], max_tokens=2, temperature=0)
        assert reply.prompt.count > 64 and reply.generated.count >= 1
    assert not (tmp_path / "probes").exists()  # forced: no probe ran


@pytest.mark.model
def test_the_real_probe_decides_and_a_long_first_prompt_survives(
    tmp_path: Path, model_path: Path
) -> None:
    """On every machine: a prompt batch large enough for ggml's AMX kernels, in-process,
    with the automatic choice. Where the build has AMX, the real probe ran first."""
    info = llama_system_info()
    opts = Options(model=str(model_path), context_length=1024, parallel=1)
    with Session(opts, cache_dir=tmp_path) as s:
        text = " ".join(["The lighthouse keeper counted the ships at dawn."] * 20)
        assert s.count_tokens([Message(Role.USER, text)]) > 128
        reply = s.complete([Message(Role.USER, text)], max_tokens=4, temperature=0)
        assert reply.prompt.count > 128 and reply.generated.count >= 1
        if build_has_amx(info):
            verdict = RepackProbe(tmp_path, fingerprint(info)).cached()
            assert verdict is not None, "the probe ran and left its verdict"
            assert s.model_info.repack is verdict.safe
        else:
            assert s.model_info.repack is True
            assert not (tmp_path / "probes").exists()
