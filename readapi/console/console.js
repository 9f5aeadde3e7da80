// The console: signs in with a reader key (sessionStorage only), polls the read API's
// /v1/board and renders it with textContent only (nothing typed or stored is ever parsed
// as HTML), acknowledges alerts and records outcomes.
"use strict";
const POLL_MS = 5000;
const STALE_S = 900; // Nightscout's first stale-data warning: 15 minutes
const OUTCOMES = ["contacted_no_action", "advised", "escalated_to_physician",
  "emergency_services", "sensor_problem", "false_alarm"];
const $ = (id) => document.getElementById(id);
let timer = null;
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
  clearTimeout(timer);
  $("board").hidden = true; $("signout").hidden = true; $("signin").hidden = false;
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
  box.append(el("span", { className: `sev ${alert.severity}`, textContent: alert.severity }), " ",
    el("strong", { textContent: alert.rule }), ` open ${age(alert.open_s)}`);
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
    field.addEventListener("blur", () => { busy = false; });
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
  return el("tr", { className: urgent ? "urgent" : "" },
    el("th", { scope: "row" }, el("a", { href: `#patient/${encodeURIComponent(patient.patient_id)}`,
      textContent: patient.patient_id })),
    el("td", {}, ...(patient.alerts.length ? patient.alerts.map(alertBlock) : ["none"])),
    el("td", { textContent: news2 }),
    el("td", {}, ...(vitals.length ? vitals : ["–"])),
    el("td", { className: lastAge === null || lastAge > STALE_S ? "stale" : "",
      textContent: lastAge === null ? "silent" : age(lastAge) }));
}

async function refresh() {
  clearTimeout(timer);
  if (!key()) return;
  try {
    if (!busy) {
      const { status, body } = await api("/v1/board");
      if (status === 401) return;
      if (status !== 200) throw new Error(body.detail || `HTTP ${status}`);
      const open = body.patients.reduce((n, p) => n + p.alerts.length, 0);
      $("counts").textContent = `(${body.patients.length} patients, ${open} open alerts)`;
      $("rows").replaceChildren(...body.patients.map(row));
      setStatus(`Live, updated ${new Date().toLocaleTimeString()}`);
    }
  } catch (error) {
    setStatus("Connection lost, reconnecting…", true);
  }
  timer = setTimeout(refresh, POLL_MS);
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
  refresh();
  window.showView?.(); // views.js: #patient/<id> or #burden instead of the board
}
start();
