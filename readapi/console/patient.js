// The patient view (#patient/<id>): each metric over 1 h / 24 h / 7 d from the read API
// (raw readings over the last hour, per-minute buckets over a day, per-hour over a week),
// the NEWS2 trend, the alert history with acknowledgements and outcomes, the device
// binding. Rendered with textContent only, like the board.
"use strict";
// The stored units (vitals/catalog.py), as a nurse reads them; buckets carry no unit.
const METRICS = [["heart_rate", "Heart rate", "/min"], ["spo2", "SpO2", "%"],
  ["resp_rate", "Respiratory rate", "/min"], ["systolic_bp", "Systolic BP", "mmHg"],
  ["body_temp", "Temperature", "°C"], ["glucose", "Glucose", "mmol/L"]];
const RANGES = { "1h": { ms: 3600e3, resolution: "raw", gapMs: 300e3 },
  "24h": { ms: 86400e3, resolution: "1m", gapMs: 600e3 },
  "7d": { ms: 7 * 86400e3, resolution: "1h", gapMs: 3 * 3600e3 } };
// How far before the range the NEWS2 in force at its start is looked for (a day: older
// scores are stale anyway, the board drops them after 6 h).
const NEWS2_HOLD_MS = 86400e3;
const PAGES_MAX = 5; // 5 pages of 10,000: more than a week of per-minute buckets
const REFRESH_MS = 60000; // new readings and alert states while the view stays open
let shownPatient = null, shownRange = "24h", drawing = 0, redraw = null;

async function allPages(path, query) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < PAGES_MAX; page += 1) {
    const q = new URLSearchParams({ ...query, ...(cursor ? { cursor } : {}) });
    const { status, body } = await api(`${path}?${q}`);
    if (status !== 200) throw new Error(body.detail || `HTTP ${status}`);
    items.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return items;
}

function openPatient(patientId) {
  if (patientId !== shownPatient) {
    shownPatient = patientId;
    $("patient-title").textContent = `Patient ${patientId}`;
    $("patient-history").replaceChildren();
    $("patient-devices").replaceChildren();
    $("patient-charts").replaceChildren();
  }
  drawPatient();
}

async function drawPatient() {
  clearTimeout(redraw);
  if ($("patient").hidden || !shownPatient) return; // another view, or signed out
  const patientId = shownPatient, range = RANGES[shownRange], mine = ++drawing;
  for (const button of document.querySelectorAll("#patient-ranges button")) {
    button.setAttribute("aria-pressed", String(button.dataset.range === shownRange));
  }
  $("patient-error").textContent = "";
  $("patient-status").textContent = "Loading…";
  const to = Date.now(), from = to - range.ms;
  const span = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
  const base = `/v1/patients/${encodeURIComponent(patientId)}`;
  try {
    const [series, scores, history, devices] = await Promise.all([
      Promise.all(METRICS.map(([metric]) => allPages(`${base}/readings`,
        { metric, resolution: range.resolution, limit: "10000", ...span }))),
      allPages(`${base}/news2/history`, { limit: "10000", to: span.to,
        from: new Date(from - NEWS2_HOLD_MS).toISOString() }),
      api(`${base}/alert-history?limit=100`),
      api(`${base}/devices`),
    ]);
    if (mine !== drawing) return; // a newer range or patient was asked for meanwhile
    for (const answer of [history, devices]) {
      if (answer.status !== 200) throw new Error(answer.body.detail || `HTTP ${answer.status}`);
    }
    const charts = METRICS.map(([, title, unit], i) => lineChart({ title, unit, from, to,
      gapMs: range.gapMs,
      points: series[i].map((r) => (r.bucket
        ? { t: Date.parse(r.bucket), v: r.avg, lo: r.min, hi: r.max }
        : { t: Date.parse(r.t), v: r.value, s: r.device_id })) }));
    // A score holds until the next one: the one in force when the range starts opens it.
    const steps = scores.filter((s) => s.news2 !== null).map((s) => ({ t: Date.parse(s.t), v: s.news2 }));
    const before = steps.filter((p) => p.t < from);
    const shown = [...before.slice(-1).map((p) => ({ ...p, t: from })), ...steps.filter((p) => p.t >= from)];
    const news2 = lineChart({ title: "NEWS2", unit: "", from, to, gapMs: NEWS2_HOLD_MS, step: true,
      points: shown });
    $("patient-charts").replaceChildren(news2, ...charts);
    $("patient-history").replaceChildren(...history.body.items.map(historyRow));
    $("patient-history-empty").hidden = history.body.items.length > 0;
    $("patient-devices").replaceChildren(...(devices.body.items.length
      ? devices.body.items.map(deviceItem) : [el("li", { textContent: "No device bound." })]));
    $("patient-status").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (mine !== drawing) return;
    $("patient-status").textContent = "";
    $("patient-error").textContent = `Could not load: ${error.message || error}`;
  }
  redraw = setTimeout(drawPatient, REFRESH_MS);
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

function historyRow(item) {
  const outcome = item.outcome
    ? [el("strong", { textContent: item.outcome.replaceAll("_", " ") }),
      ` by ${item.outcome_by} ${when(item.outcome_at)}`,
      ...(item.note ? [el("br"), el("q", { className: "note", textContent: item.note })] : [])]
    : ["–"];
  const flags = [item.suppressed ? "suppressed repeat" : "", item.retrospective ? "retrospective" : ""]
    .filter(Boolean).join(", ");
  return el("tr", {},
    el("td", { textContent: when(item.opened_at) }),
    el("td", {}, el("span", { className: `sev ${item.severity}`, textContent: item.severity }), " ",
      item.rule, ...(flags ? [el("br"), el("span", { className: "hint", textContent: flags })] : [])),
    el("td", { textContent: item.escalation_level ? `L${item.escalation_level}` : "–" }),
    el("td", { textContent: item.acknowledged_by ? `${item.acknowledged_by} ${when(item.acknowledged_at)}` : "–" }),
    el("td", {}, ...outcome),
    el("td", { textContent: item.resolved_at ? when(item.resolved_at) : "open" }));
}

function deviceItem(binding) {
  const until = binding.current ? "now (current)" : when(binding.valid_to);
  return el("li", {}, el("strong", { textContent: binding.device_id }),
    ` from ${when(binding.valid_from)} to ${until}`);
}

for (const button of document.querySelectorAll("#patient-ranges button")) {
  button.addEventListener("click", () => { shownRange = button.dataset.range; drawPatient(); });
}
