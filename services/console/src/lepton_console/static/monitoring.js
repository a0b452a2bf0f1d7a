// A deployment's monitoring page, live: each incident, retraining and redrawn chart its server-sent
// events carry (/monitoring/<name>/stream). Items are built with textContent only; charts arrive as SVG
// drawn by the server (lepton_console.charts) and are parsed as SVG, never as HTML. The page works
// without this script; it only adds what needs a browser.
"use strict";

function svgFrom(markup) {
  const parsed = new DOMParser().parseFromString(markup, "image/svg+xml").documentElement;
  return parsed.nodeName === "svg" ? document.importNode(parsed, true) : null;
}

function replaceChart(box, markup) {
  if (!box || !markup) return;
  const svg = svgFrom(markup);
  if (svg) box.replaceChildren(svg);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function jobLink(jobId) {
  const a = document.createElement("a");
  a.href = `/jobs/${encodeURIComponent(jobId)}`;
  a.append(el("code", "", jobId));
  return a;
}

function incidentItem(i) {
  const li = el("li", "incident");
  li.dataset.incident = i.incident_id;
  li.dataset.kind = i.kind;
  li.dataset.state = i.state;
  li.append(el("span", `badge badge-${i.state}`, i.state_label), " ", el("strong", "incident-title", i.title));
  if (i.severity_label) li.append(" ", el("span", `severity severity-${i.severity}`, i.severity_label));
  const time = el("time", "", i.fired);
  time.dateTime = i.fired_iso;
  li.append(" ", time);
  for (const fact of i.facts) li.append(" ", el("span", "fact", fact));
  if (i.retraining) {
    const r = el("span", "retraining", i.retraining);
    if (i.job_id) r.append(" ", jobLink(i.job_id));
    li.append(" ", r);
  }
  return li;
}

function findBy(list, attribute, value) {
  for (const child of list.children) if (child.dataset[attribute] === value) return child;
  return null;
}

function showIncident(list, incident) {
  const old = findBy(list, "incident", incident.incident_id);
  const item = incidentItem(incident);
  const kept = old && old.querySelector(".retraining");
  if (kept && !incident.retraining) item.append(" ", kept);
  if (old) old.remove();
  list.prepend(item);
  document.getElementById("incidents-empty").hidden = true;
}

function showRetraining(list, incidents, r) {
  if (!findBy(list, "incident", r.incident_id)) {
    const li = el("li");
    li.dataset.incident = r.incident_id;
    const time = el("time", "", r.requested);
    time.dateTime = r.requested_iso;
    const job = el("span", "", `${list.dataset.job} `);
    if (r.job_id) job.append(jobLink(r.job_id));
    li.append(time, " ", job, " ", el("span", "", `${list.dataset.reason} ${r.reason}`));
    if (r.dataset_version_id) {
      const dataset = el("span", "", `${list.dataset.dataset} `);
      dataset.append(el("code", "", r.dataset_version_id));
      li.append(" ", dataset);
    }
    if (r.detail) li.append(" ", el("span", "hint", r.detail));
    list.prepend(li);
    document.getElementById("retrainings-empty").hidden = true;
  }
  const incident = findBy(incidents, "incident", r.incident_id);
  if (incident && !incident.querySelector(".retraining")) {
    const span = el("span", "retraining", incidents.dataset.retraining);
    if (r.job_id) span.append(" ", jobLink(r.job_id));
    incident.append(" ", span);
  }
}

function showDrift(features) {
  const boxes = document.getElementById("features");
  if (!boxes) return;
  for (const f of features) {
    const card = findBy(boxes, "feature", f.name);
    if (!card) continue;
    card.dataset.verdict = f.verdict;
    card.className = `feature verdict-${f.verdict}`;
    card.querySelector(".verdict").textContent = f.verdict_label;
    const stats = el("dl", "stats");
    for (const [label, value] of f.figures) {
      const row = el("div");
      row.append(el("dt", "", label), el("dd", "", value));
      stats.append(row);
    }
    card.querySelector("dl.stats").replaceWith(stats);
    replaceChart(card.querySelector(".drift-chart-box"), f.chart);
    card.querySelector(".difference").textContent = f.difference;
  }
}

function followMonitor(page) {
  const status = document.getElementById("monitor-status");
  const incidents = document.getElementById("incidents");
  const retrainings = document.getElementById("retrainings");
  const seen = new Set();
  const source = new EventSource(page.dataset.stream);
  source.addEventListener("open", () => { status.textContent = status.dataset.live; });
  source.addEventListener("error", () => { status.textContent = status.dataset.lost; });
  source.addEventListener("message", (message) => {
    const update = JSON.parse(message.data);
    if (seen.has(update.id)) return; // a reconnect replays from the page's time again
    seen.add(update.id);
    if (update.incident) showIncident(incidents, update.incident);
    if (update.retraining) showRetraining(retrainings, incidents, update.retraining);
    if (update.drift) showDrift(update.drift);
    if (update.charts) {
      replaceChart(document.getElementById("latency-box"), update.charts.latency);
      replaceChart(document.getElementById("traffic-box"), update.charts.traffic);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.getElementById("monitor");
  if (page && page.dataset.stream) followMonitor(page);
});
