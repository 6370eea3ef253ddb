"""The visual builder's page (``GET /builder``): plain SVG + vanilla JS, no build step, no dependency.

Why no flow library: the canvas needs six node kinds, ports and arrows; a library from npm would need Node
and a bundling step at install (and a pinned bundle per release) for what is ~400 lines here. Every
meaning stays on the server (``zhongtai.services.api.builder``): the page only draws the flow, sends it
as JSON, and shows what the server answers (problems on their nodes, the diff, the audience, the
publish result). Elements carry ``data-testid`` for the browser test (tests/integration/test_builder_browser.py).
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zhongtai · journey builder</title>
<style>
  :root { --bg:#0f1720; --panel:#16212c; --line:#2a3a4a; --text:#dde6ee; --dim:#8aa0b4; --accent:#4fb3ff;
          --ok:#3ecf8e; --bad:#ff6b6b; --warn:#f5b942; }
  * { box-sizing: border-box; }
  body { margin:0; font:13px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text);
         display:grid; grid-template-columns:250px 1fr 330px; grid-template-rows:44px 1fr 210px; height:100vh; }
  header { grid-column:1/4; display:flex; gap:12px; align-items:center; padding:0 14px; border-bottom:1px solid var(--line); }
  header h1 { font-size:15px; margin:0 12px 0 0; }
  header input { width:220px; }
  aside, section#form { background:var(--panel); overflow:auto; padding:10px; }
  aside { border-right:1px solid var(--line); }
  section#form { border-left:1px solid var(--line); }
  h2 { font-size:11px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim); margin:14px 0 6px; }
  .pal { padding:7px 10px; margin:4px 0; border:1px solid var(--line); border-radius:6px; cursor:grab; user-select:none; }
  .pal:hover { border-color:var(--accent); }
  table { width:100%; border-collapse:collapse; } td { padding:3px 2px; border-bottom:1px solid var(--line); vertical-align:top; }
  button { background:#21364a; color:var(--text); border:1px solid var(--line); border-radius:5px; padding:4px 9px; cursor:pointer; }
  button:hover { border-color:var(--accent); } button.primary { background:#1d5a8c; }
  input, select, textarea { width:100%; background:#0c131a; color:var(--text); border:1px solid var(--line); border-radius:4px; padding:4px 6px; font:inherit; }
  label { display:block; margin:7px 0 2px; color:var(--dim); }
  #canvas-wrap { position:relative; overflow:hidden; }
  svg#canvas { width:100%; height:100%; background:
     radial-gradient(circle, #1d2a36 1px, transparent 1px) 0 0/20px 20px; }
  .node rect { fill:#1b2a38; stroke:#3b5368; stroke-width:1.5; rx:8; }
  .node.sel rect { stroke:var(--accent); stroke-width:2.5; }
  .node.bad rect { stroke:var(--bad); stroke-width:2.5; }
  .node text { fill:var(--text); font-size:12px; pointer-events:none; } .node text.k { fill:var(--dim); font-size:10px; }
  .port { fill:#4fb3ff; stroke:#0f1720; cursor:crosshair; } .port.free { fill:#f5b942; }
  .portlabel { fill:var(--dim); font-size:9px; pointer-events:none; }
  .edge { fill:none; stroke:#6f8aa3; stroke-width:1.8; marker-end:url(#arrow); pointer-events:none; }
  footer { grid-column:1/4; border-top:1px solid var(--line); display:grid; grid-template-columns:1fr 1fr 1fr; gap:10px; padding:8px 12px; overflow:auto; }
  pre { margin:0; white-space:pre-wrap; font:12px/1.35 ui-monospace, monospace; }
  .bad { color:var(--bad); } .ok { color:var(--ok); } .dim { color:var(--dim); }
  .exprview { font:12px ui-monospace, monospace; white-space:pre-wrap; margin-top:3px; }
  .exprview u { text-decoration:wavy underline var(--bad); color:var(--bad); }
  .diff-add { color:var(--ok); } .diff-del { color:var(--bad); }
</style></head>
<body>
<header>
  <h1>zhongtai · journey builder</h1>
  <span class="dim">API key</span><input id="key" data-testid="api-key" type="password" placeholder="only if the API needs one">
  <button data-testid="new" onclick="newFlow()">New journey</button>
  <span id="status" data-testid="status" class="dim"></span>
</header>
<aside>
  <h2>Drag onto the canvas</h2>
  <div class="pal" data-kind="entry" data-testid="palette-entry">▶ Trigger (entry)</div>
  <div class="pal" data-kind="send" data-testid="palette-send">✉ Action (send)</div>
  <div class="pal" data-kind="wait" data-testid="palette-wait">⏱ Wait</div>
  <div class="pal" data-kind="wait_for" data-testid="palette-wait_for">⌛ Wait for event</div>
  <div class="pal" data-kind="branch" data-testid="palette-branch">⑂ Branch (condition)</div>
  <div class="pal" data-kind="end" data-testid="palette-end">■ Exit (end)</div>
  <p class="dim">Drag from an output dot to a node to connect. Click a node to edit it; Delete removes it.</p>
  <h2>Running rule set <button onclick="loadRunning()">↻</button></h2>
  <table><tbody id="running" data-testid="running"></tbody></table>
  <h2>Experiments</h2>
  <table><tbody id="experiments" data-testid="experiments"></tbody></table>
</aside>
<div id="canvas-wrap"><svg id="canvas" data-testid="canvas">
  <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
    <path d="M0,0 L10,5 L0,10 z" fill="#6f8aa3"/></marker></defs>
  <g id="edges"></g><g id="nodes"></g><path id="drag-line" class="edge" d="" style="display:none"/>
</svg></div>
<section id="form">
  <h2>Journey</h2>
  <label>id</label><input id="j-id" data-testid="journey-id" oninput="setJ('id', this.value)">
  <label>name</label><input id="j-name" data-testid="journey-name" oninput="setJ('name', this.value)">
  <label>campaign</label><input id="j-campaign" data-testid="journey-campaign" oninput="setJ('campaign', this.value)">
  <label>exit on events (comma separated)</label><input id="j-exit" data-testid="journey-exit"
     oninput="setJ('exit', this.value.split(',').map(s => s.trim()).filter(Boolean))">
  <label>version</label><input id="j-version" data-testid="journey-version" type="number" min="1"
     oninput="setJ('version', parseInt(this.value, 10) || 1)">
  <h2>Selected node</h2>
  <div id="node-form" data-testid="node-form"><p class="dim">Click a node.</p></div>
</section>
<footer>
  <div><button data-testid="check" onclick="check()">Check &amp; diff</button>
       <button data-testid="audience" onclick="audience()">Estimate audience</button>
       <button class="primary" data-testid="publish" onclick="publish()">Publish</button>
       <div id="problems" data-testid="problems" style="margin-top:6px"></div>
       <div id="result" data-testid="result" style="margin-top:6px"></div></div>
  <div><h2 style="margin-top:0">Diff against the running version</h2><pre id="diff" data-testid="diff"></pre></div>
  <div><h2 style="margin-top:0">Audience now</h2><div id="aud" data-testid="audience-result"></div>
       <h2>Definitions (what is published)</h2><pre id="yaml" data-testid="yaml"></pre></div>
</footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";
const W = 150, H = 54;
const KIND_LABEL = {entry: "trigger", send: "action", wait: "wait", wait_for: "wait for", branch: "branch", end: "exit"};
let flow, selected = null, bad = new Set(), bases = {};
$("key").value = sessionStorage.getItem("zt-key") || "";
$("key").addEventListener("change", () => sessionStorage.setItem("zt-key", $("key").value));

function newFlow() {
  flow = {journey: {id: "", name: "", campaign: "", exit: [], version: 1}, nodes: [], edges: []};
  bases = {}; selected = null; bad = new Set(); showJourney(); draw(); nodeForm();
}
function setJ(k, v) { flow.journey[k] = v; }
function showJourney() {
  const j = flow.journey;
  $("j-id").value = j.id; $("j-name").value = j.name || ""; $("j-campaign").value = j.campaign || "";
  $("j-exit").value = (j.exit || []).join(", "); $("j-version").value = j.version || 1;
}
function ports(n) {
  if (n.type === "branch") return [...(n.branches || []).map((_, i) => "if" + i), "else"];
  return {entry: ["next"], send: ["next"], wait: ["next"], wait_for: ["on_event", "on_timeout"], end: []}[n.type];
}
function summary(n) {
  if (n.type === "entry") return n.tag_added ? "tag + " + n.tag_added : (n.event || "?");
  if (n.type === "send") return (n.rule.channel || "?") + " · " + (n.rule.template || "?");
  if (n.type === "wait") return n.duration || "?";
  if (n.type === "wait_for") return (n.event || "?") + " ≤ " + (n.within || "?");
  if (n.type === "branch") return (n.branches || []).length + " condition(s)";
  return "";
}
function freshId(type) {
  const base = {entry: "entry", send: "send", wait: "wait", wait_for: "wait_for", branch: "branch", end: "end"}[type];
  for (let i = 1; ; i++) { const id = type === "entry" && i === 1 ? "entry" : base + i; if (!flow.nodes.some((n) => n.id === id)) return id; }
}
function addNode(type, x, y) {
  const n = {id: freshId(type), type, x: Math.round(x), y: Math.round(y)};
  if (type === "send") n.rule = {id: "", version: 1, channel: "", template: "", params: {}, condition: "", quiet_hours: {}};
  if (type === "branch") n.branches = [{if: ""}];
  flow.nodes.push(n); select(n.id); return n;
}
function node(id) { return flow.nodes.find((n) => n.id === id); }
function portXY(n, p) { const ps = ports(n); const i = ps.indexOf(p); return [n.x + W, n.y + H * (i + 1) / (ps.length + 1)]; }

function draw() {
  const g = $("nodes"), eg = $("edges"); g.replaceChildren(); eg.replaceChildren();
  for (const e of flow.edges) {
    const a = node(e.from), b = node(e.to); if (!a || !b) continue;
    const [x1, y1] = portXY(a, e.port), x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const p = document.createElementNS(SVGNS, "path");
    p.setAttribute("class", "edge"); p.setAttribute("d", `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`);
    p.dataset.testid = `edge-${e.from}-${e.port}`; eg.appendChild(p);
  }
  for (const n of flow.nodes) {
    const ng = document.createElementNS(SVGNS, "g");
    ng.setAttribute("class", "node" + (n.id === selected ? " sel" : "") + (bad.has(n.id) ? " bad" : ""));
    ng.setAttribute("transform", `translate(${n.x},${n.y})`); ng.dataset.testid = "node-" + n.id; ng.dataset.id = n.id;
    const r = document.createElementNS(SVGNS, "rect"); r.setAttribute("width", W); r.setAttribute("height", H); ng.appendChild(r);
    const t1 = document.createElementNS(SVGNS, "text"); t1.setAttribute("x", 10); t1.setAttribute("y", 17); t1.setAttribute("class", "k");
    t1.textContent = KIND_LABEL[n.type] + " · " + n.id; ng.appendChild(t1);
    const t2 = document.createElementNS(SVGNS, "text"); t2.setAttribute("x", 10); t2.setAttribute("y", 38); t2.textContent = summary(n); ng.appendChild(t2);
    ports(n).forEach((p) => {
      const [px, py] = portXY(n, p);
      const c = document.createElementNS(SVGNS, "circle");
      const linked = flow.edges.some((e) => e.from === n.id && e.port === p);
      c.setAttribute("class", "port" + (linked ? "" : " free")); c.setAttribute("r", 6);
      c.setAttribute("cx", px - n.x); c.setAttribute("cy", py - n.y); c.dataset.port = p; c.dataset.testid = `port-${n.id}-${p}`;
      ng.appendChild(c);
      if (ports(n).length > 1) {
        const l = document.createElementNS(SVGNS, "text"); l.setAttribute("class", "portlabel");
        l.setAttribute("x", px - n.x + 9); l.setAttribute("y", py - n.y + 3); l.textContent = p; ng.appendChild(l);
      }
    });
    g.appendChild(ng);
  }
}
function svgPoint(ev) { const r = $("canvas").getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }
function nodeAt(ev) { const el = document.elementFromPoint(ev.clientX, ev.clientY); const g = el && el.closest(".node"); return g ? g.dataset.id : null; }

// ---- pointer interactions: palette → canvas, move a node, port → node
let drag = null;
document.querySelectorAll(".pal").forEach((p) => p.addEventListener("mousedown", (ev) => {
  ev.preventDefault(); drag = {kind: "create", type: p.dataset.kind};
}));
$("canvas").addEventListener("mousedown", (ev) => {
  const portEl = ev.target.closest(".port"), g = ev.target.closest(".node");
  if (portEl && g) { ev.preventDefault(); drag = {kind: "link", from: g.dataset.id, port: portEl.dataset.port}; return; }
  if (g) { const n = node(g.dataset.id), [x, y] = svgPoint(ev); select(n.id); drag = {kind: "move", id: n.id, dx: x - n.x, dy: y - n.y}; }
});
document.addEventListener("mousemove", (ev) => {
  if (!drag) return;
  if (drag.kind === "move") { const n = node(drag.id), [x, y] = svgPoint(ev); n.x = Math.max(0, x - drag.dx); n.y = Math.max(0, y - drag.dy); draw(); }
  if (drag.kind === "link") {
    const n = node(drag.from), [x1, y1] = portXY(n, drag.port), [x2, y2] = svgPoint(ev), l = $("drag-line");
    l.style.display = ""; l.setAttribute("d", `M${x1},${y1} L${x2},${y2}`);
  }
});
document.addEventListener("mouseup", (ev) => {
  if (!drag) return;
  const d = drag; drag = null; $("drag-line").style.display = "none";
  const r = $("canvas").getBoundingClientRect();
  const inside = ev.clientX >= r.left && ev.clientX <= r.right && ev.clientY >= r.top && ev.clientY <= r.bottom;
  if (d.kind === "create" && inside) { const [x, y] = svgPoint(ev); addNode(d.type, x - W / 2, y - H / 2); }
  if (d.kind === "link") {
    const to = nodeAt(ev);
    if (to && to !== d.from) {
      flow.edges = flow.edges.filter((e) => !(e.from === d.from && e.port === d.port));
      flow.edges.push({from: d.from, port: d.port, to});
    }
  }
  draw();
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Delete" && selected && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) removeNode(selected);
});
function removeNode(id) {
  flow.nodes = flow.nodes.filter((n) => n.id !== id);
  flow.edges = flow.edges.filter((e) => e.from !== id && e.to !== id);
  selected = null; draw(); nodeForm();
}
function select(id) { selected = id; draw(); nodeForm(); }
function rename(n, id) {
  if (!id || flow.nodes.some((m) => m !== n && m.id === id)) return false;
  flow.edges.forEach((e) => { if (e.from === n.id) e.from = id; if (e.to === n.id) e.to = id; });
  n.id = id; selected = id; return true;
}

// ---- the selected node's form
function field(label, value, testid, oninput, opts = {}) {
  const wrap = document.createElement("div");
  const l = document.createElement("label"); l.textContent = label; wrap.appendChild(l);
  const i = document.createElement(opts.area ? "textarea" : "input");
  if (opts.list) i.setAttribute("list", opts.list);
  if (opts.placeholder) i.placeholder = opts.placeholder;
  i.value = value ?? ""; i.dataset.testid = testid; if (opts.area) i.rows = 2;
  i.addEventListener("input", () => { oninput(i.value); draw(); });
  wrap.appendChild(i);
  if (opts.expr) {
    const v = document.createElement("div"); v.className = "exprview"; v.dataset.testid = testid + "-check"; wrap.appendChild(v);
    const run = () => checkExpr(i.value, v); i.addEventListener("change", run); i.addEventListener("blur", run); if (i.value) run();
  }
  return wrap;
}
function nodeForm() {
  const f = $("node-form"); f.replaceChildren();
  const n = selected && node(selected);
  if (!n) { f.innerHTML = '<p class="dim">Click a node.</p>'; return; }
  f.appendChild(field("step id", n.id, "f-id", (v) => rename(n, v.trim())));
  if (n.type === "entry") {
    f.appendChild(field("entry event", n.event, "f-event", (v) => { n.event = v.trim(); delete n.tag_added; }));
    f.appendChild(field("or: when tag added", n.tag_added, "f-tag", (v) => { if (v.trim()) { n.tag_added = v.trim(); delete n.event; } else delete n.tag_added; }));
    f.appendChild(field("only if (condition)", n.where, "f-where", (v) => { n.where = v; }, {expr: true}));
  } else if (n.type === "send") {
    const r = n.rule;
    f.appendChild(field("channel", r.channel, "f-channel", (v) => { r.channel = v.trim(); }, {list: "channels"}));
    f.appendChild(field("template", r.template, "f-template", (v) => { r.template = v.trim(); }));
    f.appendChild(field("params (JSON)", JSON.stringify(r.params || {}), "f-params", (v) => {
      try { r.params = v.trim() ? JSON.parse(v) : {}; } catch (e) { r.params = v; } }, {area: true}));
    f.appendChild(field("only if (condition)", r.condition, "f-condition", (v) => { r.condition = v; }, {expr: true}));
    f.appendChild(field("quiet hours start (HH:MM)", (r.quiet_hours || {}).start, "f-qh-start", (v) => { r.quiet_hours = {...r.quiet_hours, start: v.trim()}; }));
    f.appendChild(field("quiet hours end (HH:MM)", (r.quiet_hours || {}).end, "f-qh-end", (v) => { r.quiet_hours = {...r.quiet_hours, end: v.trim()}; }));
    f.appendChild(field("quiet hours mode (hold | drop)", (r.quiet_hours || {}).mode, "f-qh-mode", (v) => { r.quiet_hours = {...r.quiet_hours, mode: v.trim()}; }, {list: "qh-modes"}));
    f.appendChild(field("rule name", r.name, "f-rule-name", (v) => { r.name = v; }));
    f.appendChild(field("rule id", r.id, "f-rule-id", (v) => { r.id = v.trim(); }, {placeholder: (flow.journey.id || "journey") + "_" + n.id}));
    f.appendChild(field("rule version", r.version, "f-rule-version", (v) => { r.version = parseInt(v, 10) || 1; }));
    const dl = document.createElement("datalist"); dl.id = "channels";
    ["email", "sms", "push", "webhook", "coupon"].forEach((c) => { const o = document.createElement("option"); o.value = c; dl.appendChild(o); });
    const ml = document.createElement("datalist"); ml.id = "qh-modes";
    ["hold", "drop"].forEach((c) => { const o = document.createElement("option"); o.value = c; ml.appendChild(o); });
    f.append(dl, ml);
  } else if (n.type === "wait") {
    f.appendChild(field("wait (e.g. 30m, 1d)", n.duration, "f-duration", (v) => { n.duration = v.trim(); }));
  } else if (n.type === "wait_for") {
    f.appendChild(field("event", n.event, "f-event", (v) => { n.event = v.trim(); }));
    f.appendChild(field("within (e.g. 1d)", n.within, "f-within", (v) => { n.within = v.trim(); }));
    f.appendChild(field("where (condition)", n.where, "f-where", (v) => { n.where = v; }, {expr: true}));
  } else if (n.type === "branch") {
    (n.branches || []).forEach((b, i) => f.appendChild(field(`if${i} (condition)`, b.if, `f-if${i}`, (v) => { b.if = v; }, {expr: true})));
    const add = document.createElement("button"); add.textContent = "+ condition"; add.dataset.testid = "f-add-branch";
    add.onclick = () => { n.branches.push({if: ""}); draw(); nodeForm(); }; f.appendChild(add);
  }
  const del = document.createElement("button"); del.textContent = "Delete node"; del.style.marginTop = "10px";
  del.dataset.testid = "f-delete"; del.onclick = () => removeNode(n.id); f.appendChild(del);
}

// ---- the server
async function api(method, path, body) {
  const headers = {"Content-Type": "application/json"};
  if ($("key").value) headers["Authorization"] = "Bearer " + $("key").value;
  const r = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  let data = null; try { data = await r.json(); } catch (e) { data = {error: r.statusText}; }
  return {status: r.status, data};
}
function status(text, cls = "dim") { $("status").textContent = text; $("status").className = cls; }
async function checkExpr(text, view) {
  if (!text.trim()) { view.replaceChildren(); return; }
  const {data} = await api("POST", "/v1/expressions/check", {text});
  view.replaceChildren();
  if (data.ok) { const s = document.createElement("span"); s.className = "ok"; s.textContent = "✓ " + data.kind; view.appendChild(s); return; }
  const pre = document.createTextNode(text.slice(0, data.offset));
  const u = document.createElement("u"); u.dataset.testid = "expr-token"; u.textContent = text.slice(data.offset, data.offset + data.length) || " ";
  const post = document.createTextNode(text.slice(data.offset + data.length));
  const m = document.createElement("div"); m.className = "bad"; m.dataset.testid = "expr-error"; m.textContent = data.message;
  view.append(pre, u, post, m);
}
function showProblems(problems) {
  bad = new Set(problems.map((p) => p.node).filter(Boolean)); draw();
  const box = $("problems"); box.replaceChildren();
  for (const p of problems) {
    const d = document.createElement("div"); d.className = "bad"; d.dataset.testid = "problem";
    d.textContent = `${p.node || "journey"} · ${p.field}: ${p.message}`; box.appendChild(d);
  }
}
function showDiff(diff) {
  const pre = $("diff"); pre.replaceChildren();
  for (const item of diff) {
    const h = document.createElement("div"); h.dataset.testid = `diff-${item.kind}-${item.id}`;
    h.textContent = `${item.kind} ${item.id}: ${item.status}` + (item.running_version ? ` (running v${item.running_version} → v${item.version})` : ` (v${item.version})`);
    h.className = item.status === "unchanged" ? "dim" : "ok"; pre.appendChild(h);
    for (const line of item.diff.split("\n")) {
      if (!line || line.startsWith("---") || line.startsWith("+++")) continue;
      const s = document.createElement("div"); s.textContent = line;
      s.className = line[0] === "+" ? "diff-add" : line[0] === "-" ? "diff-del" : "dim"; pre.appendChild(s);
    }
  }
}
async function check() {
  const {status: code, data} = await api("POST", "/v1/builder/document", flow);
  if (code !== 200) { showProblems(data.problems || []); $("yaml").textContent = ""; status(data.error || ("HTTP " + code), "bad"); return null; }
  showProblems([]); showDiff(data.diff); $("yaml").textContent = data.yaml; status("checked: valid", "ok");
  for (const w of data.warnings) {
    const d = document.createElement("div"); d.style.color = "var(--warn)"; d.dataset.testid = "warning";
    d.textContent = `${w.node || "journey"} · ${w.field}: ${w.message}`; $("problems").appendChild(d);
  }
  return data;
}
async function audience() {
  const {status: code, data} = await api("POST", "/v1/builder/audience", flow);
  if (code !== 200) { showProblems(data.problems || []); status(data.error, "bad"); return; }
  const a = $("aud"); a.replaceChildren();
  const head = document.createElement("div"); head.dataset.testid = "audience-entry";
  head.textContent = `${data.entry} of ${data.population} persons could enter now` + (data.exact ? "" : ` (estimated from ${data.sampled})`);
  a.appendChild(head);
  for (const [k, v] of Object.entries(data.steps)) { const d = document.createElement("div"); d.textContent = `${k}: ${v} pass its condition`; a.appendChild(d); }
}
async function publish() {
  const checked = await check(); if (!checked) return;
  const {status: code, data} = await api("POST", "/v1/rules", checked.document);
  const box = $("result"); box.replaceChildren();
  const d = document.createElement("div"); d.dataset.testid = "publish-result";
  if (code === 202) {
    d.className = "ok"; d.textContent = `published ${data.items.map((i) => `${i.kind} ${i.id} v${i.version}`).join(", ")} as ${data.message_id}`;
    status("published", "ok"); loadRunning();
  } else {
    d.className = "bad"; d.textContent = `HTTP ${code}: ${data.error}`; status("not published", "bad");
  }
  box.appendChild(d);
}
async function loadRunning() {
  const {status: code, data} = await api("GET", "/v1/rules");
  const body = $("running"); body.replaceChildren();
  if (code !== 200) { status(data.error || ("HTTP " + code), "bad"); return; }
  for (const it of data.items) {
    const tr = document.createElement("tr"); tr.dataset.testid = `row-${it.kind}-${it.id}`;
    const td = document.createElement("td"); td.textContent = `${it.kind} ${it.id} v${it.version}` + (it.status === "paused" ? " (paused)" : "");
    const acts = document.createElement("td"); acts.style.whiteSpace = "nowrap";
    const btn = (label, fn) => { const b = document.createElement("button"); b.textContent = label; b.onclick = fn; b.dataset.testid = `${label.toLowerCase()}-${it.kind}-${it.id}`; acts.appendChild(b); };
    if (it.kind === "journey") btn("Edit", () => edit(it.id));
    btn(it.status === "paused" ? "Resume" : "Pause", () => control(it, it.status === "paused" ? "resume" : "pause"));
    btn("Delete", () => { if (confirm(`delete ${it.kind} ${it.id}?`)) control(it, "delete"); });
    tr.append(td, acts); body.appendChild(tr);
  }
  const ex = await api("GET", "/v1/experiments"); const eb = $("experiments"); eb.replaceChildren();
  for (const e of (ex.status === 200 ? ex.data.experiments || [] : [])) {
    const tr = document.createElement("tr"); const td = document.createElement("td");
    td.textContent = `${e.key} · ${(e.variants || []).length} variants`; tr.appendChild(td); eb.appendChild(tr);
  }
}
async function control(it, op) {
  const path = `/v1/rules/${encodeURIComponent(it.id)}` + (op === "delete" ? "" : "/" + op) + `?kind=${it.kind}&version=${it.version}`;
  const {status: code, data} = await api(op === "delete" ? "DELETE" : "POST", path);
  status(code === 202 ? `${op} ${it.kind} ${it.id} sent` : `HTTP ${code}: ${data.error}`, code === 202 ? "ok" : "bad");
  loadRunning();
}
async function edit(id) {
  const {status: code, data} = await api("GET", `/v1/builder/flows/${encodeURIComponent(id)}`);
  if (code !== 200) { status(data.error, "bad"); return; }
  flow = data; flow.journey.version += 1;  // publishing the edit makes the next version: 409 if someone was first
  flow.nodes.filter((n) => n.type === "send").forEach((n) => { n.rule.version += 1; });
  selected = null; bad = new Set(); showJourney(); draw(); nodeForm(); status(`editing journey ${id}`);
}
newFlow(); loadRunning();
</script></body></html>
"""
