// The task table and one task's view, and the start of the page. Each view builds into
// `main` and answers its clean-up.

// --- tasks ---------------------------------------------------------------------------------

/** The most rows the live table adds above its page before it asks to be reloaded. */
const LIVE_ROWS = 100;

function tasksView(main, params) {
  const filters = { state: params.get("state") ?? "", queue: params.get("queue") ?? "",
                    kind: params.get("kind") ?? "", label: params.get("label") ?? "" };
  const limit = params.get("limit") ?? "50";
  // The cursors of the pages before this one, so "Newer" can go back.
  const cursors = [];
  let cursor = null, next = null, added = 0;
  const rows = new Map();
  const selected = new Set();

  const field = (name, placeholder) =>
    el("input", { name, value: filters[name], placeholder, size: 14, list: `${name}-choices` });
  // What the server knows, offered as the fields' suggestions (any name may still be typed).
  const choices = { queue: el("datalist", { id: "queue-choices" }), kind: el("datalist", { id: "kind-choices" }) };
  const offer = (list, names) => list.replaceChildren(...names.map((name) => el("option", { value: name })));
  api("v1/queues").then((page) => offer(choices.queue, page.queues.map((q) => q.name)), () => {});
  api("v1/kinds").then((page) => offer(choices.kind, page.kinds.map((k) => k.kind)), () => {});
  const toolbar = el("form", { class: "toolbar", id: "filters" },
    el("label", {}, "state", el("select", { name: "state" }, el("option", { value: "" }, "any"),
      STATES.map((s) => el("option", { value: s, selected: s === filters.state }, s)))),
    el("label", {}, "queue", field("queue", "any")),
    el("label", {}, "kind", field("kind", "any")),
    el("label", {}, "label", field("label", "key:value")),
    el("label", {}, "page size", el("select", { name: "limit" },
      ["20", "50", "100", "200"].map((n) => el("option", { value: n, selected: n === limit }, n)))),
    el("button", { class: "primary" }, "Filter"),
    el("span", { class: "grow" }),
    el("span", { id: "selection", class: "muted" }, ""),
    el("button", { id: "bulk-cancel", disabled: true, onclick: () => bulk("cancel") }, "Cancel selected"),
    el("button", { id: "bulk-retry", disabled: true, onclick: () => bulk("retry") }, "Retry selected"));
  toolbar.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const name of ["state", "queue", "kind", "label", "limit"]) {
      const value = toolbar.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    location.hash = `#/tasks?${query}`;
  });
  for (const button of toolbar.querySelectorAll("button[id]")) button.type = "button";

  const all = el("input", { type: "checkbox", title: "select the page", onchange: (e) => {
    for (const [id, row] of rows) {
      $("input", row).checked = e.target.checked;
      if (e.target.checked) selected.add(id); else selected.delete(id);
    }
    selectionChanged();
  } });
  const body = el("tbody");
  const notice = el("div", { class: "notice", hidden: true });
  const pageLabel = el("span", { class: "muted" });
  const newer = el("button", { id: "newer", onclick: () => { cursor = cursors.pop() ?? null; load(); } }, "← Newer");
  const older = el("button", { id: "older", onclick: () => { cursors.push(cursor); cursor = next; load(); } }, "Older →");
  main.append(el("h1", {}, "Tasks"), toolbar, choices.queue, choices.kind, notice,
    el("table", { id: "tasks" },
      el("thead", {}, el("tr", {}, el("th", {}, all), el("th", {}, "id"), el("th", {}, "queue"),
        el("th", {}, "kind"), el("th", {}, "state"), el("th", {}, "progress"), el("th", { class: "num" }, "attempt"),
        el("th", {}, "created"), el("th", {}, "finished"))),
      body),
    el("div", { class: "pager" }, newer, older, pageLabel));

  function selectionChanged() {
    $("#selection").textContent = selected.size ? `${selected.size} selected` : "";
    $("#bulk-cancel").disabled = $("#bulk-retry").disabled = selected.size === 0;
  }

  function row(task) {
    const check = el("input", { type: "checkbox", onchange: (e) => {
      if (e.target.checked) selected.add(task.id); else selected.delete(task.id);
      selectionChanged();
    } });
    const tr = el("tr", { "data-id": task.id },
      el("td", {}, check), el("td", {}, taskLink(task.id)), el("td", {}, task.queue), el("td", {}, task.kind),
      el("td", { class: "state" }, pill(task.state)), el("td", { class: "progress" }, task.state === "running" && task.progress ? progressBar(task.progress) : ""),
      el("td", { class: "num attempt" }, task.attempt), el("td", {}, when(task.created_at)),
      el("td", { class: "finished" }, when(task.finished_at)));
    rows.set(task.id, tr);
    return tr;
  }

  async function load() {
    const query = new URLSearchParams({ limit });
    if (cursor) query.set("cursor", cursor);
    else for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
    let page;
    try {
      page = await api(`v1/tasks?${query}`);
    } catch (error) {
      report(`Listing tasks`, error);
      return;
    }
    rows.clear();
    selected.clear();
    all.checked = false;
    added = 0;
    notice.hidden = true;
    body.replaceChildren(...page.tasks.map(row));
    if (!page.tasks.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No tasks match.")));
    next = page.next_cursor;
    newer.disabled = cursor === null;
    older.disabled = !next;
    counted();
    selectionChanged();
  }

  function counted() {
    pageLabel.textContent = `page ${cursors.length + 1} · ${rows.size} tasks` +
      (cursor ? "" : " · new tasks appear live");
  }

  /** Fits an event to the table: updates its row, or adds a new task on the first page. */
  function onEvent(event) {
    const tr = rows.get(event.task_id);
    if (tr) {
      $(".state", tr).replaceChildren(pill(event.state));
      $(".attempt", tr).textContent = event.attempt;
      // A bar while it runs; the last report of an ended attempt says nothing of the next.
      if (event.progress) $(".progress", tr).replaceChildren(progressBar(event.progress));
      else if (event.state !== "running") $(".progress", tr).replaceChildren();
      if (!event.progress) $(".finished", tr).textContent = TERMINAL.has(event.state) ? when(event.at) : "";
      return;
    }
    const fresh = event.attempt === 0 && ["waiting", "scheduled", "queued"].includes(event.state);
    if (!fresh || cursor !== null) return;
    if ((filters.queue && filters.queue !== event.queue) || (filters.kind && filters.kind !== event.kind) ||
        (filters.state && filters.state !== event.state)) return;
    if (filters.label || added >= LIVE_ROWS) {
      notice.hidden = false;
      notice.replaceChildren("New tasks arrived. ", el("button", { class: "link", onclick: load }, "Show the newest"));
      return;
    }
    added += 1;
    $(".empty", body)?.parentElement.remove();
    body.prepend(row({ id: event.task_id, queue: event.queue, kind: event.kind, state: event.state,
                       attempt: event.attempt, progress: null, created_at: event.at, finished_at: null }));
    counted();
  }

  async function bulk(action) {
    const ids = [...selected];
    const failures = [];
    for (const id of ids) {
      try {
        await call("POST", `v1/tasks/${encodeURIComponent(id)}/${action}`, {});
      } catch (error) {
        failures.push(`${shortId(id)}: ${error.message}`);
      }
    }
    if (failures.length) showProblem(`${action} of ${failures.length} of ${ids.length} tasks failed.\n${failures.join("\n")}`);
    else hideProblem();
    load();
  }

  firehose.listeners.add(onEvent);
  load();
  return () => firehose.listeners.delete(onEvent);
}

// --- one task ------------------------------------------------------------------------------

/** The most events a task's timeline shows (the newest); a long task reports progress often. */
const TIMELINE = 200;
/** The most children a task's page lists (the newest). */
const CHILDREN = 50;

function taskView(main, id) {
  const controller = new AbortController();
  const header = el("h1", {}, "Task ", el("span", { class: "mono" }, id));
  const content = el("div");
  const timeline = el("ol", { class: "timeline", id: "timeline" });
  main.append(header, content);
  let task = null;

  const action = (name, label, method, path, enabled, after) =>
    el("button", { id: name, class: name === "delete" ? "danger" : "", disabled: !enabled, onclick: async (e) => {
      if (name === "delete" && e.target.dataset.armed !== "yes") {
        e.target.dataset.armed = "yes";
        e.target.textContent = "Really delete?";
        return;
      }
      const done = await act(`${label} ${shortId(id)}`, () => call(method, path, method === "POST" ? {} : undefined));
      if (done !== undefined) after();
    } }, label);

  function render() {
    const t = task;
    const base = `v1/tasks/${encodeURIComponent(id)}`;
    const pair = (name, value) => [el("dt", {}, name), el("dd", {}, value ?? "–")];
    const labels = Object.entries(t.labels ?? {}).map(([k, v]) => el("span", { class: "pill" }, `${k}: ${v}`));
    content.replaceChildren(
      el("div", { class: "row" }, pill(t.state), t.cancel_requested ? el("span", { class: "pill paused" }, "cancel requested") : null,
        el("span", { class: "grow" }),
        action("cancel", "Cancel", "POST", `${base}/cancel`, !TERMINAL.has(t.state), load),
        action("retry", "Retry", "POST", `${base}/retry`, t.state === "failed" || t.state === "cancelled", () => {
          load();
          follow();
        }),
        action("delete", "Delete", "DELETE", base, TERMINAL.has(t.state), () => { location.hash = "#/tasks"; })),
      el("h2", {}, "Progress"),
      el("div", { class: "row", id: "progress" },
        progressBar(t.state === "succeeded" ? { ...t.progress, percent: 100 } : t.progress, true),
        el("span", { class: "muted" }, t.progress ? `${Math.round(t.progress.percent)}% ${t.progress.message ?? ""}` : "no report")),
      el("div", { class: "grid2" }, el("div", {}, el("h2", {}, "Details"),
      el("dl", { class: "fields" },
        pair("queue", el("a", { href: `#/tasks?queue=${encodeURIComponent(t.queue)}` }, t.queue)), pair("kind", t.kind),
        pair("attempt", `${t.attempt} of ${t.max_attempts}`), pair("priority", t.priority),
        pair("created", stamp(t.created_at)), pair("started", stamp(t.started_at)),
        pair("finished", stamp(t.finished_at)), pair("run at", stamp(t.run_at)),
        pair("timeout", t.timeout_ms === null ? "none" : `${t.timeout_ms} ms`), pair("labels", labels.length ? labels : "none"),
        pair("parents", t.after.length ? t.after.flatMap((p) => [taskLink(p), " "]) : "none"),
        pair("after policy", t.after_policy), pair("webhook", t.callback_status), pair("input from", t.input_from ? taskLink(t.input_from) : null))),
        el("div", {}, el("h2", {}, "Events"), timeline)),
      el("div", { class: "grid2" },
        el("div", {}, el("h2", {}, "Input"), el("pre", { id: "input" }, json(t.input))),
        el("div", {}, el("h2", {}, t.error ? "Error" : "Result"),
          el("pre", { id: "outcome" }, t.error ? `${t.error.type}: ${t.error.message}` : t.result === null ? "–" : json(t.result)))),
      el("h2", {}, `Failed attempts (${t.errors.length})`),
      t.errors.length ? el("table", {}, el("thead", {}, el("tr", {}, el("th", { class: "num" }, "attempt"),
        el("th", {}, "type"), el("th", {}, "message"), el("th", {}, "at"))),
        el("tbody", {}, t.errors.map((e) => el("tr", {}, el("td", { class: "num" }, e.attempt), el("td", {}, e.type),
          el("td", {}, e.message), el("td", {}, when(e.at))))))
        : el("p", { class: "muted" }, "None."),
      el("h2", {}, "Children"),
      el("div", { id: "children" }, children ?? el("p", { class: "muted" }, "Loading…")));
  }

  /** The tasks that name this one in their `after` list, the newest first, one page. */
  let children = null;
  async function loadChildren() {
    try {
      const page = await api(`v1/tasks?parent=${encodeURIComponent(id)}&limit=${CHILDREN}`);
      children = page.tasks.length
        ? el("ul", { class: "children" }, page.tasks.map((c) => el("li", { "data-child": c.id }, taskLink(c.id), " ", pill(c.state), " ", c.kind)),
          page.next_cursor ? el("li", { class: "muted" }, `the newest ${CHILDREN} shown`) : null)
        : el("p", { class: "muted" }, "None.");
    } catch (error) {
      children = el("p", { class: "muted" }, `Children could not be listed: ${error.message}`);
    }
    $("#children")?.replaceChildren(children);
  }

  async function load() {
    try {
      task = await api(`v1/tasks/${encodeURIComponent(id)}`);
      render();
      loadChildren();
    } catch (error) {
      report(`Loading task ${id}`, error);
    }
  }

  let reload = null;
  const onEvent = (event) => {
    timeline.prepend(el("li", {}, el("span", { class: "muted mono" }, `#${event.seq}`), when(event.at), pill(event.state),
      `attempt ${event.attempt}`, event.progress ? ` · ${Math.round(event.progress.percent)}% ${event.progress.message ?? ""}` : ""));
    while (timeline.childElementCount > TIMELINE) timeline.lastChild.remove();
    if (event.progress && task && !TERMINAL.has(task.state)) {
      task.progress = event.progress;
      $("#progress")?.replaceChildren(progressBar(event.progress, true),
        el("span", { class: "muted" }, `${Math.round(event.progress.percent)}% ${event.progress.message ?? ""}`));
    } else if (!event.progress) {
      clearTimeout(reload);
      reload = setTimeout(load, 100);
    }
  };
  // The task's events: its log from the start, then live until it ends. A retry follows it
  // again from the last event seen (the stream of an ended task has ended).
  let lastSeq = 0, following = false;
  async function follow() {
    if (following) return;
    following = true;
    await stream(`v1/tasks/${encodeURIComponent(id)}/events`, {
      signal: controller.signal,
      lastEventId: lastSeq,
      onTask: (event) => { lastSeq = event.seq; onEvent(event); },
    });
    following = false;
  }
  load().then(follow);
  return () => controller.abort();
}

// --- start ---------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
firehose.run();
route();
readiness();
setInterval(readiness, 5000);
