// The console's one script: the events page's live tail (server-sent events) and its filter.
// Pages work without it; it only adds what needs a browser. No inline scripts anywhere (the CSP forbids them).
"use strict";

const MAX_EVENTS = 500;

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
    li.hidden = !matches(li);
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("events");
  if (list) startEventTail(list);
});
