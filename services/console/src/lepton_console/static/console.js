// The console's one script: the events page's live tail (server-sent events) and its filter, and a
// running job's page following its progress and curve (server-sent events carrying the server's SVG).
// Pages work without it; it only adds what needs a browser. No inline scripts anywhere (the CSP forbids them).
"use strict";

const MAX_EVENTS = 500;
const MAX_LOG = 200; // lepton_console.training.LOG_LINES

function startEventTail(list) {
  const filter = document.getElementById("event-filter");
  const status = document.getElementById("events-status");
  const seen = new Set();
  const matches = (li) => {
    const prefix = filter ? filter.value.trim() : "";
    return !prefix || li.dataset.type.startsWith(prefix) || li.dataset.name.startsWith(prefix);
  };
  if (filter) {
    filter.addEventListener("input", () => {
      for (const li of list.children) li.hidden = !matches(li);
    });
  }
  const source = new EventSource(list.dataset.stream);
  source.addEventListener("open", () => { status.textContent = status.dataset.live; });
  source.addEventListener("error", () => { status.textContent = status.dataset.lost; });
  source.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    if (seen.has(event.id)) return; // a reconnect replays what was shown already
    seen.add(event.id);
    const li = document.createElement("li");
    li.className = "event";
    li.dataset.type = event.type;
    li.dataset.name = event.name;
    li.dataset.id = event.id;
    const time = document.createElement("time");
    time.dateTime = event.time;
    time.textContent = event.time.replace("T", " ").slice(0, 19);
    const name = document.createElement("span");
    name.className = "event-name";
    name.textContent = event.name;
    li.append(time, name);
    if (event.subject) {
      const subject = document.createElement("span");
      subject.className = "event-subject";
      subject.textContent = `${list.dataset.subject} ${event.subject}`;
      li.append(subject);
    }
    if (/^[0-9a-f]{32}$/.test(event.trace_id || "")) {
      const trace = document.createElement("a");
      trace.className = "event-trace";
      trace.href = `/traces/${event.trace_id}?at=${encodeURIComponent(event.time)}`;
      trace.textContent = list.dataset.trace;
      li.append(trace);
    }
    li.hidden = !matches(li);
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  });
}

// The curve arrives as SVG markup drawn by the server (lepton_console.charts); parsed as SVG, never as HTML.
function replaceCurve(box, markup) {
  const parsed = new DOMParser().parseFromString(markup, "image/svg+xml").documentElement;
  if (parsed.nodeName !== "svg") return;
  box.replaceChildren(document.importNode(parsed, true));
}

function followJob(job) {
  const progress = document.getElementById("job-progress");
  const percent = document.getElementById("job-percent");
  const state = document.getElementById("job-state");
  const stage = document.getElementById("job-stage");
  const curve = document.getElementById("job-curve-box");
  const log = document.getElementById("job-log");
  const source = new EventSource(job.dataset.stream);
  source.addEventListener("message", (message) => {
    const update = JSON.parse(message.data);
    if (update.progress !== undefined) {
      progress.value = update.progress;
      progress.textContent = update.percent;
      percent.textContent = update.percent;
    }
    if (update.stage) stage.textContent = update.stage;
    if (update.state) {
      state.textContent = update.state_label;
      state.className = `state state-${update.state}`;
    }
    if (update.curve) replaceCurve(curve, update.curve);
    if (update.log) {
      const line = document.createElement("li");
      const time = document.createElement("time");
      time.textContent = update.log.time;
      line.append(time, ` ${update.log.text}`);
      log.append(line);
      while (log.children.length > MAX_LOG) log.firstElementChild.remove();
    }
    if (update.done) {
      source.close(); // the job has ended: nothing more will come, so no reconnecting
      const cancel = document.getElementById("job-cancel-form");
      if (cancel) cancel.remove();
    }
  });
}

// The jobs list, live: a row appears for each job as it is queued (wherever it was started from), and its
// state and progress change as it runs. The cells are built with textContent only.
function followJobs(table) {
  const status = document.getElementById("jobs-status");
  const body = table.tBodies[0];
  const cell = (text, className) => {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  };
  const source = new EventSource(table.dataset.stream);
  source.addEventListener("open", () => { status.textContent = status.dataset.live; });
  source.addEventListener("error", () => { status.textContent = status.dataset.lost; });
  source.addEventListener("message", (message) => {
    const update = JSON.parse(message.data);
    let row = body.querySelector(`tr[data-job="${CSS.escape(update.job_id)}"]`);
    if (!row && update.state) {
      row = document.createElement("tr");
      row.dataset.job = update.job_id;
      const head = document.createElement("th");
      head.scope = "row";
      const link = document.createElement("a");
      link.href = `/jobs/${encodeURIComponent(update.job_id)}`;
      const code = document.createElement("code");
      code.textContent = update.job_id;
      link.append(code);
      head.append(link);
      const time = document.createElement("time");
      time.dateTime = update.created_iso;
      time.textContent = update.created;
      const created = document.createElement("td");
      created.append(time);
      row.append(head, cell(update.model), cell(update.algorithm), cell("", "job-state"),
        cell("", "num job-percent"), created);
      body.prepend(row);
      const empty = document.getElementById("jobs-empty");
      if (empty) empty.remove();
    }
    if (!row) return;
    row.querySelector(".job-percent").textContent = update.percent;
    if (update.state) {
      const state = document.createElement("span");
      state.className = `state state-${update.state}`;
      state.textContent = update.state_label;
      row.querySelector(".job-state").replaceChildren(state);
    }
  });
}

// A list that redraws itself when the platform says something in it changed: #live-list names the events
// that matter (data-refresh, a pattern); on one, the page is fetched again and its list, as the server
// renders it, takes the old one's place (parsed as a document, so nothing in it runs). A burst of events
// makes one fetch.
function refreshOnEvents(list) {
  const source = new EventSource(`/events/stream?replay=0&pattern=${encodeURIComponent(list.dataset.refresh)}`);
  let pending = null;
  const refresh = async () => {
    pending = null;
    const answer = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").getElementById("live-list");
    const current = document.getElementById("live-list");
    if (fresh && current) current.replaceWith(document.importNode(fresh, true));
  };
  source.addEventListener("message", () => {
    if (!pending) pending = setTimeout(refresh, 400);
  });
}

// A dataset upload with a progress bar: the bytes' way to the console, then the platform's ingest.
// Without this script the form posts as any form does and the page answers with a redirect.
function uploadWithProgress(form) {
  const line = document.getElementById("upload-progress-line");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const error = document.getElementById("upload-error");
  const submit = document.getElementById("upload-submit");
  form.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.responseType = "json";
    error.hidden = true;
    line.hidden = false;
    submit.disabled = true;
    bar.value = 0;
    status.textContent = status.dataset.sending.replace("{percent}", "0%");
    request.upload.addEventListener("progress", (progress) => {
      if (!progress.lengthComputable) return;
      bar.value = progress.loaded / progress.total;
      status.textContent = status.dataset.sending.replace("{percent}", `${Math.floor(bar.value * 100)}%`);
    });
    request.upload.addEventListener("load", () => {
      bar.removeAttribute("value"); // the platform's part has no measure: an indeterminate bar
      status.textContent = status.dataset.ingesting;
    });
    const fail = (message) => {
      submit.disabled = false;
      line.hidden = true;
      error.textContent = message;
      error.hidden = false;
    };
    request.addEventListener("error", () => fail(status.dataset.failed));
    request.addEventListener("load", () => {
      const body = request.response || {};
      if (request.status !== 200 || !body.location) {
        fail(body.error || status.dataset.failed);
        return;
      }
      bar.value = 1;
      status.textContent = status.dataset.done.replace("{version}", body.version_id);
      window.location.assign(body.location);
    });
    request.send(new FormData(form));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live-list");
  if (live && live.dataset.refresh) refreshOnEvents(live);
  const jobs = document.getElementById("jobs");
  if (jobs && jobs.dataset.stream) followJobs(jobs);
  const upload = document.getElementById("upload");
  if (upload) uploadWithProgress(upload);
  const list = document.getElementById("events");
  if (list) startEventTail(list);
  const job = document.getElementById("job");
  if (job && job.dataset.stream) followJob(job);
});
