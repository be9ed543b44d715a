"""Tests for llm_inproc.metrics: Prometheus parsing, rendering and token rates."""

from __future__ import annotations

import datetime as dt
import logging
import random
import re

import pytest

from llm_inproc.errors import InvalidInputError
from llm_inproc.metrics import PROMETHEUS_CONTENT_TYPE, Metrics, TokenPerformance

# A page as llama-server (b6xxx) serves it on /metrics, including series we do not read.
LLAMA_SERVER_PAGE = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 22
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 0.054
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 128
# HELP llamacpp:tokens_predicted_seconds_total Predict process time
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 1.969
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 128
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode counter
llamacpp:n_busy_slots_per_decode 1
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 407.407
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 65.0076
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 = 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.0366211
# HELP llamacpp:kv_cache_tokens KV-cache tokens.
# TYPE llamacpp:kv_cache_tokens gauge
llamacpp:kv_cache_tokens 150
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 3
"""


def test_llama_server_page() -> None:
    m = Metrics.from_prometheus(LLAMA_SERVER_PAGE)
    assert m == Metrics(
        prompt=TokenPerformance(22, dt.timedelta(milliseconds=54)),
        generated=TokenPerformance(128, dt.timedelta(seconds=1, milliseconds=969)),
        kv_cache_usage=0.0366211,
        kv_cache_tokens=150,
        requests_processing=1,
        requests_pending=3,
        decode_calls=128,
        busy_slots_per_decode=1.0,
    )
    assert isinstance(m.prompt.count, int)
    assert isinstance(m.kv_cache_tokens, int)


def test_missing_series_read_zero() -> None:
    # Recent llama-server versions dropped the kv_cache series.
    page = "\n".join(line for line in LLAMA_SERVER_PAGE.splitlines() if "kv_cache" not in line)
    m = Metrics.from_prometheus(page)
    assert m.kv_cache_usage == 0.0
    assert m.kv_cache_tokens == 0
    assert m.generated.count == 128
    assert Metrics.from_prometheus("") == Metrics()
    assert Metrics.from_prometheus("# only a comment\n\n") == Metrics()


def test_unknown_names_ignored() -> None:
    page = "process_cpu_seconds_total 12.5\nllamacpp:future_metric 7\nllamacpp:kv_cache_tokens 9\n"
    assert Metrics.from_prometheus(page) == Metrics(kv_cache_tokens=9)


def test_labels_timestamps_and_number_forms() -> None:
    page = (
        'llamacpp:prompt_tokens_total{slot="0",note="a } and \\" inside"} 1e3\n'
        "llamacpp:tokens_predicted_total{} 2.5E+2 1719830096000\n"
        "llamacpp:prompt_seconds_total 0.0000014\n"  # rounds to 1 microsecond
        "   llamacpp:tokens_predicted_seconds_total    12   \r\n"
        "llamacpp:kv_cache_usage_ratio NaN\n"
        "llamacpp:kv_cache_tokens +Inf\n"
        "llamacpp:requests_processing -Inf\n"
        "llamacpp:requests_deferred 4 -5\n"
    )
    m = Metrics.from_prometheus(page)
    assert m.prompt == TokenPerformance(1000, dt.timedelta(microseconds=1))
    assert m.generated == TokenPerformance(250, dt.timedelta(seconds=12))
    assert m.kv_cache_usage == 0.0
    assert m.kv_cache_tokens == 0
    assert m.requests_processing == 0
    assert m.requests_pending == 4


def test_last_sample_wins() -> None:
    page = 'llamacpp:kv_cache_tokens{slot="0"} 3\nllamacpp:kv_cache_tokens{slot="1"} 5\n'
    assert Metrics.from_prometheus(page).kv_cache_tokens == 5


def test_garbage_lines_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    page = (
        "this is not a metric line at all\n"
        "llamacpp:kv_cache_tokens\n"  # no value
        "llamacpp:kv_cache_tokens twelve\n"  # not a number
        'llamacpp:kv_cache_tokens{slot="0" 4\n'  # unclosed labels
        "llamacpp:kv_cache_tokens 1 2 3\n"  # trailing junk
        "llamacpp:prompt_seconds_total 1e300\n"  # beyond timedelta
        "llamacpp:requests_processing 2\n"
    )
    with caplog.at_level(logging.DEBUG, logger="llm_inproc.metrics"):
        m = Metrics.from_prometheus(page)
    assert m == Metrics(requests_processing=2)
    skipped = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(skipped) == 6
    assert all(r.name == "llm_inproc.metrics" for r in skipped)


@pytest.mark.parametrize(
    "value", ["1e1000000", "-1e999999999999", "1e-999999999999", "123456789012345678901234567890"]
)
def test_absurd_values_never_crash(value: str) -> None:
    page = "".join(f"{name} {value}\n" for name in _names())
    m = Metrics.from_prometheus(page + "llamacpp:requests_deferred 1\n")
    assert m.requests_pending == 1  # later lines are still read
    assert m.prompt == TokenPerformance() == m.generated
    assert m.kv_cache_tokens == m.requests_processing == 0


def _names() -> list[str]:
    return [line.split(" ")[2] for line in LLAMA_SERVER_PAGE.splitlines() if "# TYPE" in line]


def test_from_prometheus_refuses_bytes() -> None:
    with pytest.raises(InvalidInputError, match="decode"):
        Metrics.from_prometheus(LLAMA_SERVER_PAGE.encode())  # type: ignore[arg-type]


def _assert_valid_exposition(page: str) -> None:
    """Every sample has HELP then TYPE for its name, counters end in _total."""
    assert page.endswith("\n")
    lines = page.splitlines()
    assert len(lines) % 3 == 0
    for i in range(0, len(lines), 3):
        help_line, type_line, sample = lines[i : i + 3]
        name = sample.split(" ")[0]
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name)
        assert help_line.startswith(f"# HELP {name} ") and len(help_line) > len(name) + 8
        kind = type_line.removeprefix(f"# TYPE {name} ")
        assert kind in ("counter", "gauge")
        # llama-server types its high watermark n_tokens_max a counter without _total.
        assert (kind == "counter") == (name.endswith("_total") or name == "llamacpp:n_tokens_max")
        float(sample.split(" ")[1])


def test_to_prometheus_is_a_valid_page() -> None:
    m = Metrics.from_prometheus(LLAMA_SERVER_PAGE)
    page = m.to_prometheus()
    _assert_valid_exposition(page)
    assert "llamacpp:requests_deferred 3\n" in page
    assert "llamacpp:prompt_seconds_total 0.054000\n" in page
    assert PROMETHEUS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_round_trip_exact() -> None:
    rng = random.Random(1234)
    samples = [
        Metrics(),
        Metrics.from_prometheus(LLAMA_SERVER_PAGE),
        Metrics(
            TokenPerformance(1, dt.timedelta(microseconds=1)),
            TokenPerformance(
                10**15, dt.timedelta(days=999_999, seconds=86399, microseconds=999_999)
            ),
            1.0,
            2**31,
            7,
            64,
        ),
    ]
    for _ in range(200):
        samples.append(
            Metrics(
                TokenPerformance(
                    rng.randrange(10**9), dt.timedelta(microseconds=rng.randrange(10**13))
                ),
                TokenPerformance(rng.randrange(10**9), dt.timedelta(seconds=rng.random() * 1e6)),
                rng.random(),
                rng.randrange(10**6),
                rng.randrange(100),
                rng.randrange(100),
            )
        )
    for m in samples:
        assert Metrics.from_prometheus(m.to_prometheus()) == m


def test_non_finite_ratio_is_written_in_prometheus_spelling() -> None:
    page = Metrics(kv_cache_usage=float("inf")).to_prometheus()
    assert "llamacpp:kv_cache_usage_ratio +Inf\n" in page
    assert Metrics.from_prometheus(page).kv_cache_usage == 0.0
    assert "NaN" in Metrics(kv_cache_usage=float("nan")).to_prometheus()


def test_to_prometheus_refuses_wrong_types() -> None:
    with pytest.raises(InvalidInputError, match="count must be an int"):
        Metrics(kv_cache_tokens="3").to_prometheus()  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="timedelta"):
        Metrics(prompt=TokenPerformance(1, 2.0)).to_prometheus()  # type: ignore[arg-type]


def test_rate() -> None:
    assert TokenPerformance(130, dt.timedelta(seconds=2)).rate() == pytest.approx(65.0)
    assert TokenPerformance(5, dt.timedelta(0)).rate() == 0.0
    assert TokenPerformance().rate() == 0.0
    assert TokenPerformance(1, dt.timedelta(microseconds=1)).rate() == pytest.approx(1e6)


def test_add() -> None:
    total = TokenPerformance(3, dt.timedelta(seconds=1)) + TokenPerformance(
        4, dt.timedelta(milliseconds=500)
    )
    assert total == TokenPerformance(7, dt.timedelta(seconds=1.5))
    assert sum([TokenPerformance(1, dt.timedelta(1))] * 3, TokenPerformance()) == TokenPerformance(
        3, dt.timedelta(3)
    )
    with pytest.raises(TypeError):
        TokenPerformance() + 1
