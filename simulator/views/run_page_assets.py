"""The run page's HTML, style and script (see :mod:`simulator.views.run_page`).

One template: ``__TITLE__`` and ``__DATA__`` are filled in. Plain JavaScript and SVG, no
library, so the page opens from a results folder with no network. Colours are the
Okabe-Ito palette (told apart by colour-blind viewers), and every mark also differs in shape
and has a text alternative (a title, and the events listed as text under the picture).
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root { --blue:#0072B2; --orange:#E69F00; --red:#D55E00; --green:#009E73; --sky:#56B4E9;
        --purple:#CC79A7; --grey:#555; font-family: system-ui, sans-serif; }
body { margin: 0 1.2em 2em; color: #111; background: #fff; }
header { display: flex; flex-wrap: wrap; gap: 1em; align-items: baseline; }
h1 { font-size: 1.3em; margin: .6em 0 .2em; }
.badge { font-weight: bold; padding: .15em .6em; border-radius: .3em; color: #fff; }
.PASS { background: var(--green); } .FAIL, .ERROR { background: var(--red); }
.WORLD { background: var(--blue); }
#controls { display: flex; gap: .6em; align-items: center; margin: .5em 0; flex-wrap: wrap; }
#controls input[type=range] { width: 24em; }
#scroller { overflow-x: auto; border: 1px solid #ccc; position: relative; }
svg text { font-size: 12px; fill: #222; }
.lane { stroke: #999; stroke-width: 1; }
.frame line.hit, .event circle.hit { stroke: transparent; fill: transparent; stroke-width: 12; }
.frame, .event { cursor: pointer; }
.frame:focus, .event:focus { outline: 2px solid var(--blue); }
.selected line.shown, .selected .mark { stroke-width: 4 !important; }
.future { opacity: .12; }
#stamp { font-size: 22px; font-weight: bold; pointer-events: none; }
#meters { margin: .4em 0; }
.meter { display: flex; gap: .6em; align-items: center; margin: .15em 0; }
.bar { width: 22em; height: 1em; border: 1px solid #777; position: relative; }
.fill { position: absolute; top: 0; left: 0; bottom: 0; background: var(--orange); }
.forgotten .fill { background: var(--red); }
#details { border: 1px solid #aaa; padding: .5em 1em; margin: .6em 0; min-height: 3em; }
#details table, #facts table { border-collapse: collapse; }
#details td, #details th, #facts td, #facts th { padding: .1em .6em; text-align: left;
  border-bottom: 1px solid #eee; vertical-align: top; }
#facts { display: flex; flex-wrap: wrap; gap: 2em; }
.hint { color: var(--grey); font-size: .9em; }
.embedded #controls, .embedded #facts, .embedded h2, .embedded #eventlist,
.embedded .hint { display: none; }
.embedded h1 { font-size: 1.05em; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <span id="verdict" class="badge"></span>
  <span id="agrees"></span>
</header>
<ol id="story"></ol>
<div id="controls">
  <button id="play" type="button">&#9654; play</button>
  <label>speed <select id="pace"><option value="1">1&times;</option>
    <option value="2">2&times;</option><option value="4">4&times;</option></select></label>
  <input id="clock" type="range" min="0" step="any" aria-label="model time">
  <output id="now"></output>
  <button id="zoomin" type="button" aria-label="zoom in">+</button>
  <button id="zoomout" type="button" aria-label="zoom out">&minus;</button>
  <button id="fit" type="button">fit</button>
  <button id="step" type="button">next decisive moment &#8677;</button>
</div>
<div id="meters" aria-live="polite"></div>
<div id="scroller"><svg id="lanes" role="img" aria-labelledby="lanes-desc"><desc
  id="lanes-desc"></desc></svg></div>
<p class="hint">Click a frame (an arrow) or an event (a mark) for its details; ctrl+wheel
or the buttons zoom; the play button replays model time.</p>
<section id="details" aria-live="polite"><p class="hint">Nothing selected.</p></section>
<section id="facts"></section>
<h2>Events as text</h2>
<table id="eventlist"></table>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const LANES = {client: 50, middlebox: 150, server: 250};
const NAMES = {client: "client", middlebox: "appliance", server: "server"};
const BAD = new Set(["flow_expired", "rst_sent", "dropped", "reset", "timeout",
  "keepalive_failed", "unacknowledged", "port_allocation_error"]);
const GOOD = new Set(["answer", "delivered"]);
const LABELS = {flow_expired: "forgotten", rst_sent: "RST", timeout: "gives up",
  answer: "answer", reset: "reset", request_sent: "request", answer_sent: "answer sent",
  keepalive: "probe", unacknowledged: "unacknowledged", connect_failed: "connect failed"};
const C = {blue: "#0072B2", orange: "#E69F00", red: "#D55E00", green: "#009E73",
  sky: "#56B4E9", purple: "#CC79A7", grey: "#555555"};
const SVGNS = "http://www.w3.org/2000/svg";
let pxPerS = 1, now = D.end, playing = null, selected = null, placed = {};

function el(tag, attrs, parent, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}
function html(tag, text, parent, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}
const x = (t) => 70 + Math.max(0, t) * pxPerS;
const fmt = (t) => (Math.round(t * 10) / 10 + 0).toFixed(1) + " s";

function colourOf(item) {
  if (item.outcome === "dropped") return C.red;
  if (item.outcome === "made") return C.purple;
  return item.probe ? C.green : C.blue;
}

function draw() {
  const svg = document.getElementById("lanes");
  const desc = document.getElementById("lanes-desc");
  for (const node of Array.from(svg.childNodes)) if (node !== desc) svg.removeChild(node);
  const width = x(D.end) + 60;
  svg.setAttribute("width", width);
  svg.setAttribute("height", 300);
  el("defs", {}, svg).innerHTML =
    '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" ' +
    'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">' +
    '<path d="M0,0 L10,5 L0,10 z" ' +
    'fill="context-stroke"/></marker>';
  for (const [lane, y] of Object.entries(LANES)) {
    el("line", {x1: 70, x2: width - 20, y1: y, y2: y, class: "lane"}, svg);
    el("text", {x: 4, y: y + 4}, svg, NAMES[lane]);
  }
  const step = niceStep(D.end / Math.max(1, (width - 100) / 90));
  for (let t = 0; t <= D.end + 1e-9; t += step) {
    el("line", {x1: x(t), x2: x(t), y1: 285, y2: 292, stroke: "#777"}, svg);
    el("text", {x: x(t) - 10, y: 298}, svg, Math.round(t) + " s");
  }
  for (const flow of D.flows) {
    const end = flow.expired === null ? D.end : flow.expired;
    const bar = el("rect", {x: x(flow.created || 0), y: LANES.middlebox - 12,
      width: Math.max(2, x(end) - x(flow.created || 0)), height: 8, fill: C.sky,
      "data-t": flow.created || 0, "data-end": end, class: "flowbar"}, svg);
    el("title", {}, bar, `flow #${flow.id} in the appliance's table`);
  }
  // the appliance's own frames at the bottom, the dropped ones on top: where frames
  // overlap, the late packet is the one clicked, and its details link to its RST
  for (const outcome of ["made", "forwarded", "dropped"]) {
    for (const f of D.frames) if (f.outcome === outcome) drawFrame(svg, f);
  }
  placed = {};
  for (const ev of D.events) drawEvent(svg, ev);
  // a run ends with its verdict; a world taken down, with its connections' summary
  const ending = D.verdict ? `${D.verdict}: client ${D.outcome ? D.outcome.client : "?"}, ` +
    `server ${D.outcome ? D.outcome.server : "?"}` : D.story[D.story.length - 1] || "";
  const stamp = el("text", {id: "stamp", x: 80, y: 120, fill: D.verdict === "PASS" ?
    C.green : D.verdict ? C.red : C.blue}, svg, ending);
  const room = Math.max(200, width - 120);  // a long outcome shrinks to fit the lanes
  if (stamp.getComputedTextLength() > room) {
    stamp.setAttribute("textLength", room);
    stamp.setAttribute("lengthAdjust", "spacingAndGlyphs");
  }
  document.getElementById("lanes-desc").textContent = `${D.frames.length} frames and ` +
    `${D.events.length} events on a model-time axis of ${fmt(D.end)}; ` +
    "the events are listed as text below.";
  showTime(now);
  if (selected) mark(selected.kind, selected.i);
}

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-3))));
  for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

function drawFrame(svg, f) {
  const g = el("g", {class: "frame", tabindex: 0, "data-i": f.i, "data-t": f.t,
    "data-outcome": f.outcome, role: "button"}, svg);
  const y1 = LANES[f.from], y2 = LANES[f.to];
  const t2 = f.t_out === undefined ? f.t : f.t_out;
  const shift = f.outcome === "made" ? 6 : 0;  // beside the packet it answers, not on it
  const attrs = {x1: x(f.t) + shift, y1: y1, x2: x(t2) + shift, y2: y2};
  el("line", Object.assign({class: "shown mark", stroke: colourOf(f), "stroke-width": 1.6,
    "marker-end": f.outcome === "dropped" ? "" : "url(#arrow)"}, attrs), g);
  el("line", Object.assign({class: "hit"}, attrs), g);
  if (f.outcome === "dropped") cross(g, x(f.t), LANES.middlebox, 6, C.red);
  const b = f.before || f.after;
  el("title", {}, g, `${fmt(f.t)} ${f.from} \u2192 ${f.to}: ${b.flags || b.proto} ` +
    `${f.outcome}; ${f.rule}`);
  g.addEventListener("click", () => select("frame", f.i));
  g.addEventListener("keydown", (e) => { if (e.key === "Enter") select("frame", f.i); });
}

function cross(parent, cx, cy, r, colour) {
  for (const d of [[-r, -r, r, r], [-r, r, r, -r]]) {
    el("line", {x1: cx + d[0], y1: cy + d[1], x2: cx + d[2], y2: cy + d[3], stroke: colour,
      "stroke-width": 3, class: "mark"}, parent);
  }
}

function drawEvent(svg, ev) {
  if (ev.t === undefined || LANES[ev.lane] === undefined) return;
  const colour = BAD.has(ev.kind) ? C.red : GOOD.has(ev.kind) ? C.green :
    C.grey;
  const g = el("g", {class: "event", tabindex: 0, "data-i": ev.i, "data-t": ev.t,
    "data-kind": ev.kind, role: "button"}, svg);
  const y = LANES[ev.lane] + (ev.lane === "middlebox" ? 18 : ev.lane === "client" ? -16 : 16);
  if (ev.kind === "flow_expired") {
    cross(g, x(ev.t), y, 7, colour);
  } else {
    el("circle", {cx: x(ev.t), cy: y, r: 5, fill: colour, class: "mark"}, g);
  }
  el("circle", {cx: x(ev.t), cy: y, r: 9, class: "hit"}, g);
  if (LABELS[ev.kind]) {  // labels close together on a lane are stacked, not overprinted
    const last = placed[ev.lane];
    const row = last && x(ev.t) - last.x < 80 ? last.row + 1 : 0;
    placed[ev.lane] = {x: row ? last.x : x(ev.t), row: row};
    const dy = (ev.lane === "client" ? -4 : 12) + (ev.lane === "client" ? -11 : 11) * row;
    el("text", {x: x(ev.t) + 9, y: y + dy, "font-size": "11px"}, g, LABELS[ev.kind]);
  }
  el("title", {}, g, `${fmt(ev.t)} ${ev.source}: ${ev.text}`);
  g.addEventListener("click", () => select("event", ev.i));
  g.addEventListener("keydown", (e) => { if (e.key === "Enter") select("event", ev.i); });
}

function row(table, key, value) {
  const tr = html("tr", undefined, table);
  html("th", key, tr);
  html("td", value === null || value === undefined ? "\u2014" : String(value), tr);
}

function mark(kind, i) {
  for (const node of document.querySelectorAll(".selected")) node.classList.remove("selected");
  const node = document.querySelector(`.${kind}[data-i="${i}"]`);
  if (node) node.classList.add("selected");
}

function select(kind, i) {
  selected = {kind: kind, i: i};
  mark(kind, i);
  const box = document.getElementById("details");
  box.textContent = "";
  const table = html("table");
  if (kind === "frame") {
    const f = D.frames[i];
    html("h3", `Frame at ${fmt(f.t)}: ${NAMES[f.from]} \u2192 ${NAMES[f.to]} ` +
      `(${f.outcome})`, box);
    html("p", f.rule, box, "rule");
    const b = f.before || {}, a = f.after || {};
    row(table, "flow", f.flow === null ? null : "#" + f.flow);
    row(table, "protocol", (f.before || f.after).proto);
    row(table, "before the appliance", f.before ? `${b.src} \u2192 ${b.dst}` : "(none)");
    row(table, "after the appliance", f.after ? `${a.src} \u2192 ${a.dst}` :
      "(none: it went no further)");
    const any = f.before || f.after;
    row(table, "flags", any.flags);
    row(table, "sequence number", any.seq);
    row(table, "acknowledgement number", any.ack);
    row(table, "IP length", any.length);
    row(table, "payload bytes", any.payload);
    box.appendChild(table);
    const next = D.frames.filter((o) => o.outcome === "made" && o.flow === f.flow &&
      o.t >= f.t && o.t - f.t <= 1.0);
    if (f.outcome === "dropped" && next.length) {
      html("h4", "What followed", box);
      const ul = html("ul", undefined, box);
      for (const o of next) {
        const li = html("li", undefined, ul);
        const btn = html("button", `${fmt(o.t)}: ${o.rule} (to the ${NAMES[o.to]}, ` +
          `${o.after.flags} seq ${o.after.seq})`, li, "followed");
        btn.type = "button";
        btn.addEventListener("click", () => select("frame", o.i));
      }
    }
  } else {
    const ev = D.events[i];
    html("h3", `Event at ${fmt(ev.t)} (${ev.source})`, box);
    html("p", ev.text, box, "rule");
    for (const [k, v] of Object.entries(ev)) {
      if (!["text", "i", "lane", "source"].includes(k)) row(table, k, v);
    }
    box.appendChild(table);
  }
}

function showTime(t) {
  now = Math.min(Math.max(t, 0), D.end);
  document.getElementById("clock").value = now;
  document.getElementById("now").textContent = `model time ${fmt(now)} of ${fmt(D.end)}`;
  for (const node of document.querySelectorAll("[data-t]")) {
    node.classList.toggle("future", Number(node.dataset.t) > now + 1e-9);
  }
  for (const bar of document.querySelectorAll(".flowbar")) {
    const from = Number(bar.dataset.t), to = Math.min(now, Number(bar.dataset.end));
    bar.setAttribute("width", Math.max(2, x(to) - x(from)));
  }
  const stamp = document.getElementById("stamp");
  if (stamp) stamp.setAttribute("visibility", now >= D.end - 1e-9 ? "visible" : "hidden");
  const box = document.getElementById("meters");
  box.textContent = "";
  for (const flow of D.flows) {
    if ((flow.created || 0) > now + 1e-9) continue;
    const forgotten = flow.expired !== null && flow.expired <= now + 1e-9;
    const last = Math.max(flow.created || 0,
      ...flow.activity.filter((a) => a <= now + 1e-9));
    // forgotten: idle to the timeout; closed (a FIN, an RST): idle as it was then
    const idle = !forgotten ? now - last : flow.how === "closed" ?
      Math.max(0, flow.expired - last) : D.timeout;
    const line = html("div", undefined, box, "meter" + (forgotten ? " forgotten" : ""));
    html("span", `flow #${flow.id}`, line);
    const bar = html("div", undefined, line, "bar");
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", 0);
    bar.setAttribute("aria-valuemax", D.timeout);
    bar.setAttribute("aria-valuenow", Math.round(idle));
    html("div", undefined, bar, "fill").style.width =
      `${Math.min(100, 100 * idle / Math.max(D.timeout, 1e-9))}%`;
    html("span", forgotten ? `${flow.how} at ${fmt(flow.expired)} (idle ${fmt(idle)})` :
      `idle ${fmt(idle)} of ${D.timeout} s`, line);
  }
}

function play() {
  if (playing !== null) { stop(); return; }
  const pace = Number(document.getElementById("pace").value);
  const seconds = 8 / pace;  // the whole run in 8 wall seconds at 1x
  let from = now >= D.end - 1e-9 ? 0 : now;
  let started = null;
  document.getElementById("play").textContent = "pause";
  const tick = (stamp) => {
    if (started === null) started = stamp;
    const t = from + (stamp - started) / 1000 * D.end / seconds;
    showTime(t);
    if (t >= D.end) { stop(); return; }
    playing = requestAnimationFrame(tick);
  };
  showTime(from);
  playing = requestAnimationFrame(tick);
}

function stop() {
  if (playing !== null) cancelAnimationFrame(playing);
  playing = null;
  document.getElementById("play").textContent = "\u25B6 play";
}

function moments() {  // what the step button stops at: the events that decide a story
  return D.events.filter((e) => BAD.has(e.kind) || GOOD.has(e.kind) ||
    e.kind === "keepalive").map((e) => e.t);
}

function decisive() {
  const times = moments().concat([D.end]);
  const next = times.filter((t) => t > now + 1e-6).sort((a, b) => a - b)[0];
  stop();
  showTime(next === undefined ? D.end : next);
}

function zoom(factor) {
  pxPerS = Math.min(Math.max(pxPerS * factor, 0.05), 5000);
  draw();
}

function fit() {
  const width = document.getElementById("scroller").clientWidth || 1000;
  pxPerS = Math.max(0.05, (width - 140) / Math.max(D.end, 1));
  draw();
}

function facts() {
  document.getElementById("title").textContent = D.title;
  const verdict = document.getElementById("verdict");
  verdict.textContent = D.verdict || "world";
  verdict.className = "badge " + (D.verdict || "WORLD");
  document.getElementById("agrees").textContent = D.model_agrees === null ||
    D.model_agrees === undefined ? "" : D.model_agrees ? "the model agrees" :
    "THE MODEL DISAGREES";
  const story = document.getElementById("story");
  for (const line of D.story) html("li", line, story);
  const box = document.getElementById("facts");
  const what = html("div", undefined, box);
  html("h2", D.outcome ? "Outcome" : "Appliance", what);
  const t1 = html("table", undefined, what);
  for (const side of D.outcome ? ["client", "server"] : []) {
    row(t1, side, `${D.outcome[side]} (expected ${D.expected ? D.expected[side] : "?"})`);
  }
  for (const [k, v] of Object.entries(D.appliance)) row(t1, k, v);
  row(t1, "speed", `${D.speed} (1 wall second = ${D.speed} model seconds)`);
  const set = html("div", undefined, D.settings.length ? box : undefined);
  html("h2", "Settings, scaled", set);
  const t2 = html("table", undefined, set);
  for (const s of D.settings) {
    row(t2, s.setting, s.count !== undefined ? `${s.count}` :
      `${s.model_s} model s = ${Math.round(s.wall_s * 1000) / 1000} wall s` +
      (s.effective_model_s !== s.model_s ? ` (really ${s.effective_model_s} model s)` : ""));
  }
  const cnt = html("div", undefined, box);
  html("h2", `Counters (${D.namespace})`, cnt);
  const t3 = html("table", undefined, cnt);
  for (const [k, v] of Object.entries(D.counters)) row(t3, k, v);
  const files = html("div", undefined, box);
  html("h2", "Files", files);
  const ul = html("ul", undefined, files);
  for (const name of D.links) {
    const a = html("a", name, html("li", undefined, ul));
    a.href = name;
  }
  if (D.left_out) html("p", `${D.left_out} more frames are in capture.pcap, not drawn here.`,
    files, "hint");
  const list = document.getElementById("eventlist");
  for (const ev of D.events) {
    const tr = html("tr", undefined, list);
    html("td", ev.t === undefined ? "" : fmt(ev.t), tr);
    html("td", ev.source, tr);
    html("td", ev.text, tr);
  }
}

document.getElementById("play").addEventListener("click", play);
document.getElementById("step").addEventListener("click", decisive);
document.getElementById("zoomin").addEventListener("click", () => zoom(2));
document.getElementById("zoomout").addEventListener("click", () => zoom(0.5));
document.getElementById("fit").addEventListener("click", fit);
const clock = document.getElementById("clock");
clock.max = D.end;
clock.addEventListener("input", () => { stop(); showTime(Number(clock.value)); });
document.getElementById("scroller").addEventListener("wheel", (e) => {
  if (!e.ctrlKey) return;
  e.preventDefault();
  zoom(e.deltaY < 0 ? 1.25 : 0.8);
}, {passive: false});
facts();
fit();
// the demo page (natsim demo --html) drives several of these pages, each in a frame of its
// own, on one model-time clock
window.natsimPage = {
  end: D.end,
  title: D.title,
  moments: moments,
  show: (t) => { stop(); showTime(t); },
};
if (window.frameElement) document.body.classList.add("embedded");
</script>
</body>
</html>
"""
