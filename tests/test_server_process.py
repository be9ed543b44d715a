"""The server as a program: the API key (flag and environment), a port already taken,
unsupported llama-server flags, 503 while the model loads, ``llm-inproc serve``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import Server, env_without_key, free_port, request, start_ours
from subproc import run_cli, run_python

pytestmark = pytest.mark.timeout(300)

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    env = env_without_key(LLM_INPROC_API_KEY=KEY)  # from the environment, not a flag
    with start_ours(chat_model_path, log, "-c", "512", env=env) as s:
        yield s


@pytest.mark.model
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {KEY}x"}, 401),
        ({"X-Api-Key": "wrong"}, 401),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"X-Api-Key": KEY}, 200),
    ],
)
def test_api_key(keyed: Server, headers: dict[str, str], status: int) -> None:
    answer = request(keyed.port, "GET", "/v1/models", headers=headers)
    assert answer.status == status
    if status == 401:
        assert answer.json()["error"] == {
            "code": 401,
            "message": "Invalid API Key",
            "type": "authentication_error",
        }
    # A wrong key on an unknown route is still 401, as llama-server answers it.
    assert request(keyed.port, "GET", "/nope", headers=headers).status == (
        401 if status == 401 else 404
    )


@pytest.mark.model
def test_a_browser_preflight_needs_no_key_and_a_refusal_names_the_origin(keyed: Server) -> None:
    origin = {"Origin": "http://app.example"}
    pre = request(
        keyed.port,
        "OPTIONS",
        "/v1/chat/completions",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert pre.status == 200
    assert pre.headers["access-control-allow-origin"] == "http://app.example"
    assert pre.headers["access-control-allow-credentials"] == "true"
    assert pre.headers["access-control-allow-headers"] == "authorization, content-type"
    # The page can read why it was refused, and what it asked for once the key is right.
    refused = request(keyed.port, "GET", "/v1/models", headers=origin)
    assert refused.status == 401
    assert refused.headers["access-control-allow-origin"] == "http://app.example"
    ok = request(keyed.port, "GET", "/v1/models", headers={**origin, "X-Api-Key": KEY})
    assert ok.status == 200 and ok.headers["access-control-allow-origin"] == "http://app.example"


@pytest.mark.model
def test_health_is_public_and_the_openai_client_sends_its_key(keyed: Server) -> None:
    import openai

    assert request(keyed.port, "GET", "/health").status == 200
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    out = good.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert out.usage is not None and out.usage.completion_tokens <= 2
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_a_port_already_in_use_is_a_clear_error(chat_model_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_python(
            "from llm_inproc.server import main; raise SystemExit(main())",
            "-m",
            str(chat_model_path),
            "--port",
            str(port),
            timeout=60,
        )
    assert out.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_serving_without_the_server_extra_says_how_to_install_it() -> None:
    """Without uvicorn (the ``server`` extra), ``serve`` says which extra to install."""
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"  # as if it were not installed
        "from llm_inproc.cli import main; raise SystemExit(main())"
    )
    out = run_python(code, "serve", "--port", str(free_port()), timeout=60)
    assert out.returncode == 1, out.stderr
    assert "pip install 'llm-inproc[server]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unsupported_llama_server_flag_is_named() -> None:
    out = run_python(
        "from llm_inproc.server import main; raise SystemExit(main())",
        "--mlock",
        "--port",
        str(free_port()),
        timeout=60,
    )
    assert out.returncode == 2
    assert "--mlock" in out.stderr and "not supported" in out.stderr
    cli = run_cli("serve", "--mlock", "--port", str(free_port()), timeout=60)
    assert cli.returncode == 2
    assert "--mlock" in cli.stderr and "not supported" in cli.stderr


def test_serve_is_a_cli_subcommand_with_llama_server_flags() -> None:
    out = run_cli("serve", "--help", timeout=60)
    assert out.returncode == 0
    for flag in ("-m", "--ctx-size", "-ngl", "-np", "--api-key", "--alias", "--metrics"):
        assert flag in out.stdout
    bad = run_cli("serve", "--port", "70000", timeout=60)
    assert bad.returncode == 1 and "--port 70000" in bad.stderr


def test_the_cli_imports_no_web_stack() -> None:
    code = (
        "import sys, llm_inproc, llm_inproc.server, llm_inproc.cli as c; c.build_parser();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'llama_cpp')))"
    )
    assert run_python(code, timeout=60).stdout.strip() == "[]"


@pytest.mark.model
def test_health_is_503_while_the_model_loads(chat_model_path: Path) -> None:
    """In a thread: the real server and Session, with loading held back until we let it go."""
    import uvicorn

    from llm_inproc import Options, Session
    from llm_inproc.server.app import create_app
    from llm_inproc.server.flags import ServerSettings
    from llm_inproc.server.run import bind

    go = threading.Event()
    opts = Options(model=str(chat_model_path), context_length=512, threads=1)

    def load() -> Session:
        assert go.wait(60)
        return Session(opts)

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(ServerSettings(options=opts), load)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            try:
                loading = request(port, "GET", "/health", timeout=5)
                break
            except OSError:
                threading.Event().wait(0.05)
        assert loading.status == 503
        assert loading.json()["error"] == {
            "code": 503,
            "message": "Loading model",
            "type": "unavailable_error",
        }
        busy = request(port, "POST", "/completion", {"prompt": "Hi", "n_predict": 1})
        assert busy.status == 503 and busy.json()["error"]["message"] == "Loading model"
        go.set()
        for _ in range(600):
            if request(port, "GET", "/health", timeout=5).status == 200:
                break
            threading.Event().wait(0.05)
        done = request(port, "POST", "/completion", {"prompt": "Hi", "n_predict": 1})
        assert done.status == 200
    finally:
        go.set()
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive()


@pytest.mark.model
def test_a_full_queue_is_503(chat_model_path: Path, tmp_path: Path) -> None:
    import http.client
    import json

    flags = ("-c", "512", "-np", "1", "--max-pending", "0")
    with start_ours(chat_model_path, tmp_path / "s.log", *flags, env=env_without_key()) as s:
        body = {"prompt": "Count: 1, 2,", "n_predict": 400, "ignore_eos": True, "stream": True}
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.read1(64).startswith(b"data: ")  # the only slot is busy
        try:
            busy = request(s.port, "POST", "/completion", {"prompt": "Hi", "n_predict": 1})
        finally:
            conn.close()
        assert busy.status == 503
        assert busy.json()["error"]["type"] == "unavailable_error"


def test_the_listening_socket_says_tcp_so_replies_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY only on sockets created with proto IPPROTO_TCP; without it
    every response waited ~40 ms for the client's delayed ACK (measured: /health 44 ms)."""
    import asyncio

    from llm_inproc.server.run import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]

    async def check() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            s = writer.get_extra_info("socket")
            accepted.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        nodelay = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return nodelay

    assert asyncio.run(check()) != 0


def test_a_model_that_fails_to_load_stops_the_server_with_its_reason(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    out = run_cli("serve", "-m", str(missing), "--port", str(free_port()), timeout=60)
    assert out.returncode == 1
    assert "listening on http://127.0.0.1:" in out.stderr
    assert f"model file '{missing}' does not exist" in out.stderr
    assert "Traceback" not in out.stderr
