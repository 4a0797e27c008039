// Progress polling for the console's pages (no inline script: the CSP forbids it).
// An element with data-poll="URL" is refreshed from that JSON every two seconds: each
// descendant [data-field=NAME] gets the value of NAME as text, and a [data-rows=pending]
// table body is rebuilt from the pending forget requests. Polling stops when the JSON says
// "done": true (a finished request), or when the page is hidden.

const EVERY_MS = 2000;

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function pendingRow(p) {
  const tr = document.createElement("tr");
  const id = document.createElement("td");
  const code = document.createElement("code");
  code.textContent = p.request_id;
  id.append(code);
  const progressCell = document.createElement("td");
  const bar = document.createElement("progress");
  bar.max = p.artifacts;
  bar.value = p.executed;
  progressCell.append(bar, ` ${p.executed}/${p.artifacts}`);
  tr.append(id, cell(p.level), cell(p.requested_at), cell(p.not_before), progressCell);
  return tr;
}

function apply(root, data) {
  for (const el of root.querySelectorAll("[data-field]")) {
    const value = data[el.dataset.field];
    if (value !== undefined && value !== null) el.textContent = String(value);
  }
  const rows = root.querySelector("[data-rows=pending]");
  if (rows && Array.isArray(data.pending)) {
    rows.replaceChildren(...data.pending.map(pendingRow));
    if (!data.pending.length) {
      const tr = document.createElement("tr");
      const td = cell("none");
      td.colSpan = 5;
      tr.append(td);
      rows.append(tr);
    }
  }
}

function poll(root) {
  const url = root.dataset.poll;
  let timer = null;
  async function tick() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401) {
        window.location.assign("/console/login");
        return;
      }
      if (response.ok) {
        const data = await response.json();
        apply(root, data);
        root.dataset.polled = String(Number(root.dataset.polled || 0) + 1);
        if (data.done) {
          root.dataset.done = "true";
          if (data.reload) window.location.reload();
          return;
        }
      }
    } catch (e) {
      root.dataset.pollError = String(e);
    }
    timer = setTimeout(tick, EVERY_MS);
  }
  timer = setTimeout(tick, EVERY_MS);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && timer) clearTimeout(timer);
    else if (!document.hidden) timer = setTimeout(tick, 0);
  });
}

for (const root of document.querySelectorAll("[data-poll]")) poll(root);
