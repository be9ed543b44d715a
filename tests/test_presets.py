"""CMakePresets.json: every preset resolves, the flags are right, CMake itself accepts the file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm_inproc.build.presets import PresetFile, cmake_args, find_presets_file, list_presets
from llm_inproc.build.python import python_build_plan
from llm_inproc.errors import InvalidInputError
from subproc import run_cli

REPO = Path(__file__).resolve().parent.parent

# What each preset must switch on: the flag names are llama.cpp's (vendor/llama.cpp).
EXPECTED: dict[str, set[str]] = {
    "cpu": {"-DGGML_NATIVE=ON"},
    "cpu-portable": {"-DGGML_NATIVE=OFF"},
    "openblas": {"-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=OpenBLAS", "-DGGML_NATIVE=ON"},
    "cuda": {"-DGGML_CUDA=ON"},
    "metal": {"-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"},
    "vulkan": {"-DGGML_VULKAN=ON"},
    "hip": {"-DGGML_HIP=ON"},
    "sycl": {"-DGGML_SYCL=ON", "-DCMAKE_C_COMPILER=icx", "-DCMAKE_CXX_COMPILER=icpx"},
    "rpc": {"-DGGML_RPC=ON"},
    "cuda-rpc": {"-DGGML_CUDA=ON", "-DGGML_RPC=ON"},
    "vulkan-rpc": {"-DGGML_VULKAN=ON", "-DGGML_RPC=ON"},
    "metal-rpc": {"-DGGML_METAL=ON", "-DGGML_RPC=ON"},
    "hip-rpc": {"-DGGML_HIP=ON", "-DGGML_RPC=ON"},
}
BACKENDS = {"GGML_CUDA", "GGML_METAL", "GGML_VULKAN", "GGML_HIP", "GGML_SYCL", "GGML_RPC"}


def test_the_file_is_found_in_a_checkout() -> None:
    assert find_presets_file() == REPO / "CMakePresets.json"


def test_every_preset_resolves_with_its_flags() -> None:
    presets = {p.name: p for p in list_presets()}
    assert set(presets) == set(EXPECTED)
    for name, preset in presets.items():
        args = preset.cmake_args()
        assert preset.description, name
        assert "-DCMAKE_BUILD_TYPE=Release" in args, name
        assert EXPECTED[name] <= set(args), (name, args)
        native = [a for a in args if a.startswith("-DGGML_NATIVE=")]
        assert native == ["-DGGML_NATIVE=OFF" if name == "cpu-portable" else "-DGGML_NATIVE=ON"]
        switched_on = {a[2:].split("=")[0] for a in args if a.endswith("=ON")} & BACKENDS
        wanted = {a[2:].split("=")[0] for a in EXPECTED[name]} & BACKENDS
        assert switched_on == wanted, f"{name} switches on {switched_on}, expected {wanted}"


def test_cpu_is_the_default() -> None:
    assert cmake_args() == ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_python_dry_run_command(name: str) -> None:
    plan = python_build_plan(name, version="0.3.36")
    assert plan.command == [
        sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps",
        "--no-binary", "llama-cpp-python", "--no-cache-dir", "llama-cpp-python==0.3.36",
    ]  # fmt: skip
    assert plan.env["FORCE_CMAKE"] == "1"
    flags = plan.env["CMAKE_ARGS"].split()
    assert all(f.startswith("-D") for f in flags), "CMAKE_ARGS must carry only -D flags"
    assert EXPECTED[name] <= set(flags)
    assert plan.shell().startswith("CMAKE_ARGS=")


@pytest.mark.parametrize("name", ["cuda", "sycl", "vulkan-rpc"])
def test_cli_dry_run_prints_the_command(name: str) -> None:
    done = run_cli("build", "--preset", name, "--dry-run")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "FORCE_CMAKE=1" in line
    assert "pip install --force-reinstall --no-deps --no-binary llama-cpp-python" in line
    for flag in EXPECTED[name]:
        assert flag in line


@pytest.mark.parametrize("name", ["cuda", "vulkan-rpc"])
def test_cli_server_dry_run_prints_flags_and_target(name: str, tmp_path: Path) -> None:
    done = run_cli(
        "build", "--target", "llama-server", "--preset", name, "--dry-run",
        "--cache-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    configure = next(ln for ln in lines if ln.startswith("cmake -S vendor/llama.cpp"))
    for flag in [*EXPECTED[name], "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON"]:
        assert flag in configure.split(), flag
    version = python_build_plan(name).version
    assert lines[-1] == f"# binaries: {tmp_path / 'llama-server' / version / name / 'bin'}"
    assert not any(tmp_path.iterdir()), "a dry run creates nothing"


def test_cli_lists_presets_and_refuses_unknown_ones() -> None:
    listed = run_cli("build", "--list")
    assert listed.returncode == 0, listed.stderr
    names = [ln.split()[0] for ln in listed.stdout.splitlines() if not ln.startswith(" ")]
    assert names == list(EXPECTED)
    bad = run_cli("build", "--preset", "cuda13", "--dry-run")
    assert bad.returncode == 1
    assert "unknown preset 'cuda13'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cmake_accepts_the_file() -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    done = subprocess.run(
        [cmake, "--list-presets"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    listed = [ln.split('"')[1] for ln in done.stdout.splitlines() if ln.strip().startswith('"')]
    assert listed == [p.name for p in list_presets()]


def presets(*entries: dict[str, Any], version: int = 3) -> PresetFile:
    return PresetFile({"version": version, "configurePresets": list(entries)}, source="test")


def test_inheritance_follows_cmake_order() -> None:
    f = presets(
        {"name": "a", "hidden": True, "cacheVariables": {"X": "a", "Y": "a"}},
        {"name": "b", "hidden": True, "cacheVariables": {"X": "b", "Y": "b", "Z": "b"}},
        {"name": "c", "inherits": ["a", "b"], "cacheVariables": {"Y": "own"}},
        {"name": "d", "inherits": "c", "cacheVariables": {"Z": None}},
    )
    # Own values win, then parents in the order they are listed.
    assert f.get("c").cache_variables == {"X": "a", "Y": "own", "Z": "b"}
    # null unsets an inherited variable.
    assert f.get("d").cmake_args() == ["-DX=a", "-DY=own"]
    assert f.names() == ["c", "d"]


def test_value_forms_from_the_cmake_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    f = presets(
        {
            "name": "p",
            "cacheVariables": {
                "PLAIN": "ON",
                "FLAG": True,
                "OFFB": False,
                "TYPED": {"type": "STRING", "value": "OpenBLAS"},
                "UNTYPED": {"value": "x"},
                "TYPEDBOOL": {"type": "BOOL", "value": False},
                "NAME": "build-${presetName}",
                "FROM_ENV": "$env{LLM_INPROC_TEST_PRESET_VALUE}",
            },
        }
    )
    monkeypatch.setenv("LLM_INPROC_TEST_PRESET_VALUE", "from-env")
    assert f.get("p").cmake_args() == [
        "-DFLAG:BOOL=TRUE",
        "-DFROM_ENV=from-env",
        "-DNAME=build-p",
        "-DOFFB:BOOL=FALSE",
        "-DPLAIN=ON",
        "-DTYPED:STRING=OpenBLAS",
        "-DTYPEDBOOL:BOOL=FALSE",
        "-DUNTYPED=x",
    ]


def test_an_override_replaces_a_typed_parent_value() -> None:
    f = presets(
        {"name": "a", "cacheVariables": {"K": {"type": "BOOL", "value": "ON"}}},
        {"name": "b", "inherits": "a", "cacheVariables": {"K": "OFF"}},
    )
    assert f.get("b").cmake_args() == ["-DK=OFF"]


def test_cycles_are_rejected_with_the_chain() -> None:
    f = presets(
        {"name": "a", "inherits": "b"},
        {"name": "b", "inherits": ["c"]},
        {"name": "c", "inherits": "a"},
    )
    with pytest.raises(InvalidInputError, match=r"cycle: a -> b -> c -> a"):
        f.get("a")
    self_loop = presets({"name": "s", "inherits": "s"})
    with pytest.raises(InvalidInputError, match=r"cycle: s -> s"):
        self_loop.get("s")


def test_unknown_and_hidden_presets_are_rejected() -> None:
    f = presets(
        {"name": "base", "hidden": True, "cacheVariables": {"A": "1"}},
        {"name": "ok", "inherits": "base"},
        {"name": "broken", "inherits": ["base", "nope"]},
    )
    with pytest.raises(InvalidInputError, match=r"unknown preset 'gpu'; known presets: ok, broken"):
        f.get("gpu")
    with pytest.raises(InvalidInputError, match=r"'broken' inherits unknown preset 'nope'"):
        f.get("broken")
    with pytest.raises(InvalidInputError, match=r"'base' is hidden"):
        f.get("base")
    assert f.get("base", allow_hidden=True).cache_variables == {"A": "1"}
    with pytest.raises(InvalidInputError, match=r"unknown preset 'base-gpu'"):
        cmake_args("base-gpu")
    with pytest.raises(InvalidInputError, match=r"'base' is hidden"):
        cmake_args("base")


def test_malformed_files_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"'version' must be an integer >= 3"):
        presets({"name": "a"}, version=2)
    with pytest.raises(InvalidInputError, match=r"'a' is defined twice"):
        presets({"name": "a"}, {"name": "a"})
    with pytest.raises(InvalidInputError, match=r"sourceDir.*only means something inside"):
        presets({"name": "a", "cacheVariables": {"X": "${sourceDir}/x"}}).get("a")
    with pytest.raises(InvalidInputError, match=r"cache variable 'X'"):
        presets({"name": "a", "cacheVariables": {"X": 3}}).get("a")
