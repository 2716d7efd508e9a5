// The views: queues, the tasks table, one task, schedules. Each builds into `main` and
// answers its clean-up.

// --- queues --------------------------------------------------------------------------------

/** Samples of each queue's `finished_last_minute`, taken while the page is open (10 min). */
const throughput = new Map();
const SAMPLES = 300;

/** The key of the samples of all queues together (no queue name is empty). */
const ALL = "";

function sample(queues) {
  const now = Date.now();
  const total = queues.reduce((sum, q) => sum + q.finished_last_minute, 0);
  for (const [name, finished] of [[ALL, total], ...queues.map((q) => [q.name, q.finished_last_minute])]) {
    const samples = throughput.get(name) ?? [];
    samples.push([now, finished]);
    while (samples.length > SAMPLES) samples.shift();
    throughput.set(name, samples);
  }
}

/** A line of a queue's (or all queues') finished-per-minute over the last ten minutes. */
function chart(name, width = 110, height = 28) {
  const samples = throughput.get(name) ?? [];
  // Ten minutes at most; less (but 20 s at least) while the page has sampled less.
  const now = Date.now();
  const span = Math.min(600000, Math.max(20000, now - (samples[0]?.[0] ?? now)));
  const top = Math.max(1, ...samples.map(([, n]) => n)) * 1.15;
  const points = samples.map(([t, n]) =>
    `${(width - ((now - t) / span) * width).toFixed(1)},${(height - 2 - (n / top) * (height - 4)).toFixed(1)}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.dataset.samples = samples.length;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const title = document.createElementNS(svg.namespaceURI, "title");
  title.textContent = `finished per minute, sampled since this page opened (peak ${Math.round(top / 1.15)})`;
  const axis = document.createElementNS(svg.namespaceURI, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", 0);
  axis.setAttribute("x2", width);
  axis.setAttribute("y1", height - 1.5);
  axis.setAttribute("y2", height - 1.5);
  svg.append(title, axis);
  if (points.length > 1) {
    const area = document.createElementNS(svg.namespaceURI, "polygon");
    area.setAttribute("class", "area");
    area.setAttribute("points", `${points[0].split(",")[0]},${height} ${points.join(" ")} ${width},${height}`);
    const line = document.createElementNS(svg.namespaceURI, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(area, line);
  }
  return svg;
}

const limits = (q) => el("div", { class: "limits", title: "–: no limit of the queue's own" },
  el("div", {}, `concurrency ${q.concurrency ?? "–"}`),
  el("div", {}, `max queued ${q.max_queued ?? "–"}`),
  el("div", {}, q.rate ? `rate ${q.rate.limit} / ${q.rate.per_ms} ms` : "rate –"));

function queuesView(main) {
  const body = el("tbody");
  const editor = el("div");
  const summary = el("div", { class: "summary" });
  main.append(
    el("h1", {}, "Queues"),
    summary,
    el("table", { id: "queues" },
      el("thead", {}, el("tr", {},
        el("th", {}, "queue"),
        STATES.map((s) => el("th", { class: "num" }, s)),
        el("th", { class: "num" }, "oldest queued"), el("th", { class: "num" }, "finished / min"),
        el("th", {}, "trend"), el("th", {}, "limits"), el("th", {}, ""))),
      body),
    el("p", { class: "muted" }, "The trend lines sample each queue's finished-per-minute every 2 s while this page is open, over the last 10 minutes at most."),
    editor);

  const refresh = async () => {
    let page;
    try {
      page = await api("v1/queues");
    } catch (error) {
      report(`Loading the queues`, error);
      return;
    }
    sample(page.queues);
    const sum = (state) => page.queues.reduce((n, q) => n + (q.counts[state] ?? 0), 0);
    const figure = (label, value) => el("div", { class: "figure" }, el("div", { class: "value" }, value), el("div", { class: "muted" }, label));
    summary.replaceChildren(
      figure("queues", page.queues.length),
      figure("waiting to run", sum("waiting") + sum("scheduled") + sum("queued")),
      figure("running", sum("running")),
      figure("finished in the last minute", page.queues.reduce((n, q) => n + q.finished_last_minute, 0)),
      el("div", { class: "figure grow" }, chart(ALL, 560, 56), el("div", { class: "muted" },
        `finished per minute, all queues, since this page opened (10 min at most); peak ${Math.max(0, ...throughput.get(ALL).map(([, n]) => n))}`)));
    body.replaceChildren(...page.queues.map((q) => el("tr", { "data-queue": q.name },
      el("td", { class: "nowrap" }, el("a", { href: `#/tasks?queue=${encodeURIComponent(q.name)}` }, q.name), " ",
        q.paused ? el("span", { class: "pill paused" }, "paused") : el("span", { class: "pill state-succeeded" }, "active"),
        q.remote ? [" ", el("span", { class: "pill" }, "remote")] : null),
      STATES.map((s) => el("td", { class: "num" }, q.counts[s] ?? 0)),
      el("td", { class: "num" }, age(q.oldest_queued_age_ms)),
      el("td", { class: "num" }, q.finished_last_minute),
      el("td", {}, chart(q.name)),
      el("td", {}, limits(q)),
      el("td", { class: "nowrap" },
        el("button", { class: "pause", onclick: () => patchQueue(q.name, { paused: !q.paused }, refresh) },
          q.paused ? "Resume" : "Pause"), " ",
        el("button", { class: "edit-queue", onclick: () => editQueue(editor, q, refresh) }, "Edit")))));
    if (!page.queues.length) body.append(el("tr", {}, el("td", { colspan: 14, class: "empty" }, "No queues yet: submit a task.")));
  };
  return every(2000, refresh);
}

async function patchQueue(name, change, then) {
  const done = await act(`Changing queue ${name}`, () => call("PATCH", `v1/queues/${encodeURIComponent(name)}`, change));
  if (done) then();
  return done;
}

/** The settings form of one queue; an empty field clears the limit (null). */
function editQueue(editor, q, then) {
  const number = (name, value) => el("input", { type: "number", name, value: value ?? "", min: 0 });
  const form = el("form", { class: "card edit", id: "queue-editor" },
    el("strong", {}, `Settings of ${q.name}`),
    el("div", { class: "row" },
      el("label", {}, "concurrency", number("concurrency", q.concurrency)),
      el("label", {}, "max queued", number("max_queued", q.max_queued)),
      el("label", {}, "rate: starts", number("limit", q.rate?.limit)),
      el("label", {}, "per ms", number("per_ms", q.rate?.per_ms)),
      el("button", { class: "primary" }, "Save"),
      el("button", { type: "button", onclick: () => editor.replaceChildren() }, "Close")),
    el("p", { class: "muted" }, "An empty field clears the limit."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (name) => (form.elements[name].value.trim() === "" ? null : Number(form.elements[name].value));
    const limit = value("limit"), perMs = value("per_ms");
    const change = {
      concurrency: value("concurrency"),
      max_queued: value("max_queued"),
      rate: limit === null && perMs === null ? null : { limit, per_ms: perMs },
    };
    if (await patchQueue(q.name, change, then)) editor.replaceChildren();
  });
  editor.replaceChildren(form);
}

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

  const field = (name, placeholder) => el("input", { name, value: filters[name], placeholder, size: 14 });
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
  main.append(el("h1", {}, "Tasks"), toolbar, notice,
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
      if (TERMINAL.has(event.state) && !event.progress) $(".finished", tr).textContent = when(event.at);
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
        action("retry", "Retry", "POST", `${base}/retry`, t.state === "failed" || t.state === "cancelled", load),
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
      el("p", { class: "muted" }, "Children (tasks that name this one in their after list) are not shown: the API has no filter that finds them."));
  }

  async function load() {
    try {
      task = await api(`v1/tasks/${encodeURIComponent(id)}`);
      render();
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
  load().then(() => stream(`v1/tasks/${encodeURIComponent(id)}/events`, { signal: controller.signal, lastEventId: 0, onTask: onEvent }));
  return () => controller.abort();
}

// --- schedules -----------------------------------------------------------------------------

function schedulesView(main) {
  const body = el("tbody");
  main.append(el("h1", {}, "Schedules"),
    el("table", { id: "schedules" }, el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "cron"),
      el("th", {}, "task"), el("th", { title: "in this browser's time zone" }, "next runs"), el("th", {}, "last run"), el("th", {}, "status"), el("th", {}, ""))),
    body));

  const refresh = async () => {
    let page;
    try {
      page = await api("v1/schedules?limit=100");
    } catch (error) {
      report(`Loading the schedules`, error);
      return;
    }
    body.replaceChildren(...page.schedules.map((s) => el("tr", { "data-schedule": s.name },
      el("td", {}, s.name), el("td", { class: "mono" }, `${s.cron} (${s.timezone})`),
      el("td", {}, `${s.task.kind} on ${s.task.queue}`),
      el("td", {}, s.next_fire_times.slice(0, 3).map((t) => el("div", {}, stamp(t, "s")))),
      el("td", {}, s.last_run ? [taskLink(s.last_run.id), " ", s.last_run.state ? pill(s.last_run.state) : "gone"] : "–"),
      el("td", {}, s.paused ? el("span", { class: "pill paused" }, "paused") : el("span", { class: "pill state-succeeded" }, "active")),
      el("td", {}, el("button", { onclick: () => pauseSchedule(s, refresh) }, s.paused ? "Resume" : "Pause")))));
    if (!page.schedules.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No schedules.")));
    if (page.next_cursor) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "The first 100 are shown.")));
  };
  return every(5000, refresh);
}

/** Pauses or resumes a schedule: PUT it back as it is, with `paused` flipped. */
async function pauseSchedule(s, then) {
  const task = Object.fromEntries(Object.entries(s.task).filter(([, v]) => v !== null));
  const body = { cron: s.cron, timezone: s.timezone, task, overlap: s.overlap, catch_up: s.catch_up, paused: !s.paused };
  if (await act(`Pausing schedule ${s.name}`, () => call("PUT", `v1/schedules/${encodeURIComponent(s.name)}`, body))) then();
}

window.addEventListener("hashchange", route);
firehose.run();
route();
readiness();
setInterval(readiness, 5000);
