"""The chat page at ``/``, driven in a real headless Chromium (Selenium, Debian's
chromedriver) against our real server on SmolLM2: replies stream in, stop, regenerate and
edit, settings sent, conversations kept, renamed, deleted, exported and imported, the API-key
prompt, errors shown, the page loading before the model; and ``--no-webui``, ``--path`` and
the promise that the page asks no other host for anything.

``LLM_INPROC_WRITE_SCREENSHOTS=1`` also writes docs/webui.png and docs/webui-phone.png.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_inproc.server.webui import PAGE_DIR
from servers import Server, env_without_key, free_port, request, start_ours
from subproc import child_env, run_python

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KEY = "webui-secret"

# Wraps fetch() to keep what the page sends: the request bodies and the Authorization header.
RECORD_FETCH = """
window.__sent = [];
const original = window.fetch;
window.fetch = function (input, init) {
  if (init && init.body) {
    window.__sent.push({url: String(input), body: JSON.parse(init.body),
                        auth: new Headers(init.headers || {}).get("Authorization")});
  }
  return original.apply(this, arguments);
};
"""

# Keeps every length the reply's text had while it was still streaming.
WATCH_STREAM = """
window.__lengths = [];
new MutationObserver(() => {
  const c = document.querySelector('.msg.assistant[data-state="streaming"] .content');
  if (c && c.textContent) window.__lengths.push(c.textContent.length);
}).observe(document.querySelector("#messages"), {subtree: true, childList: true,
                                                 characterData: true});
"""


def _browser_or_skip() -> Any:
    """Selenium's Chrome driver module, or a skip naming what to install (a failure where
    CI says the browser must be there)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium (pip install selenium)")
        webdriver = None
    if missing:
        reason = (
            f"no headless browser for the chat page tests: missing {', '.join(missing)}; "
            "install with: apt-get install chromium chromium-driver"
        )
        if os.environ.get("LLM_INPROC_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return webdriver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,860",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.downloads = downloads
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No key, two slots, and a default temperature the page must show as the server's."""
    log = tmp_path_factory.mktemp("webui") / "server.log"
    flags = ("-c", "2048", "-np", "2", "--temp", "0.7", "--alias", "smol")
    with start_ours(chat_model_path, log, *flags, env=env_without_key()) as s:
        yield s


@pytest.fixture(scope="module")
def keyed(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A key, and a small context so that a long message does not fit."""
    log = tmp_path_factory.mktemp("webui-key") / "server.log"
    flags = ("-c", "512", "-np", "1", "--api-key", KEY)
    with start_ours(chat_model_path, log, *flags, env=env_without_key()) as s:
        yield s


@pytest.fixture(scope="module")
def thinker(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """DeepSeek R1's template, whose prompt opens the thinking: SmolLM2 never closes it, so
    its (short, greedy) replies are all reasoning."""
    template = (
        ROOT / "tests" / "data" / "templates" / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
    )
    log = tmp_path_factory.mktemp("webui-thinker") / "server.log"
    flags = ("-c", "1024", "-np", "1", "-n", "12", "--temp", "0", "--jinja")
    with start_ours(
        chat_model_path, log, *flags, "--chat-template-file", str(template), env=env_without_key()
    ) as s:
        yield s


# -- helpers ---------------------------------------------------------------------------------


def wait_js(driver: Any, condition: str, timeout: float = 90, *args: Any) -> Any:
    """Wait until the JavaScript expression ``condition`` is truthy; return its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = f"return ({condition});"
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
            lambda d: d.execute_script(script, *args)
        )
    except Exception as e:
        state = driver.execute_script(
            "return {phase: document.body.dataset.phase, busy: document.body.dataset.busy,"
            " status: document.querySelector('#status').textContent,"
            " messages: document.querySelector('#messages').innerText}"
        )
        raise AssertionError(f"waited {timeout} s for {condition}; page: {state}") from e


def open_page(driver: Any, url: str, *, clear: bool = True, storage: dict[str, Any] | None = None,
              ready: bool = True) -> None:  # fmt: skip
    """Load the page on a fresh browser state (``storage``: localStorage entries to start
    with) and wait until it has read the server's settings."""
    driver.get(url + "/")
    if clear or storage:
        driver.execute_script("localStorage.clear(); sessionStorage.clear();")
        for k, v in (storage or {}).items():
            driver.execute_script(
                "localStorage.setItem(arguments[0], arguments[1])", k, json.dumps(v)
            )
        driver.get(url + "/")
    if ready:
        wait_js(driver, "document.body.dataset.phase === 'ready'")


def send(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "prompt")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def last_reply(driver: Any) -> dict[str, Any]:
    reply: dict[str, Any] = driver.execute_script(
        "const m = [...document.querySelectorAll('.msg.assistant')].at(-1);"
        "return m && {state: m.dataset.state, text: m.querySelector('.content').innerText,"
        " html: m.querySelector('.content').innerHTML,"
        " error: m.querySelector('.error')?.innerText ?? null,"
        " stats: m.querySelector('.stats')?.innerText ?? '',"
        " predicted: m.querySelector('.stats')?.dataset.predictedN ?? null};"
    )
    return reply


def wait_reply_ended(driver: Any, timeout: float = 120) -> dict[str, Any]:
    wait_js(
        driver,
        "(() => { const m = [...document.querySelectorAll('.msg.assistant')].at(-1);"
        " return m && m.dataset.state !== 'streaming'"
        " && document.body.dataset.busy === 'false'; })()",
        timeout,
    )
    return last_reply(driver)


def sent(driver: Any) -> list[dict[str, Any]]:
    """The chat requests the page made since :data:`RECORD_FETCH` was installed."""
    return [s for s in driver.execute_script("return window.__sent") if "chat" in s["url"]]


def set_setting(driver: Any, key: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, f"set-{key}")
    field.clear()
    field.send_keys(value)


def slots_busy(server: Server) -> bool:
    return any(s["is_processing"] for s in request(server.port, "GET", "/slots").json())


# -- the page against a real server ----------------------------------------------------------


def test_a_reply_streams_in_and_the_conversation_survives_a_reload(
    server: Server, browser: Any
) -> None:
    open_page(browser, server.url, storage={"llm-inproc.settings": {"max_tokens": 48}})
    assert browser.execute_script("return document.querySelector('#model-name').textContent") == (
        "smol"
    )
    browser.execute_script(WATCH_STREAM)
    send(browser, "List three colours, one per line.")
    wait_js(browser, "document.querySelector('.msg.assistant')")
    reply = wait_reply_ended(browser)
    assert reply["state"] == "done", reply
    assert reply["text"].strip()
    # Shown while it was being generated, growing, before the reply ended.
    lengths = browser.execute_script("return window.__lengths")
    assert len(set(lengths)) >= 2, lengths
    # tokens/s and context use, from the final chunk's timings and /props' n_ctx.
    assert re.search(r"\d+ tokens · [\d.]+ tokens/s · context \d+/2048 \(\d+%\)", reply["stats"])
    assert int(reply["predicted"]) > 0
    first_text = reply["text"]

    browser.refresh()
    wait_js(browser, "document.body.dataset.phase === 'ready'")
    titles = browser.execute_script(
        "return [...document.querySelectorAll('#conversations .open')].map(b => b.textContent)"
    )
    assert titles == ["List three colours, one per line."]
    assert last_reply(browser)["text"] == first_text
    assert last_reply(browser)["state"] == "done"


def test_stop_ends_the_request_and_keeps_the_partial_reply(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server.url, storage={"llm-inproc.settings": {"max_tokens": 4000}})
    send(browser, "Write a very long story about a dragon who learns to cook, in many chapters.")
    wait_js(browser, "document.querySelector('.msg.assistant .content')?.textContent.length > 0")
    browser.find_element(By.ID, "stop").click()
    reply = wait_reply_ended(browser, 30)
    assert reply["state"] == "stopped", reply
    assert reply["text"].strip() and reply["error"] is None
    assert reply["stats"].startswith("stopped")
    # The server stopped generating: no slot works on it any more.
    deadline = time.monotonic() + 30
    while slots_busy(server):
        assert time.monotonic() < deadline, "a slot still generates after the stop"
        time.sleep(0.05)
    # The partial text is kept, also across a reload.
    browser.refresh()
    wait_js(browser, "document.body.dataset.phase === 'ready'")
    after = last_reply(browser)
    assert after["state"] == "stopped" and after["text"] == reply["text"]


def test_settings_default_to_the_servers_and_what_is_set_is_sent(
    server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server.url)
    browser.find_element(By.ID, "settings-button").click()
    wait_js(browser, "document.querySelector('#settings-dialog').open")
    # The defaults shown are the server's (--temp 0.7; /props' params).
    props = request(server.port, "GET", "/props").json()["default_generation_settings"]["params"]
    placeholder = "return document.querySelector('#set-' + arguments[0]).placeholder"
    assert browser.execute_script(placeholder, "temperature") == "0.7"
    assert browser.execute_script(placeholder, "top_k") == str(props["top_k"])
    set_setting(browser, "system", "You are a helpful pirate.")
    set_setting(browser, "temperature", "0.1")
    set_setting(browser, "max_tokens", "5")
    set_setting(browser, "seed", "42")
    browser.find_element(By.ID, "settings-close").click()

    browser.execute_script(RECORD_FETCH)
    send(browser, "Tell me about the sea.")
    reply = wait_reply_ended(browser)
    assert reply["state"] == "done", reply
    (body,) = (s["body"] for s in sent(browser))
    assert body["messages"] == [
        {"role": "system", "content": "You are a helpful pirate."},
        {"role": "user", "content": "Tell me about the sea."},
    ]
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.1, 5, 42)
    assert body["stream"] is True and "top_k" not in body  # unset: the server's own
    # The server honoured them: five tokens at most, cut at the limit.
    assert 0 < int(reply["predicted"]) <= 5
    assert "stopped at the token limit" in reply["stats"]

    # Kept in the browser.
    browser.refresh()
    wait_js(browser, "document.body.dataset.phase === 'ready'")
    browser.find_element(By.ID, "settings-button").click()
    value = "return document.querySelector('#set-' + arguments[0]).value"
    assert browser.execute_script(value, "temperature") == "0.1"
    assert browser.execute_script(value, "system") == "You are a helpful pirate."
    browser.find_element(By.ID, "settings-reset").click()
    assert browser.execute_script(value, "temperature") == ""
    browser.find_element(By.ID, "settings-close").click()


def test_regenerate_and_edit_resend_the_conversation(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server.url, storage={"llm-inproc.settings": {"max_tokens": 12}})
    browser.execute_script(RECORD_FETCH)
    send(browser, "Say hello.")
    assert wait_reply_ended(browser)["state"] == "done"

    browser.find_element(By.CSS_SELECTOR, ".msg.assistant .regenerate").click()
    assert wait_reply_ended(browser)["state"] == "done"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg")) == 2

    browser.find_element(By.CSS_SELECTOR, ".msg.user .edit").click()
    area = browser.find_element(By.CSS_SELECTOR, ".msg.user .edit-area")
    area.clear()
    area.send_keys("Say goodbye.")
    browser.find_element(By.CSS_SELECTOR, ".msg.user .save-edit").click()
    assert wait_reply_ended(browser)["state"] == "done"
    texts = browser.execute_script(
        "return [...document.querySelectorAll('.msg')].map(m => m.className)"
    )
    assert texts == ["msg user", "msg assistant"]
    bodies = [s["body"]["messages"] for s in sent(browser)]
    assert bodies == [
        [{"role": "user", "content": "Say hello."}],
        [{"role": "user", "content": "Say hello."}],  # the regenerated reply's request
        [{"role": "user", "content": "Say goodbye."}],  # the edit dropped what followed
    ]


def test_conversations_are_renamed_deleted_exported_and_imported(
    server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def conv(i: int, title: str) -> dict[str, Any]:
        messages = [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"**answer** {i}", "state": "done"},
        ]
        return {"id": f"c{i}", "title": title, "created": i, "updated": i, "messages": messages}

    start = {"llm-inproc.conversations": [conv(1, "First"), conv(2, "Second")]}
    open_page(browser, server.url, storage=start)
    titles = "return [...document.querySelectorAll('#conversations .open')].map(b => b.textContent)"
    assert browser.execute_script(titles) == ["Second", "First"]  # the latest first

    browser.find_element(By.CSS_SELECTOR, '#conversations li[data-id="c1"] .rename').click()
    field = browser.find_element(By.CSS_SELECTOR, "#conversations .rename-input")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("Renamed", Keys.ENTER)
    assert browser.execute_script(titles) == ["Second", "Renamed"]

    browser.find_element(By.CSS_SELECTOR, '#conversations li[data-id="c2"] .delete').click()
    browser.switch_to.alert.accept()
    assert browser.execute_script(titles) == ["Renamed"]

    # Opening one shows it, rendered as Markdown.
    browser.find_element(By.CSS_SELECTOR, '#conversations li[data-id="c1"] .open').click()
    assert "<strong>answer</strong> 1" in last_reply(browser)["html"]

    downloads: Path = browser.downloads
    browser.find_element(By.ID, "export").click()
    deadline = time.monotonic() + 30
    while not (files := list(downloads.glob("llm-inproc-chats-*.json"))):
        assert time.monotonic() < deadline, "no export downloaded"
        time.sleep(0.05)
    exported = json.loads(files[0].read_text())
    assert exported["format"] == "llm-inproc-chat"
    assert [c["title"] for c in exported["conversations"]] == ["Renamed"]

    open_page(browser, server.url)  # everything forgotten
    assert browser.execute_script(titles) == []
    browser.find_element(By.ID, "import-file").send_keys(str(files[0]))
    wait_js(browser, "document.querySelectorAll('#conversations li').length === 1")
    assert browser.execute_script(titles) == ["Renamed"]
    assert "<strong>answer</strong> 1" in last_reply(browser)["html"]


def test_the_page_asks_for_the_key_and_then_replies(keyed: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    assert request(keyed.port, "GET", "/props").status == 401
    open_page(browser, keyed.url, ready=False)
    wait_js(browser, "document.querySelector('#key-dialog').open")
    browser.find_element(By.ID, "key-input").send_keys(KEY)
    browser.find_element(By.ID, "key-submit").click()
    wait_js(browser, "document.body.dataset.phase === 'ready'")
    assert browser.execute_script("return sessionStorage.getItem('llm-inproc.api-key')") == KEY
    browser.execute_script(RECORD_FETCH)
    send(browser, "Say hi.")
    reply = wait_reply_ended(browser)
    assert reply["state"] == "done" and reply["text"].strip(), reply
    assert [s["auth"] for s in sent(browser)] == [f"Bearer {KEY}"]


def test_a_refused_key_is_shown_in_the_conversation(keyed: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, keyed.url, ready=False)
    browser.execute_script("sessionStorage.setItem('llm-inproc.api-key', 'wrong')")
    browser.refresh()
    wait_js(browser, "document.querySelector('#key-dialog').open")
    assert "refused" in browser.find_element(By.ID, "key-reason").text
    browser.find_element(By.ID, "key-cancel").click()
    wait_js(browser, "document.body.dataset.phase === 'ready'")
    assert "Invalid API Key" in browser.find_element(By.ID, "status").text
    send(browser, "Say hi.")
    wait_js(browser, "document.querySelector('#key-dialog').open")
    browser.find_element(By.ID, "key-cancel").click()
    reply = wait_reply_ended(browser)
    assert reply["state"] == "error"
    assert reply["error"] == "HTTP 401: Invalid API Key (no API key given)"


def test_a_prompt_too_long_shows_the_servers_error(keyed: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, keyed.url, ready=False)
    browser.execute_script(f"sessionStorage.setItem('llm-inproc.api-key', '{KEY}')")
    browser.refresh()
    wait_js(browser, "document.body.dataset.phase === 'ready'")
    long_text = "Tell me about these words: " + " ".join(f"word{i}" for i in range(800))
    browser.execute_script("document.querySelector('#prompt').value = arguments[0]", long_text)
    browser.find_element(By.ID, "send").click()
    reply = wait_reply_ended(browser)
    assert reply["state"] == "error", reply
    assert reply["error"].startswith("HTTP 400: ")
    assert "the context holds 512" in reply["error"], reply["error"]


def test_the_page_loads_and_says_so_while_the_model_loads(
    chat_model_path: Path, cache_dir: Path, browser: Any
) -> None:
    """The page and its files need neither the key nor the model: it shows "Loading model"
    until /health answers 200, then asks for the key."""
    import uvicorn
    from selenium.webdriver.common.by import By

    from llm_inproc import Options, Session
    from llm_inproc.server.app import create_app
    from llm_inproc.server.flags import ServerSettings

    options = Options(model=str(chat_model_path), context_length=512, threads=1, parallel=1)
    settings = ServerSettings(options=options, api_keys=(KEY,))
    release = threading.Event()

    def load() -> Session:
        release.wait(120)
        return Session(options, cache_dir=cache_dir)

    port = free_port()
    config = uvicorn.Config(
        create_app(settings, load), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for path in ("/", "/index.html", "/webui/app.js", "/webui/style.css"):
            assert request(port, "GET", path).status == 200, path
        assert request(port, "GET", "/props").status == 401
        assert (
            request(port, "GET", "/props", headers={"Authorization": f"Bearer {KEY}"}).status == 503
        )
        open_page(browser, url, ready=False)
        wait_js(browser, "document.querySelector('#status').textContent.includes('Loading model')")
        assert browser.execute_script("return document.body.dataset.phase") == "loading"
        assert not browser.find_element(By.ID, "send").is_enabled()
        release.set()
        wait_js(browser, "document.querySelector('#key-dialog').open")
        browser.find_element(By.ID, "key-input").send_keys(KEY)
        browser.find_element(By.ID, "key-submit").click()
        wait_js(browser, "document.body.dataset.phase === 'ready'")
        assert not browser.find_element(By.ID, "status").is_displayed()
        assert browser.find_element(By.ID, "send").is_enabled()
    finally:
        release.set()
        uv.should_exit = True
        thread.join(60)


def test_the_page_asks_no_other_host_for_anything(server: Server, browser: Any) -> None:
    """Every reference in the packaged files is relative, the page forbids others by its
    Content-Security-Policy, and the browser's network log of a whole exchange (a reply
    with links and an image in Markdown included) holds this server's URLs only."""
    references = []
    for path in PAGE_DIR.iterdir():
        text = path.read_text()
        if path.suffix == ".html":
            references += re.findall(r'(?:src|href)="([^"]*)"', text)
        elif path.suffix == ".css":
            references += re.findall(r"url\(([^)]*)\)|@import\s+([^;]+)", text)
        elif path.suffix == ".js":
            references += re.findall(r'(?:import|from)\s+"([^"]+)"', text)
            references += re.findall(r'(?:fetch|api)\(\s*"([^"]+)"', text)
    assert references, "the scan found nothing to check"
    for ref in references:
        ref = ref if isinstance(ref, str) else "".join(ref)
        assert not re.match(r"^\s*(?:[a-z][a-z0-9+.-]*:(?!,)|//)", ref, re.I), ref
    page = request(server.port, "GET", "/")
    assert "default-src 'self'" in page.headers["content-security-policy"]

    browser.get_log("performance")  # drop what earlier tests logged
    storage = {"llm-inproc.settings": {"max_tokens": 8}}
    reply = "Look: ![logo](https://example.com/logo.png) [site](https://example.com)"
    conv = {"id": "x", "title": "x", "created": 1, "updated": 1, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]}  # fmt: skip
    open_page(browser, server.url, storage={**storage, "llm-inproc.conversations": [conv]})
    send(browser, "Say hi.")
    wait_reply_ended(browser)
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert any(u.endswith("/v1/chat/completions") for u in urls), urls
    assert any(u.endswith("/webui/app.js") for u in urls), urls
    others = [u for u in urls if not u.startswith((server.url + "/", "data:", "blob:"))]
    assert others == []


def test_the_page_fits_a_phone_and_screenshots(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    """At a phone's width the sidebar folds away behind a menu button and nothing is wider
    than the screen. Screenshots go to docs/ with LLM_INPROC_WRITE_SCREENSHOTS=1."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    docs = os.environ.get("LLM_INPROC_WRITE_SCREENSHOTS") == "1"
    out = ROOT / "docs" if docs else tmp_path
    out.mkdir(exist_ok=True)
    # The docs show a whole reply with its code; the layout checks need a few lines.
    budget = 160 if docs else 24
    storage = {"llm-inproc.settings": {"temperature": 0, "max_tokens": budget, "seed": 1}}
    older = [
        {"id": f"o{i}", "title": t, "created": i, "updated": i, "messages": []}
        for i, t in enumerate(["Trip ideas for Lisbon", "Explain KV caches", "Haiku about rain"])
    ]
    open_page(browser, server.url, storage={**storage, "llm-inproc.conversations": older})
    send(browser, "Write a Python function that returns the squares of a list of numbers.")
    assert wait_reply_ended(browser)["state"] == "done"
    browser.save_screenshot(str(out / "webui.png"))

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        wait_js(browser, "window.innerWidth === 390")
        # Folded away (after its slide-out transition).
        wait_js(browser, "document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
        browser.save_screenshot(str(out / "webui-phone.png"))
        browser.find_element(By.ID, "menu").click()
        wait_js(browser, "document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
        # A tap beside the sidebar, on the dimmed page, folds it again.
        scrim = browser.find_element(By.ID, "scrim")
        ActionChains(browser).move_to_element_with_offset(scrim, 170, 0).click().perform()
        wait_js(browser, "document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    for name in ("webui.png", "webui-phone.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- serving: headers, --no-webui, --path ----------------------------------------------------


def test_the_page_and_its_files_are_served_with_their_types(server: Server) -> None:
    page = request(server.port, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert request(server.port, "GET", "/index.html").text == page.text
    types = {"app.js": "text/javascript", "markdown.js": "text/javascript", "style.css": "text/css"}
    for name, kind in types.items():
        got = request(server.port, "GET", f"/webui/{name}")
        assert got.status == 200 and got.headers["content-type"].startswith(kind), name
        again = request(
            server.port, "GET", f"/webui/{name}", headers={"If-None-Match": got.headers["etag"]}
        )
        assert again.status == 304
    missing = request(server.port, "GET", "/webui/nope.js")
    assert missing.status == 404
    assert missing.json() == {
        "error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}
    }
    assert request(server.port, "GET", "/nope").status == 404
    assert request(server.port, "GET", "/v1/models").json()["data"][0]["id"] == "smol"


def test_no_webui_answers_404_at_the_root(chat_model_path: Path, tmp_path: Path) -> None:
    with start_ours(chat_model_path, tmp_path / "s.log", "-c", "256", "--no-webui",
                    env=env_without_key()) as s:  # fmt: skip
        for path in ("/", "/index.html", "/webui/app.js"):
            got = request(s.port, "GET", path)
            assert got.status == 404, path
            assert got.json()["error"] == {
                "code": 404,
                "message": "File Not Found",
                "type": "not_found_error",
            }
        assert request(s.port, "GET", "/health").status == 200


def test_path_serves_a_directory_instead_of_the_page(chat_model_path: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>their ui</title>")
    (site / "assets" / "ui.js").write_text("console.log('theirs');")
    with start_ours(chat_model_path, tmp_path / "s.log", "-c", "256", "--path", str(site),
                    env=env_without_key()) as s:  # fmt: skip
        root = request(s.port, "GET", "/")
        assert root.status == 200 and "their ui" in root.text
        assert request(s.port, "GET", "/index.html").text == root.text
        asset = request(s.port, "GET", "/assets/ui.js")
        assert asset.status == 200 and "theirs" in asset.text
        assert request(s.port, "GET", "/webui/app.js").status == 404  # not ours
        assert request(s.port, "GET", "/missing.txt").json()["error"]["code"] == 404
        assert request(s.port, "GET", "/../../etc/passwd").status == 404
        # The API still wins over the files.
        assert request(s.port, "GET", "/health").json() == {"status": "ok"}
        assert request(s.port, "GET", "/v1/models").status == 200


def test_a_missing_path_directory_stops_the_server_at_startup(tmp_path: Path) -> None:
    code = "from llm_inproc.server import main; raise SystemExit(main())"
    missing = tmp_path / "no-such-dir"
    argv = ["--model", str(tmp_path / "never-loaded.gguf"), "--port", str(free_port())]
    done = run_python(code, *argv, "--path", str(missing), env=child_env())
    assert done.returncode == 1, done.stderr
    assert f"--path {missing}: no such directory" in done.stderr
    assert "listening" not in done.stderr


def test_a_reply_s_thinking_is_shown_apart_and_folded(browser: Any, thinker: Server) -> None:
    """``reasoning_content`` streams into a "Thinking" section, not into the answer, and
    folds away when the reply ends; it is what the API returns for the same request."""
    open_page(browser, thinker.url)
    send(browser, "Is the sea salty?")
    wait_js(browser, "document.querySelector('.msg.assistant .reasoning div')?.textContent")
    wait_reply_ended(browser)
    shown = browser.execute_script(
        "const d = document.querySelector('.msg.assistant .reasoning');"
        "return {open: d.open, summary: d.querySelector('summary').textContent,"
        " text: d.querySelector('div').textContent};"
    )
    body = {"messages": [{"role": "user", "content": "Is the sea salty?"}]}
    api = request(thinker.port, "POST", "/v1/chat/completions", body).json()
    message = api["choices"][0]["message"]
    assert shown == {"open": False, "summary": "Thinking", "text": message["reasoning_content"]}
    assert last_reply(browser)["text"] == message["content"] == ""
