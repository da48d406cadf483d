// The question page: ask, then show the answer as a table, a hand-drawn SVG chart, the
// interpretation, the SQL and the caveats; or the refusal with its reason. No libraries and
// nothing from another host.
"use strict";

const TOKEN_KEY = "delivery_lake_token";
const SVG_NS = "http://www.w3.org/2000/svg";
const MAX_BARS = 40;
const MAX_SERIES = 8;

const $ = (id) => document.getElementById(id);

// -- numbers ---------------------------------------------------------------------------------
function number(value, digits) {
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function formatValue(value, fmt) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  switch (fmt) {
    case "percent": return number(value * 100, 1) + "%";
    case "money": return number(value, 2);
    case "count": return number(Math.round(value), 0);
    case "probability": return number(value, 3);
    case "minutes": return number(value, 1) + " min";
    case "km": return number(value, 1) + " km";
    case "stars": return number(value, 2);
    default: return Number.isInteger(value) ? number(value, 0) : number(value, 2);
  }
}

// -- requests --------------------------------------------------------------------------------
async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  return { status: res.status, data };
}

function setBusy(busy, text) {
  $("ask").disabled = busy;
  $("status").textContent = text || "";
}

function clearResult() {
  for (const id of ["result", "refusal", "error"]) $(id).hidden = true;
}

function showError(message) {
  clearResult();
  $("error").textContent = message;
  $("error").hidden = false;
}

async function ask(question) {
  question = question.trim();
  if (!question) {
    showError("Type a question first.");
    return;
  }
  const body = { question };
  const asOf = $("as-of").value;
  if (asOf) body.as_of = asOf;
  setBusy(true, "Asking…");
  let res;
  try {
    res = await api("/ask", body);
  } catch (e) {
    setBusy(false);
    showError("The service could not be reached.");
    return;
  }
  setBusy(false);
  if (res.status === 401) {
    $("auth").hidden = false;
    showError("This service needs its token: enter it above, then ask again.");
    return;
  }
  if (res.status !== 200 || !res.data) {
    const detail = res.data && typeof res.data.detail === "string" ? res.data.detail : "unexpected error";
    showError(`Could not answer (HTTP ${res.status}): ${detail}`);
    return;
  }
  if (res.data.refused) showRefusal(res.data);
  else showAnswer(res.data);
}

// -- answers ---------------------------------------------------------------------------------
function showRefusal(data) {
  clearResult();
  $("refusal-reason").textContent = data.reason || "This question cannot be answered.";
  const list = $("suggestions");
  list.replaceChildren();
  for (const s of data.suggestions || []) {
    const li = document.createElement("li");
    li.textContent = s;
    list.appendChild(li);
  }
  $("suggestions-box").hidden = list.children.length === 0;
  $("refusal").hidden = false;
}

function showAnswer(data) {
  clearResult();
  const formats = data.formats || {};
  $("interpretation").textContent = data.interpretation ? data.interpretation.text : "";

  const caveats = $("caveats");
  caveats.replaceChildren();
  for (const note of data.caveats || []) {
    const li = document.createElement("li");
    li.textContent = note;
    caveats.appendChild(li);
  }
  caveats.hidden = caveats.children.length === 0;

  renderTable(data.columns, data.rows, formats);
  renderChart(data, formats);
  $("sql").textContent = data.sql || "";
  $("sql-box").open = false;
  const n = data.rows.length;
  $("meta").textContent = `${n} row${n === 1 ? "" : "s"}` + (data.cached ? " · from the cache" : "") + ` · as of ${data.as_of}`;
  $("result").hidden = false;
}

function renderTable(columns, rows, formats) {
  const table = $("answer-table");
  const head = document.createElement("tr");
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    if (c in formats) th.className = "num";
    head.appendChild(th);
  }
  table.tHead.replaceChildren(head);
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    columns.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = formatValue(row[i], formats[c]);
      if (c in formats) td.className = "num";
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
}

// -- charts (hand-written SVG) ----------------------------------------------------------------
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function note(box, text) {
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = text;
  box.appendChild(p);
}

function clip(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

function renderChart(data, formats) {
  const box = $("chart");
  box.replaceChildren();
  const chart = data.chart;
  if (!chart || !data.rows.length) return;
  const xi = data.columns.indexOf(chart.x);
  const yi = data.columns.indexOf(chart.y);
  if (xi < 0 || yi < 0) return;
  // Columns that say what a row is (dimensions and their names), i.e. not metrics.
  const labelCols = data.columns.map((c, i) => i).filter((i) => !(data.columns[i] in formats));
  const fmt = formats[chart.y];
  if (chart.type === "line") drawLine(box, data, xi, yi, labelCols.filter((i) => i !== xi), fmt);
  else drawBars(box, data, yi, labelCols, fmt);
}

function scale(values) {
  let lo = Math.min(0, ...values);
  let hi = Math.max(0, ...values);
  if (lo === hi) hi = lo + 1;
  return { lo, hi };
}

function drawBars(box, data, yi, labelCols, fmt) {
  const rows = data.rows.filter((r) => typeof r[yi] === "number");
  if (!rows.length) return;
  const shown = rows.slice(0, MAX_BARS);
  const W = 760, labelW = 240, valueW = 90, rowH = 26, top = 8;
  const H = top * 2 + shown.length * rowH;
  const { lo, hi } = scale(shown.map((r) => r[yi]));
  const plotW = W - labelW - valueW;
  const x = (v) => labelW + ((v - lo) / (hi - lo)) * plotW;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${data.chart.y} by ${data.chart.x}`, class: "bars" });
  shown.forEach((r, k) => {
    const label = labelCols.map((i) => r[i]).filter((v) => v !== null && v !== "").join(" · ");
    const y = top + k * rowH;
    const v = r[yi];
    svg.appendChild(svgEl("text", { x: labelW - 8, y: y + rowH / 2 + 4, "text-anchor": "end" }, clip(label, 34)));
    const x0 = x(Math.min(0, v)), x1 = x(Math.max(0, v));
    const bar = svgEl("rect", { class: "bar", x: x0, y: y + 4, width: Math.max(1, x1 - x0), height: rowH - 8, rx: 2 });
    bar.appendChild(svgEl("title", {}, `${label}: ${formatValue(v, fmt)}`));
    svg.appendChild(bar);
    svg.appendChild(svgEl("text", { class: "value", x: x1 + 6, y: y + rowH / 2 + 4 }, formatValue(v, fmt)));
  });
  svg.appendChild(svgEl("line", { class: "axis", x1: x(0), x2: x(0), y1: top, y2: H - top }));
  box.appendChild(svg);
  if (rows.length > shown.length) note(box, `The chart shows the first ${shown.length} of ${rows.length} rows; the table has them all.`);
}

function drawLine(box, data, xi, yi, seriesCols, fmt) {
  const xs = [...new Set(data.rows.map((r) => String(r[xi])))].sort();
  const series = new Map();
  for (const r of data.rows) {
    const key = seriesCols.map((i) => r[i]).filter((v) => v !== null && v !== "").join(" · ");
    if (!series.has(key)) series.set(key, []);
    if (typeof r[yi] === "number") series.get(key).push([xs.indexOf(String(r[xi])), r[yi]]);
  }
  if (series.size > MAX_SERIES) {
    note(box, `Too many series (${series.size}) to draw: see the table.`);
    return;
  }
  const values = [...series.values()].flat().map((p) => p[1]);
  if (!values.length) return;
  const W = 760, H = 300, left = 80, right = 24, top = 16, bottom = 40;
  const legendH = series.size > 1 ? 20 * series.size : 0;
  const { lo, hi } = scale(values);
  const x = (k) => (xs.length === 1 ? left + (W - left - right) / 2 : left + (k / (xs.length - 1)) * (W - left - right));
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H + legendH}`, role: "img", "aria-label": `${data.chart.y} over ${data.chart.x}`, class: "lines" });
  for (let t = 0; t <= 4; t++) {
    const v = lo + ((hi - lo) * t) / 4;
    svg.appendChild(svgEl("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
    svg.appendChild(svgEl("text", { x: left - 8, y: y(v) + 4, "text-anchor": "end" }, formatValue(v, fmt)));
  }
  svg.appendChild(svgEl("line", { class: "axis", x1: left, x2: W - right, y1: y(lo), y2: y(lo) }));
  const step = Math.max(1, Math.ceil(xs.length / 7));
  xs.forEach((label, k) => {
    if (k % step === 0 || k === xs.length - 1) {
      const anchor = xs.length > 1 && k === xs.length - 1 ? "end" : xs.length > 1 && k === 0 ? "start" : "middle";
      svg.appendChild(svgEl("text", { x: x(k), y: H - bottom + 18, "text-anchor": anchor }, label));
    }
  });
  let s = 0;
  for (const [key, points] of series) {
    const cls = `s${s}`;
    if (points.length > 1) {
      const d = points.map(([k, v], j) => `${j ? "L" : "M"}${x(k).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      svg.appendChild(svgEl("path", { class: `line ${cls}`, d }));
    }
    for (const [k, v] of points) {
      const dot = svgEl("circle", { class: `point ${cls}`, cx: x(k), cy: y(v), r: 3.5 });
      dot.appendChild(svgEl("title", {}, `${key ? key + ", " : ""}${xs[k]}: ${formatValue(v, fmt)}`));
      svg.appendChild(dot);
    }
    if (series.size > 1) {
      const ly = H + 20 * s + 4;
      svg.appendChild(svgEl("rect", { class: cls, x: left, y: ly, width: 12, height: 12 }));
      svg.appendChild(svgEl("text", { class: "legend", x: left + 18, y: ly + 11 }, clip(key || "(none)", 60)));
    }
    s++;
  }
  box.appendChild(svg);
}

// -- wiring ----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ask($("question").value);
  });
  for (const button of document.querySelectorAll("button.example")) {
    button.addEventListener("click", () => {
      $("question").value = button.dataset.question;
      ask(button.dataset.question);
    });
  }
  $("save-token").addEventListener("click", () => {
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    $("auth").hidden = true;
    if ($("question").value.trim()) ask($("question").value);
  });
  const params = new URLSearchParams(window.location.search);
  if (params.get("as_of")) $("as-of").value = params.get("as_of");
  if (params.get("q")) {
    $("question").value = params.get("q");
    ask(params.get("q"));
  }
});
