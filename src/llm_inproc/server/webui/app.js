// The chat page: conversations kept in this browser, replies streamed from this server's
// /v1/chat/completions, sampling settings whose defaults are the server's (/props).
//
// Every URL is relative, so the page works behind a path prefix and never asks another
// host for anything. The DOM says what is happening (body[data-phase], body[data-busy],
// .msg[data-state]) for people with dev tools and for the tests.

import { renderMarkdown } from "./markdown.js";

const $ = (selector) => document.querySelector(selector);

const STORE = {
  conversations: "llm-inproc.conversations",
  current: "llm-inproc.current",
  settings: "llm-inproc.settings",
  key: "llm-inproc.api-key", // sessionStorage: forgotten when the tab closes
};
const SAMPLING = ["temperature", "max_tokens", "top_k", "top_p", "min_p", "repeat_penalty", "seed"];
const NEW_TITLE = "New chat";

const state = {
  conversations: loadJson(STORE.conversations, []),
  currentId: localStorage.getItem(STORE.current),
  settings: loadJson(STORE.settings, {}), // only what the user set; the rest is the server's
  defaults: {}, // default_generation_settings.params of /props
  nCtx: 0,
  controller: null, // the AbortController of the reply being generated
};

function loadJson(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function saveConversations() {
  localStorage.setItem(STORE.conversations, JSON.stringify(state.conversations));
  if (state.currentId) localStorage.setItem(STORE.current, state.currentId);
  else localStorage.removeItem(STORE.current);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const newId = () => `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

// -- talking to the server -------------------------------------------------------------------

class HttpError extends Error {}
class StreamError extends Error {}

/** What an HTTP error answer says: llama-server's {"error": {"message"}} or its text. */
async function errorText(res) {
  const text = await res.text().catch(() => "");
  let message = text.trim();
  try {
    const body = JSON.parse(text);
    message = body?.error?.message ?? body?.message ?? message;
  } catch {
    // not JSON: the text itself
  }
  return `HTTP ${res.status}${message ? `: ${message}` : ` ${res.statusText}`}`;
}

let keyPrompt = null;

/** The key the user types in the dialog (null if they cancel); one dialog for all callers. */
function askKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = reason;
  $("#key-input").value = "";
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      keyPrompt = null;
      const key = $("#key-input").value.trim();
      resolve(dialog.returnValue === "ok" && key ? key : null);
    }, { once: true });
  });
  dialog.returnValue = "";
  dialog.showModal();
  return keyPrompt;
}

/** fetch() with the API key; a 401 asks for the key and tries again. */
async function api(path, init = {}) {
  for (;;) {
    const key = sessionStorage.getItem(STORE.key);
    const headers = new Headers(init.headers || {});
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const res = await fetch(path, { ...init, headers, cache: "no-store" });
    if (res.status !== 401) return res;
    const refused = await errorText(res);
    const entered = await askKey(key ? `The server refused the key (${refused}). Enter another.`
      : "This server needs an API key.");
    if (entered === null) throw new HttpError(`${refused} (no API key given)`);
    sessionStorage.setItem(STORE.key, entered);
  }
}

function setStatus(text) {
  const status = $("#status");
  status.textContent = text;
  status.hidden = !text;
}

/** Wait for /health to answer 200, then read the server's defaults from /props. */
async function connect() {
  document.body.dataset.phase = "loading";
  for (;;) {
    let message = "Loading model…";
    try {
      const res = await fetch("health", { cache: "no-store" });
      if (res.ok) break;
      const text = await errorText(res);
      if (!/Loading model/.test(text)) message = text;
    } catch (e) {
      message = `Cannot reach the server (${e.message}); retrying…`;
    }
    setStatus(message);
    await sleep(1000);
  }
  setStatus("Reading the server's settings…");
  try {
    const res = await api("props");
    if (!res.ok) throw new HttpError(await errorText(res));
    const props = await res.json();
    const settings = props.default_generation_settings || {};
    state.defaults = settings.params || {};
    state.nCtx = settings.n_ctx || 0;
    const model = props.model_alias || "";
    $("#model-name").textContent = model.split(/[\\/]/).pop(); // a path's file name
    $("#model-name").title = model;
  } catch (e) {
    // The page still works with the server's defaults unknown; say why they are missing.
    setStatus(`Could not read the server's settings: ${describe(e)}`);
    document.body.dataset.phase = "ready";
    updateControls();
    return;
  }
  setStatus("");
  document.body.dataset.phase = "ready";
  fillSettings();
  updateControls();
}

function describe(error) {
  if (error instanceof HttpError) return error.message;
  if (error instanceof StreamError) return `The server stopped with an error: ${error.message}`;
  if (error instanceof TypeError) return `Network error: the server could not be reached (${error.message})`;
  return `${error.name || "Error"}: ${error.message}`;
}

/** Read the SSE stream into `reply`, calling `update` after each network read. */
async function readStream(res, reply, update) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (onEvent(event, reply)) return;
    }
    update();
  }
  if (buffer.trim()) onEvent(buffer, reply);
}

/** One SSE event into `reply`; true at the end marker. */
function onEvent(event, reply) {
  const data = event.split("\n").filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
  if (!data) return false;
  if (data === "[DONE]") return true;
  const chunk = JSON.parse(data);
  if (chunk.error) throw new StreamError(chunk.error.message || JSON.stringify(chunk.error));
  for (const choice of chunk.choices || []) {
    if (choice.delta?.reasoning_content) {
      reply.reasoning = (reply.reasoning || "") + choice.delta.reasoning_content;
    }
    if (choice.delta?.content) reply.content += choice.delta.content;
    if (choice.finish_reason) reply.finish = choice.finish_reason;
  }
  if (chunk.timings) reply.timings = chunk.timings;
  return false;
}

// -- conversations ---------------------------------------------------------------------------

const current = () => state.conversations.find((c) => c.id === state.currentId) || null;

function startConversation(firstText) {
  const title = firstText.replace(/\s+/g, " ").trim().slice(0, 48) || NEW_TITLE;
  const conv = { id: newId(), title, created: Date.now(), updated: Date.now(), messages: [] };
  state.conversations.unshift(conv);
  state.currentId = conv.id;
  return conv;
}

function requestBody(conv) {
  const messages = conv.messages.slice(0, -1)
    .filter((m) => m.content || !m.error)
    .map((m) => ({ role: m.role, content: m.content }));
  if (state.settings.system) messages.unshift({ role: "system", content: state.settings.system });
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  for (const key of SAMPLING) if (key in state.settings) body[key] = state.settings[key];
  return body;
}

/** Ask for the next assistant message of `conv`, streaming it into the page. */
async function generate(conv) {
  const reply = { role: "assistant", content: "", state: "streaming" };
  conv.messages.push(reply);
  conv.updated = Date.now();
  saveConversations();
  render();
  const controller = new AbortController();
  state.controller = controller;
  updateControls();
  let pending = false;
  const update = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (reply.state === "streaming") renderMessage(conv, conv.messages.length - 1);
    });
  };
  try {
    const res = await api("v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody(conv)),
      signal: controller.signal,
    });
    if (!res.ok) throw new HttpError(await errorText(res));
    await readStream(res, reply, update);
    reply.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      reply.state = "stopped";
    } else {
      reply.state = "error";
      reply.error = describe(e);
    }
  } finally {
    state.controller = null;
    conv.updated = Date.now();
    saveConversations();
    if (state.currentId === conv.id) renderMessage(conv, conv.messages.indexOf(reply));
    renderSidebar();
    updateControls();
  }
}

async function send(text) {
  const conv = current() || startConversation(text);
  conv.messages.push({ role: "user", content: text });
  await generate(conv);
}

function regenerate() {
  const conv = current();
  if (!conv || state.controller) return;
  if (conv.messages.at(-1)?.role === "assistant") conv.messages.pop();
  generate(conv);
}

function editMessage(index) {
  const conv = current();
  const article = $(`#messages .msg[data-index="${index}"]`);
  if (!conv || state.controller || !article) return;
  const bubble = article.querySelector(".bubble");
  bubble.innerHTML = "";
  const area = document.createElement("textarea");
  area.className = "edit-area";
  area.value = conv.messages[index].content;
  const save = button("Save & send", "primary save-edit", () => {
    const text = area.value.trim();
    if (!text) return;
    conv.messages.splice(index); // what came after the edited message no longer follows
    conv.messages.push({ role: "user", content: text });
    generate(conv);
  });
  const cancel = button("Cancel", "cancel-edit", () => render());
  const actions = document.createElement("div");
  actions.className = "edit-actions";
  actions.append(cancel, save);
  bubble.append(area, actions);
  area.focus();
}

// -- rendering -------------------------------------------------------------------------------

function button(label, className, onClick, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  if (title) b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

function statsText(reply) {
  const t = reply.timings;
  if (!t) return "";
  const parts = [`${t.predicted_n} tokens`];
  if (t.predicted_per_second) parts.push(`${t.predicted_per_second.toFixed(1)} tokens/s`);
  const used = (t.cache_n || 0) + (t.prompt_n || 0) + (t.predicted_n || 0);
  if (state.nCtx) parts.push(`context ${used}/${state.nCtx} (${Math.round((100 * used) / state.nCtx)}%)`);
  if (reply.finish === "length") parts.push("stopped at the token limit");
  return parts.join(" · ");
}

function renderMessage(conv, index) {
  const msg = conv.messages[index];
  let article = $(`#messages .msg[data-index="${index}"]`);
  if (!article) {
    article = document.createElement("article");
    article.dataset.index = index;
    $("#messages").append(article);
  }
  article.className = `msg ${msg.role}`;
  article.dataset.state = msg.role === "assistant" ? msg.state || "done" : "done";
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const content = document.createElement("div");
  content.className = "content";
  if (msg.role === "assistant") content.innerHTML = renderMarkdown(msg.content);
  else content.textContent = msg.content;
  if (msg.reasoning) {
    // The model's thinking (reasoning_content), folded away once the answer begins.
    const thinking = document.createElement("details");
    thinking.className = "reasoning";
    thinking.open = msg.state === "streaming" && !msg.content;
    const summary = document.createElement("summary");
    summary.textContent = msg.state === "streaming" && !msg.content ? "Thinking…" : "Thinking";
    const text = document.createElement("div");
    text.textContent = msg.reasoning;
    thinking.append(summary, text);
    bubble.append(thinking);
  }
  bubble.append(content);
  if (msg.error) {
    const error = document.createElement("div");
    error.className = "error";
    error.setAttribute("role", "alert");
    error.textContent = msg.error;
    bubble.append(error);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const last = index === conv.messages.length - 1;
  if (msg.role === "assistant") {
    const stats = document.createElement("span");
    stats.className = "stats";
    stats.textContent = msg.state === "stopped" ? `stopped · ${statsText(msg)}`.replace(/ · $/, "")
      : msg.state === "streaming" ? "generating…" : statsText(msg);
    if (msg.timings) {
      stats.dataset.predictedN = msg.timings.predicted_n;
      stats.dataset.tokensPerSecond = msg.timings.predicted_per_second;
    }
    meta.append(stats);
    if (last && msg.state !== "streaming") meta.append(button("↻ Regenerate", "regenerate", regenerate));
  } else if (msg.role === "user" && !state.controller) {
    meta.append(button("✎ Edit", "edit", () => editMessage(index), "Edit and send again"));
  }
  article.replaceChildren(bubble, meta);
  const box = $("#messages");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 120 || msg.state !== "streaming") {
    box.scrollTop = box.scrollHeight;
  }
}

function render() {
  const conv = current();
  $("#messages").replaceChildren();
  $("#conv-title").textContent = conv ? conv.title : NEW_TITLE;
  if (conv) conv.messages.forEach((_, i) => renderMessage(conv, i));
  else {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = "Start a conversation: type a message below.";
    $("#messages").append(empty);
  }
  renderSidebar();
}

function renderSidebar() {
  const list = $("#conversations");
  list.replaceChildren();
  const sorted = [...state.conversations].sort((a, b) => b.updated - a.updated);
  for (const conv of sorted) {
    const li = document.createElement("li");
    li.dataset.id = conv.id;
    if (conv.id === state.currentId) li.className = "current";
    const open = button(conv.title, "open", () => {
      if (state.controller) return;
      state.currentId = conv.id;
      saveConversations();
      closeSidebar();
      render();
    }, conv.title);
    const rename = button("✎", "rename", () => renameConversation(li, conv), "Rename");
    const remove = button("✕", "delete", () => deleteConversation(conv), "Delete");
    li.append(open, rename, remove);
    list.append(li);
  }
}

function renameConversation(li, conv) {
  const input = document.createElement("input");
  input.className = "rename-input";
  input.value = conv.title;
  input.setAttribute("aria-label", "Conversation name");
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    if (keep && input.value.trim()) conv.title = input.value.trim();
    saveConversations();
    render();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function deleteConversation(conv) {
  if (state.controller && conv.id === state.currentId) return;
  if (!confirm(`Delete the conversation "${conv.title}"?`)) return;
  state.conversations = state.conversations.filter((c) => c.id !== conv.id);
  if (state.currentId === conv.id) state.currentId = null;
  saveConversations();
  render();
}

function updateControls() {
  const busy = Boolean(state.controller);
  const ready = document.body.dataset.phase === "ready";
  document.body.dataset.busy = String(busy);
  $("#send").hidden = busy;
  $("#send").disabled = !ready;
  $("#stop").hidden = !busy;
  for (const b of document.querySelectorAll("#messages .edit, #messages .regenerate")) b.disabled = busy;
}

// -- export and import -----------------------------------------------------------------------

function exportConversations() {
  const data = { format: "llm-inproc-chat", version: 1, conversations: state.conversations };
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `llm-inproc-chats-${new Date().toISOString().slice(0, 10)}.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

/** Conversations from an exported file (or one conversation, or a list of them). */
function importedConversations(data) {
  const list = Array.isArray(data) ? data : Array.isArray(data?.conversations) ? data.conversations : [data];
  const valid = list.filter((c) => c && Array.isArray(c.messages) && c.messages.every(
    (m) => m && typeof m.content === "string" && ["user", "assistant", "system"].includes(m.role)));
  if (!valid.length) throw new Error("no conversations in this file");
  const ids = new Set(state.conversations.map((c) => c.id));
  return valid.map((c) => ({
    id: c.id && !ids.has(c.id) ? String(c.id) : newId(),
    title: String(c.title || NEW_TITLE),
    created: Number(c.created) || Date.now(),
    updated: Number(c.updated) || Date.now(),
    messages: c.messages.map((m) => ({ ...m, state: m.state === "streaming" ? "stopped" : m.state })),
  }));
}

async function importFile(file) {
  try {
    const added = importedConversations(JSON.parse(await file.text()));
    state.conversations.unshift(...added);
    state.currentId = added[0].id;
    saveConversations();
    render();
    setStatus("");
  } catch (e) {
    setStatus(`Could not import ${file.name}: ${e.message}`);
  }
}

// -- settings --------------------------------------------------------------------------------

function fillSettings() {
  for (const input of document.querySelectorAll("#settings-form [data-key]")) {
    const key = input.dataset.key;
    const value = state.settings[key];
    input.value = value === undefined ? "" : String(value);
    if (key === "system") continue;
    const fallback = state.defaults[key === "max_tokens" ? "n_predict" : key];
    input.placeholder = key === "seed" && (fallback === -1 || fallback === 4294967295) ? "random"
      : fallback === undefined ? "" : String(fallback);
  }
}

function onSettingInput(input) {
  const key = input.dataset.key;
  const raw = input.value;
  if (key === "system") {
    if (raw.trim()) state.settings.system = raw;
    else delete state.settings.system;
  } else if (raw.trim() === "" || Number.isNaN(Number(raw))) {
    delete state.settings[key];
  } else {
    state.settings[key] = Number(raw);
  }
  localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
}

// -- wiring ----------------------------------------------------------------------------------

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("#scrim").hidden = true;
}

function wire() {
  const prompt = $("#prompt");
  const submit = () => {
    const text = prompt.value.trim();
    if (!text || state.controller || document.body.dataset.phase !== "ready") return;
    prompt.value = "";
    prompt.style.height = "";
    send(text);
  };
  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  prompt.addEventListener("input", () => {
    prompt.style.height = "";
    prompt.style.height = `${Math.min(prompt.scrollHeight, 200)}px`;
  });
  $("#stop").addEventListener("click", () => state.controller?.abort());
  $("#new-chat").addEventListener("click", () => {
    if (state.controller) return;
    state.currentId = null;
    saveConversations();
    closeSidebar();
    render();
    prompt.focus();
  });
  $("#menu").addEventListener("click", () => {
    document.body.classList.add("sidebar-open");
    $("#scrim").hidden = false;
  });
  $("#scrim").addEventListener("click", closeSidebar);
  $("#export").addEventListener("click", exportConversations);
  $("#import-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) importFile(file);
  });
  $("#settings-button").addEventListener("click", () => {
    fillSettings();
    $("#settings-dialog").showModal();
  });
  for (const input of document.querySelectorAll("#settings-form [data-key]")) {
    input.addEventListener("input", () => onSettingInput(input));
  }
  $("#settings-reset").addEventListener("click", () => {
    const system = state.settings.system;
    state.settings = system ? { system } : {};
    localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
    fillSettings();
  });
  $("#key-cancel").addEventListener("click", () => $("#key-dialog").close("cancel"));
  $("#key-submit").addEventListener("click", (e) => {
    e.preventDefault();
    if ($("#key-input").value.trim()) $("#key-dialog").close("ok");
  });
}

// A reply that was streaming when the page went away ended there.
for (const conv of state.conversations) {
  for (const m of conv.messages) if (m.state === "streaming") m.state = "stopped";
}
wire();
render();
updateControls();
connect();
