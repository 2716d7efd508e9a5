"use strict";
// The console's plumbing: DOM building, calls to the API, the key prompt, the problem banner,
// the event streams and the router. The views (console-queues.js, console-tasks.js) build on
// these.
//
// Every call carries the API key the page was given (kept in this tab's sessionStorage only,
// never in a URL); a 401 asks for one. Event streams are read with fetch, since EventSource
// cannot send an Authorization header. URLs are relative to the <base> the server set, so
// the page works under a proxy's prefix as at the root. Task data only ever reaches the DOM
// as text (el() appends strings as text nodes): inputs are the submitter's, not ours.

const $ = (selector, root = document) => root.querySelector(selector);

/** An element with attributes (`on…` become listeners) and children (strings become text). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const STATES = ["waiting", "scheduled", "queued", "running", "succeeded", "failed", "cancelled"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const pill = (state) => el("span", { class: `pill state-${STATES.includes(state) ? state : "x"}` }, state);
const shortId = (id) => `${String(id).slice(0, 8)}…${String(id).slice(-4)}`;
const taskLink = (id) => el("a", { href: `#/tasks/${encodeURIComponent(id)}`, class: "mono", title: id }, shortId(id));
const json = (value) => JSON.stringify(value, null, 2);

/** A time in the browser's zone, as `2025-01-31 14:05:09.123` (without ms: `seconds`). */
function stamp(iso, precision = "ms") {
  if (!iso) return null;
  const d = new Date(iso);
  const two = (n) => String(n).padStart(2, "0");
  const text = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  return precision === "ms" ? `${text}.${String(d.getMilliseconds()).padStart(3, "0")}` : text;
}

/** A time as a table shows it: today's without the date. */
function when(iso) {
  if (!iso) return "";
  const full = stamp(iso);
  return new Date(iso).toDateString() === new Date().toDateString() ? full.slice(11) : full;
}

function age(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 7200000) return `${Math.round(ms / 60000)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function progressBar(progress, big = false) {
  const percent = progress ? Math.max(0, Math.min(100, progress.percent)) : 0;
  return el("div", { class: big ? "bar big" : "bar", title: progress ? `${Math.round(percent)}%` : "" },
    el("div", { style: `width:${percent}%` }));
}

// --- the API -------------------------------------------------------------------------------

/** A problem+json answer (RFC 9457), or any other failed call. */
class Problem extends Error {
  constructor(status, document) {
    const title = document?.title || `HTTP ${status}`;
    super(document?.detail ? `${title}: ${document.detail}` : title);
    this.status = status;
  }
}

const keyForm = $("#key");
const authorization = () => {
  const key = sessionStorage.getItem("taskd-key");
  return key ? { authorization: `Bearer ${key}` } : {};
};

function askForKey() {
  keyForm.hidden = false;
  $("input", keyForm).focus();
}

/** Calls the API; answers the JSON body, or throws a Problem carrying the server's words. */
async function call(method, path, body) {
  const init = { method, headers: authorization() };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) askForKey();
  const text = await response.text();
  let document = null;
  try { document = text ? JSON.parse(text) : null; } catch { document = null; }
  if (!response.ok) throw new Problem(response.status, document);
  return document;
}
const api = (path) => call("GET", path);

/** Runs an action; a failure shows in the banner, prefixed with what was being done. */
async function act(what, action) {
  try {
    const result = await action();
    hideProblem();
    return result;
  } catch (error) {
    report(what, error);
    return undefined;
  }
}

/** Shows why `what` failed; a 401 shows the key prompt instead (askForKey), not a banner. */
function report(what, error) {
  if (error.status !== 401) showProblem(`${what}: ${error.message}`);
}

function showProblem(message) {
  $("#problem-text").textContent = message;
  $("#problem").hidden = false;
}
function hideProblem() { $("#problem").hidden = true; }
$("#problem-close").addEventListener("click", hideProblem);

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("taskd-key", keyForm.elements.secret.value.trim());
  keyForm.elements.secret.value = "";
  keyForm.hidden = true;
  $("#forget").hidden = false;
  hideProblem();
  firehose.restart();
  route();
});
$("#forget").hidden = !sessionStorage.getItem("taskd-key");
$("#forget").addEventListener("click", () => {
  sessionStorage.removeItem("taskd-key");
  location.reload();
});

// --- event streams -------------------------------------------------------------------------

/**
 * Reads the SSE stream at `path`, calling `onTask` with each `task` event's data, until it
 * ends or `signal` aborts. Answers how it ended: "ended", "aborted" or a Problem.
 */
async function stream(path, { signal, lastEventId, onTask, onOpen }) {
  const headers = authorization();
  if (lastEventId !== undefined) headers["last-event-id"] = String(lastEventId);
  try {
    const response = await fetch(path, { headers, signal });
    if (!response.ok) {
      if (response.status === 401) askForKey();
      let document = null;
      try { document = await response.json(); } catch { document = null; }
      return new Problem(response.status, document);
    }
    onOpen?.();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const lines = buffer.slice(0, end).split("\n");
        buffer = buffer.slice(end + 2);
        const kind = lines.find((l) => l.startsWith("event:"))?.slice(6).trim();
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("");
        if (kind === "task" && data) onTask(JSON.parse(data));
      }
    }
  } catch (error) {
    return signal?.aborted ? "aborted" : error;
  }
}

/** The firehose (every task's events), shared by the views; reconnects from its last seq. */
const firehose = {
  listeners: new Set(),
  lastSeq: undefined,
  controller: null,
  async run() {
    const controller = new AbortController();
    this.controller = controller;
    while (!controller.signal.aborted) {
      const ended = await stream("v1/events", {
        signal: controller.signal,
        lastEventId: this.lastSeq,
        onOpen: () => { $("#live").textContent = "live"; $("#live").classList.add("on"); },
        onTask: (event) => {
          this.lastSeq = event.seq;
          for (const listener of this.listeners) listener(event);
        },
      });
      if (ended === "aborted" || this.controller !== controller) return;
      $("#live").textContent = "offline";
      $("#live").classList.remove("on");
      await new Promise((resolve) => setTimeout(resolve, ended instanceof Problem ? 5000 : 1000));
    }
  },
  restart() {
    this.controller?.abort();
    this.lastSeq = undefined;
    this.run();
  },
};

// --- the router ----------------------------------------------------------------------------

/** The open view's clean-up (timers, streams, listeners), run when another view opens. */
let leaveView = () => {};

/** `#/tasks?state=failed` → { path: ["tasks"], params }. */
function parseHash() {
  const [path, query = ""] = (location.hash.slice(1) || "/queues").split("?");
  return { path: path.split(/\//).filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

function route() {
  leaveView();
  leaveView = () => {};
  const { path, params } = parseHash();
  const [view = "queues", id] = path;
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
  const main = $("#view");
  main.replaceChildren();
  const open = { queues: queuesView, tasks: id ? taskView : tasksView, schedules: schedulesView }[view];
  const leave = (open || queuesView)(main, id ?? params, params);
  if (typeof leave === "function") leaveView = leave;
}

/** Polls `refresh` every `ms` while the view is open; answers the clean-up. */
function every(ms, refresh) {
  refresh();
  const timer = setInterval(refresh, ms);
  return () => clearInterval(timer);
}

async function readiness() {
  const answer = await fetch("readyz").then((r) => (r.ok ? "ready" : "not ready"), () => "unreachable");
  $("#ready").textContent = answer;
}
