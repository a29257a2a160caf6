// What every page of the dashboard shares: its data, helpers that build elements
// and charts, and the event stream (/events) that keeps the page current. Text
// from jobs (names, logs, errors) is always set as text, never as markup.
// Loaded first; job_pages.js and cluster_pages.js draw the pages, dashboard.js
// starts the one this is.
"use strict";

const PAGE = document.body.dataset.page;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const content = document.getElementById("content");
let data = JSON.parse(document.getElementById("data").textContent);

// Helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, "0")}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${String(Math.floor(seconds / 60) % 60).padStart(2, "0")}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor(seconds / 3600) % 24}h`;
}

const age = (iso) => (iso ? duration((Date.now() - Date.parse(iso)) / 1000) : "-");
// Ages shown (elements with data-since) grow as the page stays open.
setInterval(() => document.querySelectorAll("[data-since]").forEach((node) => {
  node.textContent = age(node.dataset.since);
}), 5000);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "-");
const score = (value) => (value === null || value === undefined ? "-" : Number(value).toFixed(4));
const statusCell = (status) => el("span", { class: `status status-${status}` }, status);

function epochs(row) {
  if (row.completed_epochs === null || row.completed_epochs === undefined) return "-";
  return row.total_epochs ? `${row.completed_epochs}/${row.total_epochs}` : `${row.completed_epochs}`;
}

function progressBar(row) {
  const pct = row.percent === null || row.percent === undefined ? null : Math.min(100, row.percent);
  const done = row.complete || row.status === "finished";
  return el("span", { class: "progress" },
    el("span", { class: `bar${done ? " done" : ""}`, role: "progressbar", "aria-valuenow": pct ?? "" },
      el("span", { style: `width:${pct ?? 0}%` })),
    el("span", { class: "pct" }, pct === null ? "-" : `${pct.toFixed(0)}%`));
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

// A line chart as inline SVG: series = [{name, color, points: [[x, y], ...]}].
const COLORS = ["#2563c9", "#c23b3b", "#2f8f46", "#c98a00", "#7c3aed", "#0891b2", "#db2777"];
function lineChart(title, series, opts = {}) {
  const width = opts.width || 460, height = opts.height || 200, pad = 34;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "plot" });
  const all = series.flatMap((s) => s.points).filter((p) => p[1] !== null && Number.isFinite(p[1]));
  const box = el("div", { class: "chart", "data-title": title }, el("div", {}, el("b", {}, title)), svg);
  if (!all.length) { box.append(el("div", { class: "muted" }, "no data yet")); return box; }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (opts.yMin !== undefined) y0 = Math.min(y0, opts.yMin);
  if (opts.yMax !== undefined) y1 = Math.max(y1, opts.yMax);
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 += 1; y0 -= 1; }
  const sx = (x) => pad + ((x - x0) / (x1 - x0)) * (width - pad - 8);
  const sy = (y) => height - 18 - ((y - y0) / (y1 - y0)) * (height - 28);
  svg.append(svgEl("line", { x1: pad, y1: height - 18, x2: width - 8, y2: height - 18, stroke: "#ccc" }));
  for (const [value, y] of [[y1, sy(y1)], [y0, sy(y0)]]) {
    const label = svgEl("text", { x: 2, y: y + 4, "font-size": 10, fill: "#6b7685" });
    label.textContent = Number.isInteger(value) || Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
    svg.append(label);
  }
  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (!pts.length) return;
    svg.append(svgEl("polyline", { fill: "none", stroke: color, "stroke-width": 1.6,
      points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
      "data-series": s.name, "data-points": pts.length }));
    legend.append(el("span", {}, el("i", { style: `background:${color}` }), s.name));
  });
  box.append(legend);
  return box;
}

// Live updates --------------------------------------------------------------------

const live = document.getElementById("live");
const handlers = { jobs: [], gpus: [], nodes: [], resync: [] };
let instance = null;

function setLive(state, text) {
  live.className = `live ${state}`;
  live.textContent = text;
}

function connect() {
  const events = new EventSource("/events");
  // A notice that Redis was away when the page was made goes once it is back.
  handlers.resync.push(() => document.getElementById("notice")?.remove());
  events.addEventListener("hello", (e) => {
    const hello = JSON.parse(e.data);
    const again = instance !== null;
    instance = hello.instance;
    setLive(hello.redis ? "on" : "off", hello.redis ? "live" : "Redis unreachable");
    // Reconnected, or Redis back since the page was made: read afresh.
    if (again || (hello.redis && document.getElementById("notice"))) handlers.resync.forEach((fn) => fn());
  });
  events.addEventListener("redis", (e) => {
    const up = JSON.parse(e.data).up;
    setLive(up ? "on" : "off", up ? "live" : "Redis unreachable: reconnecting");
  });
  for (const kind of ["jobs", "gpus", "nodes", "resync"]) {
    events.addEventListener(kind, (e) => {
      const payload = JSON.parse(e.data);
      handlers[kind].forEach((fn) => fn(payload));
    });
  }
  events.onerror = () => setLive("off", "reconnecting…");
}
