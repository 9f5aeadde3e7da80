// Line charts as plain SVG for the patient view: a handful of series of at most a few
// thousand points each, drawn once per range change. No library: a chart library
// (uPlot, ~50 KB) would draw on a canvas, which a screen reader cannot read, and would be
// one more vendored file to keep up to date; an SVG path with a text summary is ~100
// lines, is readable as text (role=img with a description) and scales to any width.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const CHART_W = 400, CHART_H = 150, PAD_L = 40, PAD_R = 8, PAD_T = 8, PAD_B = 22;

function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function shortTime(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400e3) return d.toLocaleDateString([], { weekday: "short", day: "numeric" });
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return spanMs > 12 * 3600e3 ? `${d.toLocaleDateString([], { weekday: "short" })} ${time}` : time;
}

function fmt(value) {
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(1);
}

// points: [{t: ms, v, lo?, hi?, s?}] sorted by t (s: the series, e.g. the device); from/to: ms; gapMs: a longer gap breaks the
// line (a device off is not a straight line between two readings).
// step: a value holds until the next (NEWS2), and the last one until `to`.
function lineChart({ title, unit, points, from, to, gapMs, step = false }) {
  const figure = el("figure", { className: "chart" });
  const caption = el("figcaption", { textContent: unit ? `${title} (${unit})` : title });
  figure.append(caption);
  if (!points.length) {
    figure.append(el("p", { className: "hint", textContent: "No data in this range." }));
    return figure;
  }
  const values = points.flatMap((p) => [p.lo ?? p.v, p.hi ?? p.v]);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const x = (t) => PAD_L + ((t - from) / (to - from)) * (CHART_W - PAD_L - PAD_R);
  const y = (v) => PAD_T + (1 - (v - lo) / (hi - lo)) * (CHART_H - PAD_T - PAD_B);
  const latest = points[points.length - 1];
  const summary = `${title}: ${points.length} points from ${new Date(points[0].t).toLocaleString()}`
    + ` to ${new Date(latest.t).toLocaleString()}; lowest ${fmt(Math.min(...values))},`
    + ` highest ${fmt(Math.max(...values))}, latest ${fmt(latest.v)}${unit ? ` ${unit}` : ""}.`;
  const svg = svgEl("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: "img",
    "aria-label": summary });
  svg.append(svgEl("title", {}, summary));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(svgEl("line", { x1: PAD_L, x2: CHART_W - PAD_R, y1: y(v), y2: y(v), class: "grid" }),
      svgEl("text", { x: PAD_L - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
  }
  for (const t of [from, (from + to) / 2, to]) {
    const anchor = t === from ? "start" : t === to ? "end" : "middle";
    svg.append(svgEl("text", { x: x(t), y: CHART_H - 6, "text-anchor": anchor, class: "tick" },
      shortTime(t, to - from)));
  }
  // min-max band of buckets, then the line (average of a bucket, or the reading).
  // One line per device (`s`: two devices worn at once are two lines, not a zigzag),
  // broken at gaps.
  const runs = [], last = new Map();
  for (const p of points) {
    const run = last.get(p.s ?? "");
    if (!run || p.t - run[run.length - 1].t > gapMs) {
      const fresh = [p];
      runs.push(fresh);
      last.set(p.s ?? "", fresh);
    } else {
      run.push(p);
    }
  }
  for (const run of runs) {
    if (run[0].lo !== undefined && run.length > 1) {
      const top = run.map((p) => `${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`);
      const bottom = run.slice().reverse().map((p) => `${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`);
      svg.append(svgEl("polygon", { points: [...top, ...bottom].join(" "), class: "band" }));
    }
    let d = "";
    run.forEach((p, i) => {
      if (i === 0) d += `M${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
      else if (step) d += `H${x(p.t).toFixed(1)}V${y(p.v).toFixed(1)}`;
      else d += `L${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
    });
    if (step && run === runs[runs.length - 1]) d += `H${x(to).toFixed(1)}`;
    if (run.length === 1 && !step) {
      svg.append(svgEl("circle", { cx: x(run[0].t), cy: y(run[0].v), r: 2.5, class: "dot" }));
    } else {
      svg.append(svgEl("path", { d, class: "line" }));
    }
  }
  figure.append(svg);
  return figure;
}
