// The alarm-burden view (#burden): per rule over the reader's care teams, alerts per
// patient-day, the share of each recorded outcome (the false-alarm rate), time to
// acknowledge (median, 90th percentile) and escalations, from GET /v1/burden.
"use strict";
const BURDEN_OUTCOMES = ["false_alarm", "sensor_problem", "contacted_no_action", "advised",
  "escalated_to_physician", "emergency_services"];
let burdenDays = 7;

function pct(share) { return share === null || share === undefined ? "–" : `${Math.round(share * 100)} %`; }
function secs(value) { return value === null || value === undefined ? "–" : age(value); }

function burdenRow(entry, label) {
  return el("tr", {},
    el("th", { scope: "row", textContent: label }),
    el("td", { textContent: String(entry.alerts) }),
    el("td", { textContent: entry.per_patient_day === null ? "–" : entry.per_patient_day.toFixed(2) }),
    el("td", { textContent: `${entry.answered} / ${entry.alerts}` }),
    el("td", { textContent: secs(entry.ack_p50_s) }),
    el("td", { textContent: secs(entry.ack_p90_s) }),
    el("td", { textContent: entry.escalated ? `${entry.escalated} (up to L${entry.highest_level})` : "0" }),
    el("td", { textContent: String(entry.with_outcome) }),
    ...BURDEN_OUTCOMES.map((o) => el("td", { textContent: pct(entry.outcome_shares[o]) })));
}

async function openBurden() {
  for (const button of document.querySelectorAll("#burden-ranges button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.days) === burdenDays));
  }
  $("burden-error").textContent = "";
  const to = new Date(), from = new Date(to.getTime() - burdenDays * 86400e3);
  const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
  try {
    const { status, body } = await api(`/v1/burden?${q}`);
    if (status !== 200) throw new Error(body.detail || `HTTP ${status}`);
    $("burden-summary").textContent = `${body.patient_days} patient-days monitored, `
      + `${body.total ? body.total.alerts : 0} alerts, ${from.toLocaleDateString()} to ${to.toLocaleDateString()}.`;
    const rows = body.rules.map((r) => burdenRow(r, r.rule));
    if (body.total && body.rules.length) rows.push(burdenRow(body.total, "All rules"));
    $("burden-rows").replaceChildren(...rows);
  } catch (error) {
    $("burden-error").textContent = `Could not load: ${error.message || error}`;
  }
}

for (const button of document.querySelectorAll("#burden-ranges button")) {
  button.addEventListener("click", () => { burdenDays = Number(button.dataset.days); openBurden(); });
}
