// The queues and schedules views. Each builds into `main` and answers its clean-up.

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
function chart(name, width = 96, height = 28) {
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
        `finished per minute, all queues, sampled while open · peak ${Math.max(0, ...throughput.get(ALL).map(([, n]) => n))}`)));
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
