"""A model spread over llama.cpp rpc-server processes on loopback, and every way that fails.

The error paths run everywhere. The real split needs llama.cpp built with ``GGML_RPC=ON``
(shared libraries plus ``ggml-rpc-server``), which the installed llama-cpp-python is not:
the ``rpc_lib`` fixture builds it from the same sources on the first run (minutes; cached
per version in the test cache), or ``LLM_INPROC_RPC_LIB`` names such a build's library
directory. Code that loads it runs in a child process with ``LLAMA_CPP_LIB_PATH`` there.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cores import all_cores
from llm_inproc import BackendError, InvalidInputError, Message, Options, Session
from llm_inproc.backends.child import free_port
from subproc import child_env, run_cli

_RPC_FILES = ("libggml-rpc.so", "libllama.so", "ggml-rpc-server")


@pytest.fixture(scope="session")
def rpc_lib(cache_dir: Path) -> Path:
    """llama.cpp's shared libraries and ``ggml-rpc-server`` built with ``GGML_RPC=ON`` from
    the sources the installed llama-cpp-python vendors (compiled once per version, a few
    minutes; never skipped: RPC is tested for real)."""
    explicit = os.environ.get("LLM_INPROC_RPC_LIB")
    if explicit:
        return Path(explicit)
    import shutil
    import tempfile

    from llm_inproc.build.python import BuildLog, installed_llama_cpp_version
    from llm_inproc.build.servers import _root, _sources

    version = installed_llama_cpp_version()
    version_dir = _root(cache_dir) / version
    final = version_dir / "rpc-libs"
    if all((final / f).exists() for f in _RPC_FILES):
        return final
    version_dir.mkdir(parents=True, exist_ok=True)
    with all_cores(), BuildLog(version_dir / "rpc-libs.log") as blog:
        source = _sources(version_dir, version, blog) / "vendor" / "llama.cpp"
        build = version_dir / ".build-rpc-libs"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        flags = [
            "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DGGML_RPC=ON",
            "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_OPENSSL=OFF",
            "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
        ]  # fmt: skip
        blog.run("configure", ["cmake", "-S", str(source), "-B", str(build), *generator, *flags])
        targets = ["llama", "ggml", "ggml-rpc-server"]
        jobs = str(os.cpu_count() or 2)
        blog.run("build", ["cmake", "--build", str(build), "--target", *targets, "-j", jobs])
        tmp = Path(tempfile.mkdtemp(prefix=".rpc-libs-", dir=version_dir))
        for f in (build / "bin").iterdir():
            shutil.copy2(f, tmp / f.name, follow_symlinks=False)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    assert all((final / f).exists() for f in _RPC_FILES), f"see {version_dir / 'rpc-libs.log'}"
    return final


PROMPT = "<start_of_turn>user\nName three colours.<end_of_turn>\n<start_of_turn>model\n"


class RpcServer:
    """A real rpc-server on 127.0.0.1, ready once it accepts a TCP connection."""

    def __init__(self, log: Path, binary: Path, threads: int = 1) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            cmd = [str(binary), "--port", str(self.port), "--threads", str(threads)]
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"rpc-server did not listen: {log.read_text(errors='replace')}")

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def two_servers(tmp_path: Path, rpc_lib: Path) -> Iterator[list[RpcServer]]:
    binary = rpc_lib / "ggml-rpc-server"
    servers = [RpcServer(tmp_path / f"rpc{i}.log", binary) for i in range(2)]
    try:
        yield servers
    finally:
        for s in servers:
            s.kill()


def _dead_endpoint() -> str:
    return f"127.0.0.1:{free_port()}"  # nobody listens there


# -- errors, on every build -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rpc_servers": "127.0.0.1:50052"}, "expected a list of host:port"),
        ({"rpc_servers": ["127.0.0.1"]}, "has no port"),
        ({"rpc_servers": ["127.0.0.1:0"]}, "invalid port"),
        ({"rpc_servers": ["a:1"], "remote": "b:2"}, "remote is set"),
        ({"tensor_split": [1, -1]}, "non-negative numbers"),
        ({"tensor_split": [0, 0]}, "positive sum"),
    ],
)
def test_bad_rpc_options_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Options(**changes).validate()  # type: ignore[arg-type]


def test_rpc_servers_default_to_a_child_process_and_read_from_yaml() -> None:
    from llm_inproc import load_config

    yaml = "llm:\n  rpc_servers: [10.0.0.2:50052]\n  tensor_split: [3, 1]\n"
    cfg = load_config(io.StringIO(yaml))
    assert cfg.options.rpc_servers == ["10.0.0.2:50052"]
    assert cfg.options.tensor_split == [3, 1]
    assert cfg.options.resolved_backend() == "python"
    assert Options(rpc_servers=["a:1"], backend="inproc").resolved_backend() == "inproc"


def test_an_unreachable_server_is_named_before_anything_loads(tmp_path: Path) -> None:
    dead = _dead_endpoint()
    started = time.monotonic()
    with pytest.raises(BackendError, match=f"RPC server {dead} is unreachable"):
        Session(Options(model="/no/such/model.gguf", rpc_servers=[dead]), cache_dir=tmp_path)
    assert time.monotonic() - started < 10  # no model was looked for, nothing spawned


def test_a_build_without_rpc_names_the_fix(model_path: Path, tmp_path: Path) -> None:
    from llm_inproc.backends.inproc import InprocBackend

    with pytest.raises(InvalidInputError, match=r"llm-inproc build --preset rpc"):
        InprocBackend(model_path, rpc_servers=[_dead_endpoint()], cache_dir=tmp_path)


def test_info_rpc_on_a_build_without_rpc_names_the_fix(tmp_path: Path) -> None:
    r = run_cli("info", "--rpc", _dead_endpoint(), env=child_env(LLM_INPROC_CACHE=str(tmp_path)))
    assert r.returncode == 1 and "llm-inproc build --preset rpc" in r.stderr, r.stderr
    bad = run_cli("info", "--rpc", "nohost", env=child_env(LLM_INPROC_CACHE=str(tmp_path)))
    assert bad.returncode == 2 and "has no port" in bad.stderr


def test_the_cli_takes_rpc_as_llama_server_spells_it(tmp_path: Path) -> None:
    bad = run_cli("prompt", "--rpc", "nohost", "hi", env=child_env(LLM_INPROC_CACHE=str(tmp_path)))
    assert bad.returncode == 2 and "--rpc" in bad.stderr and "has no port" in bad.stderr
    dead = _dead_endpoint()
    r = run_cli("prompt", "--rpc", dead, "hi", env=child_env(LLM_INPROC_CACHE=str(tmp_path)))
    assert r.returncode == 1 and f"RPC server {dead} is unreachable" in r.stderr


def test_serve_and_spawned_servers_get_rpc(model_path: Path, tmp_path: Path) -> None:
    from llm_inproc.backends.spawn import _python_command
    from llm_inproc.server.flags import settings_from_args
    from llm_inproc.server.run import build_parser

    opts = Options(rpc_servers=["10.0.0.2:50052", "10.0.0.3:50052"], tensor_split=[3, 1])
    cmd = _python_command(model_path, opts, 8080, tmp_path)
    assert cmd[cmd.index("--rpc") + 1] == "10.0.0.2:50052,10.0.0.3:50052"
    assert cmd[cmd.index("-ts") + 1] == "3,1"
    args = build_parser().parse_args(["-m", str(model_path), "--rpc", "10.0.0.2:50052"])
    settings = settings_from_args(args)
    assert settings.options.rpc_servers == ["10.0.0.2:50052"]
    assert settings.options.backend == "inproc"  # the server holds the model itself


def test_rpc_server_command_warns_off_loopback(tmp_path: Path) -> None:
    fake = tmp_path / "rpc-server"
    fake.write_text('#!/bin/sh\necho "args: $*"\n')
    fake.chmod(0o755)
    env = child_env(RPC_SERVER=str(fake), LLM_INPROC_CACHE=str(tmp_path))
    r = run_cli("rpc-server", "--host", "0.0.0.0", "--port", "50999", "--cache", env=env)
    assert r.returncode == 0, r.stderr
    assert "NO authentication" in r.stderr
    assert "args: --host 0.0.0.0 --port 50999 --cache" in r.stdout
    quiet = run_cli("rpc-server", "--port", "50999", env=env)
    assert "NO authentication" not in quiet.stderr and "--host 127.0.0.1" in quiet.stdout


# -- the real split, with an RPC build --------------------------------------------------------

_SPLIT = """
import json, sys, time
from pathlib import Path
from llm_inproc.backends.inproc import InprocBackend
from llm_inproc.backends.base import GenerationRequest
from llm_inproc.sampling import Sampling

model, servers, mode = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
def run(**kw):
    b = InprocBackend(Path(model), context_length=512, threads=2, repack=False, **kw)
    st = b.submit(GenerationRequest(Sampling(temperature=0.0, max_tokens=24), prompt=PROMPT))
    text = ""
    while isinstance(item := st.next_item(120), str):
        text += item
        if mode == "kill":
            print("STARTED", flush=True)
            sys.stdin.readline()  # the test kills a server, then lets us go on
    return b, text, item
b, split_text, outcome = run(rpc_servers=servers, gpu_layers=12)
devices = [d.__dict__ for d in b.info.devices]
print("LOADED", flush=True)
sys.stdin.readline()  # the test measures the servers' memory now
b.close()
_, local_text, _ = run()
print(json.dumps({"split": split_text, "local": local_text, "devices": devices,
                  "tokens": outcome.generated.count}))
""".replace("PROMPT", repr(PROMPT))


def _child(model: Path, servers: list[RpcServer], mode: str, lib: Path) -> subprocess.Popen[str]:
    env = child_env(LLAMA_CPP_LIB_PATH=str(lib))
    endpoints = ",".join(s.endpoint for s in servers)
    return subprocess.Popen(
        [sys.executable, "-c", _SPLIT, str(model), endpoints, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_model_split_over_two_servers_and_the_cpu_replies_as_a_local_run(
    model_path: Path, two_servers: list[RpcServer], rpc_lib: Path
) -> None:
    before = [s.rss_kib() for s in two_servers]
    child = _child(model_path, two_servers, "split", rpc_lib)
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "LOADED", child.stderr.read()  # type: ignore[union-attr]
    held = [s.rss_kib() - b for s, b in zip(two_servers, before, strict=True)]
    child.stdin.write("\n")
    child.stdin.flush()
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["split"] == result["local"] and result["tokens"] == 24  # token for token
    layers = {d["name"]: d["layers"] for d in result["devices"]}
    assert layers["RPC0"] + layers["RPC1"] == 11 and layers["CPU"] == 7  # 18 layers, -ngl 12
    assert min(layers["RPC0"], layers["RPC1"]) >= 5  # equal free memory: an even split
    descriptions = {d["description"] for d in result["devices"]}
    assert {s.endpoint for s in two_servers} <= descriptions
    # Each server holds its share of the weights (Gemma 3 270M's layers are ~4-6 MiB each
    # at Q4_K_M, the output layer with its 170 MiB embedding matrix more).
    assert all(h > 10_000 for h in held), held


def test_a_server_killed_mid_reply_aborts_the_process_holding_the_model(
    model_path: Path, two_servers: list[RpcServer], rpc_lib: Path
) -> None:
    """What llama.cpp does, measured: RPC_STATUS_ASSERT -> GGML_ABORT -> SIGABRT. This is why
    a Session with rpc_servers runs the model in a child process."""
    child = _child(model_path, two_servers, "kill", rpc_lib)
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "STARTED"
    two_servers[1].kill()
    child.stdin.write("\n")
    child.stdin.flush()
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGABRT, err
    assert "Remote RPC server crashed" in err


def test_a_session_survives_a_server_killed_during_a_reply(
    model_path: Path,
    two_servers: list[RpcServer],
    rpc_lib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMA_CPP_LIB_PATH", str(rpc_lib))  # for the child server only
    opts = Options(
        model=str(model_path),
        rpc_servers=[s.endpoint for s in two_servers],
        gpu_layers=12,
        context_length=512,
        threads=2,
    )
    with Session(opts, cache_dir=tmp_path) as s:
        assert s.backend == "python"
        assert s.prompt([Message("user", "Hi")], max_tokens=4, temperature=0)
        stream = s.prompt_streaming(
            [Message("user", "Count to a hundred.")],
            max_tokens=400,
            temperature=0,
            seed=1,
        )
        next(stream)
        two_servers[0].kill()
        with pytest.raises(BackendError):
            for _ in stream:
                pass
        with pytest.raises(BackendError, match="cannot continue"):
            s.get_health()
    assert two_servers[1].proc.poll() is None  # the other server, and this process, live on


def test_info_lists_the_devices_rpc_servers_offer(
    two_servers: list[RpcServer], rpc_lib: Path, tmp_path: Path
) -> None:
    """``info --rpc``: each server's device with its memory, as llama.cpp would use it."""
    env = child_env(LLAMA_CPP_LIB_PATH=str(rpc_lib), LLM_INPROC_CACHE=str(tmp_path))
    endpoints = [s.endpoint for s in two_servers]
    r = run_cli("info", "--json", "--rpc", ",".join(endpoints), env=env)
    assert r.returncode == 0, r.stderr
    remote = [d for d in json.loads(r.stdout)["devices"] if d["backend"] == "RPC"]
    assert [d["description"] for d in remote] == endpoints
    assert all(d["memory_total"] >= d["memory_free"] > 0 for d in remote)
    shown = run_cli("info", "--rpc", endpoints[0], env=env).stdout
    assert "RPC0 (gpu, " in shown and f"): {endpoints[0]}" in shown
    dead = run_cli("info", "--rpc", _dead_endpoint(), env=env)
    assert dead.returncode == 1 and "is unreachable" in dead.stderr, dead.stderr
