// The console: signs in with a reader key (sessionStorage only), takes a stream ticket with
// it and follows the read API's server-sent events (docs/read-api.md#live): a snapshot of
// the board first, then alert and NEWS2 changes applied to rows kept by patient id, so a
// reconnect (a new ticket, a new snapshot) never duplicates a row. Renders with
// textContent only (nothing typed or stored is ever parsed as HTML), acknowledges alerts
// and records outcomes.
"use strict";
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 15000;
const BLUR_REDRAW_MS = 300;
const STALE_S = 900; // Nightscout's first stale-data warning: 15 minutes
const SEVERITY = { high: 3, medium: 2, low: 1 };
const OUTCOMES = ["contacted_no_action", "advised", "escalated_to_physician",
  "emergency_services", "sensor_problem", "false_alarm"];
const $ = (id) => document.getElementById(id);
const patients = new Map(); // patient id -> board entry (alerts carry opened_ms)
const rows = new Map(); // patient id -> its <tr>
const dirty = new Set(); // patients changed while a form was being filled in
let stream = null;
let retryTimer = null;
let retryMs = RETRY_FIRST_MS;
let busy = false; // a form being filled in must not be redrawn under the user's fingers

function key() { return sessionStorage.getItem("vitals.readerKey"); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.headers || {}) };
  const answer = await fetch(path, { ...options, headers });
  const body = await answer.json().catch(() => ({}));
  if (answer.status === 401) { signOut(body.detail || "Your key is no longer valid."); }
  return { status: answer.status, body };
}

function signOut(why) {
  sessionStorage.removeItem("vitals.readerKey");
  disconnect();
  $("board").hidden = true; $("signout").hidden = true; $("signin").hidden = false;
  patients.clear(); rows.clear(); dirty.clear();
  $("rows").replaceChildren();
  $("signin-error").textContent = why || "";
  setStatus("");
  window.showView?.(); // views.js: the patient and burden views go too
}

function setStatus(text, lost = false) {
  $("status").textContent = text;
  $("status").className = lost ? "lost" : "";
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "no data";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function alertBlock(alert) {
  const box = el("div", { className: "alert" });
  box.dataset.alert = alert.alert_id;
  box.append(el("span", { className: `sev ${alert.severity}`, textContent: alert.severity }), " ",
    el("strong", { textContent: alert.rule }), ` open ${age(openS(alert))}`);
  if (alert.escalation_level > 0) {
    box.append(" ", el("span", { className: "esc", textContent: `escalated L${alert.escalation_level}` }));
  }
  if (alert.acknowledged_by) {
    box.append(" ", el("span", { className: "ack", textContent: `ack by ${alert.acknowledged_by}` }));
  }
  const actions = el("div", { className: "actions" });
  if (!alert.acknowledged_by) {
    actions.append(el("button", { type: "button", textContent: "Acknowledge",
      onclick: () => act(alert.alert_id, "acknowledge", {}) }));
  }
  const select = el("select", { "aria-label": `Outcome for ${alert.rule}` },
    el("option", { value: "", textContent: "Outcome…" }),
    ...OUTCOMES.map((o) => el("option", { value: o, textContent: o.replaceAll("_", " ") })));
  select.setAttribute("aria-label", `Outcome for ${alert.rule}`);
  const note = el("textarea", { placeholder: "Note (optional)", maxLength: 2000 });
  note.setAttribute("aria-label", `Note for ${alert.rule}`);
  for (const field of [select, note]) {
    field.addEventListener("focus", () => { busy = true; });
    // The changes held back are drawn a moment after the form is left: a click on
    // "Record outcome" (which blurs the note first) lands before its row is redrawn.
    field.addEventListener("blur", () => { busy = false; setTimeout(render, BLUR_REDRAW_MS); });
  }
  const record = el("button", { type: "button", textContent: "Record outcome", onclick: () => {
    if (!select.value) { $("action-error").textContent = "Choose an outcome first."; return; }
    act(alert.alert_id, "outcome", { outcome: select.value, ...(note.value ? { note: note.value } : {}) });
  } });
  actions.append(select, note, record);
  box.append(actions);
  return box;
}

function row(patient) {
  const urgent = patient.alerts.some((a) => !a.acknowledged_by);
  const vitals = Object.entries(patient.vitals).map(([metric, v]) =>
    el("span", { className: `vital${v.age_s > STALE_S ? " stale" : ""}`,
      textContent: `${metric.replaceAll("_", " ")} ${v.value} ${v.unit} (${age(v.age_s)})` }));
  const news2 = patient.news2
    ? `${patient.news2.score} ${patient.news2.band}${patient.news2.partial ? " (partial)" : ""}` : "–";
  const lastAge = patient.last_data_age_s;
  const tr = el("tr", { className: urgent ? "urgent" : "" },
    el("th", { scope: "row" }, el("a", { href: `#patient/${encodeURIComponent(patient.patient_id)}`,
      textContent: patient.patient_id })),
    el("td", {}, ...(patient.alerts.length ? patient.alerts.map(alertBlock) : ["none"])),
    el("td", { textContent: news2 }),
    el("td", {}, ...(vitals.length ? vitals : ["–"])),
    el("td", { className: lastAge === null || lastAge > STALE_S ? "stale" : "",
      textContent: lastAge === null ? "silent" : age(lastAge) }));
  tr.dataset.patient = patient.patient_id;
  return tr;
}

function openS(alert) { return Math.max(0, (Date.now() - alert.opened_ms) / 1000); }

// The order of board.py's call_first: an unacknowledged alert first, then the highest
// severity, escalation level, longest open; without alerts, the stalest data first.
function urgency(alert) {
  return [alert.acknowledged_by ? 0 : 1, SEVERITY[alert.severity] || 0,
    alert.escalation_level || 0, openS(alert)];
}

function callFirst(entry) {
  if (!entry.alerts.length) {
    const age = entry.last_data_age_s;
    return [1, -(age === null || age === undefined ? Infinity : age), entry.patient_id];
  }
  const worst = entry.alerts.map(urgency).reduce((a, b) => (compare(a, b) >= 0 ? a : b));
  return [0, ...worst.map((x) => -x), entry.patient_id];
}

function compare(a, b) {
  for (let i = 0; i < a.length; i += 1) {
    if (a[i] < b[i]) return -1;
    if (a[i] > b[i]) return 1;
  }
  return 0;
}

function blank(patientId) {
  return { patient_id: patientId, vitals: {}, news2: null, alerts: [], last_data_age_s: null };
}

function applySnapshot(board) {
  performance.mark("snapshot-start");
  const received = Date.now();
  patients.clear();
  for (const entry of board.patients) {
    for (const alert of entry.alerts) alert.opened_ms = received - alert.open_s * 1000;
    patients.set(entry.patient_id, entry);
    dirty.add(entry.patient_id);
  }
  render();
  performance.measure("board-snapshot", "snapshot-start");
}

// A public alert (docs/alert-schema.md, v1 or v2) applied to its patient's row; applying
// one twice changes nothing (the stream may repeat what a snapshot already holds).
function applyAlert(doc) {
  const entry = patients.get(doc.patient_id) || blank(doc.patient_id);
  patients.set(doc.patient_id, entry);
  const known = entry.alerts.find((a) => a.alert_id === doc.alert_id);
  if (doc.state === "opened" && !known) {
    entry.alerts.push({ alert_id: doc.alert_id, patient_id: doc.patient_id, rule: doc.rule,
      severity: doc.severity, escalation_level: 0, acknowledged_by: null,
      opened_ms: Date.parse(doc.published_at) || Date.now() });
  } else if (doc.state === "resolved" || doc.state === "outcome") {
    entry.alerts = entry.alerts.filter((a) => a.alert_id !== doc.alert_id);
  } else if (doc.state === "acknowledged" && known) {
    known.acknowledged_by = doc.actor;
  } else if (doc.state === "escalated" && known) {
    known.escalation_level = Math.max(known.escalation_level || 0, doc.escalation_level || 0);
  }
  changed(doc.patient_id);
}

function applyNews2(score) {
  const entry = patients.get(score.patient_id) || blank(score.patient_id);
  patients.set(score.patient_id, entry);
  entry.news2 = { score: score.score, band: score.band, partial: score.partial, t: score.t };
  changed(score.patient_id);
}

function changed(patientId) {
  performance.mark("delta-start");
  dirty.add(patientId);
  render();
  performance.measure("board-delta", "delta-start");
}

// Redraws the changed rows in place and puts every row in call-first order: rows are kept
// by patient id, so a patient is never on the board twice.
function render() {
  if (busy) return;
  for (const id of dirty) {
    const entry = patients.get(id);
    if (!entry) continue;
    const fresh = row(entry);
    const old = rows.get(id);
    if (old) old.replaceWith(fresh);
    rows.set(id, fresh);
  }
  dirty.clear();
  for (const [id, tr] of rows) {
    if (!patients.has(id)) { tr.remove(); rows.delete(id); } // left the board (snapshot)
  }
  const order = [...patients.values()]
    .map((entry) => [callFirst(entry), entry.patient_id])
    .sort((a, b) => compare(a[0], b[0]));
  const body = $("rows");
  order.forEach(([, id], i) => {
    const tr = rows.get(id);
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  const open = [...patients.values()].reduce((n, p) => n + p.alerts.length, 0);
  $("counts").textContent = `(${patients.size} patients, ${open} open alerts)`;
}

async function connect() {
  disconnect();
  if (!key()) return;
  let answer;
  try {
    answer = await api("/v1/console/ticket", { method: "POST" });
  } catch (error) {
    lost(); return;
  }
  if (answer.status === 401) return; // signed out by api()
  if (answer.status !== 201) { lost(); return; }
  const source = new EventSource(`/v1/console/events?ticket=${encodeURIComponent(answer.body.ticket)}`);
  stream = source;
  source.addEventListener("snapshot", (event) => {
    const board = JSON.parse(event.data);
    retryMs = RETRY_FIRST_MS;
    applySnapshot(board);
    setStatus(board.live ? `Live since ${new Date().toLocaleTimeString()}`
      : "Live feed paused: the board is refreshed every 30 s");
  });
  source.addEventListener("alert", (event) => applyAlert(JSON.parse(event.data)));
  source.addEventListener("news2", (event) => applyNews2(JSON.parse(event.data)));
  // The server ended the stream with its reason (a revoked key: the next ticket is refused
  // and the page signs out; a client that fell behind: a new snapshot).
  source.addEventListener("closed", () => { source.onerror = null; lost(); });
  source.onerror = () => { lost(); };
}

function disconnect() {
  clearTimeout(retryTimer);
  if (stream) { stream.close(); stream = null; }
}

// The stream is gone: say so, and connect again (a new ticket, a new snapshot) after a
// backoff that doubles up to RETRY_MAX_MS.
function lost() {
  disconnect();
  setStatus("Connection lost, reconnecting…", true);
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
}

// After an action: the board as it is now (the change also comes on the stream once the
// alerts sink has published it; applying both is harmless).
async function refresh() {
  try {
    const { status, body } = await api("/v1/board");
    if (status === 200) applySnapshot(body);
  } catch (error) {
    lost();
  }
}

async function act(alertId, action, payload) {
  $("action-error").textContent = "";
  busy = false;
  try {
    const { status, body } = await api(`/v1/alerts/${encodeURIComponent(alertId)}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
    if (status !== 201 && status !== 401) {
      $("action-error").textContent = `Refused: ${body.detail || body.code || status}`;
    }
  } catch (error) {
    $("action-error").textContent = "Not sent: the connection is lost.";
  }
  refresh();
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("vitals.readerKey", $("key").value.trim());
  $("key").value = "";
  start();
});
$("signout").addEventListener("click", () => signOut(""));

function start() {
  if (!key()) { signOut(""); return; }
  $("signin").hidden = true; $("board").hidden = false; $("signout").hidden = false;
  $("signin-error").textContent = "";
  setStatus("Connecting…");
  connect();
  window.showView?.(); // views.js: #patient/<id> or #burden instead of the board
}
start();
