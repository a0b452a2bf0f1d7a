// A deployment's page, live: its state, routes and canary weights, hosts, rollout history and Triton
// statistics, from its server-sent events (each the deployment as it is after one of its deployment.*
// events). Cells are set with textContent and the weights chart is the server's SVG parsed as SVG:
// no HTML from the stream is ever parsed. The page works without this script; it only saves reloading.
"use strict";

function replaceSvg(box, markup) {
  if (!markup) return;
  const parsed = new DOMParser().parseFromString(markup, "image/svg+xml").documentElement;
  if (parsed.nodeName !== "svg") return;
  box.replaceChildren(document.importNode(parsed, true));
}

// Each row is a list of strings; the first cell is the row's header, as the server renders it.
function fillTable(tbody, rows) {
  const numeric = tbody.closest("table").querySelectorAll("thead th");
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      cells.forEach((text, i) => {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        if (numeric[i] && numeric[i].classList.contains("num")) cell.className = "num";
        cell.textContent = text;
        tr.append(cell);
      });
      return tr;
    }),
  );
}

function followDeployment(box) {
  const state = document.getElementById("deployment-state");
  const error = document.getElementById("deployment-error");
  const weights = document.getElementById("deployment-weights-box");
  const source = new EventSource(box.dataset.stream);
  source.addEventListener("message", (message) => {
    const update = JSON.parse(message.data);
    if (update.gone) {
      state.textContent = box.dataset.gone;
      state.className = "state dstate-failed";
      source.close();
      return;
    }
    state.textContent = update.state_label;
    state.className = `state dstate-${update.state}`;
    box.dataset.state = update.state;
    document.getElementById("deployment-version").textContent = update.version;
    document.getElementById("deployment-target").textContent = update.target;
    document.getElementById("deployment-updated").textContent = update.updated;
    error.textContent = update.error;
    error.hidden = !update.error;
    replaceSvg(weights, update.weights);
    for (const [name, rows] of Object.entries(update.tables)) {
      const tbody = box.querySelector(`tbody[data-table="${name}"]`);
      if (tbody) fillTable(tbody, rows);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("deployment");
  if (box && box.dataset.stream) followDeployment(box);
});
