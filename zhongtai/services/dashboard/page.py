"""The dashboard's one page: HTML, CSS and JavaScript inline (no CDN, no package data to ship).

The page opens ``events`` (Server-Sent Events, relative to its own URL) and redraws on every
``summary`` event; charts are inline SVG. Every number a test reads carries ``data-testid``.
Values from Redis (scope and tag names) are inserted with ``textContent``, never as HTML.
"""

HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zhongtai · live</title>
<style>
  :root { --bg:#0f1419; --card:#182029; --line:#2a3642; --fg:#e6edf3; --dim:#8b98a5;
          --views:#4ea1ff; --carts:#f5b041; --purchases:#3ddc97; --revenue:#b48cff; --bad:#ff6b6b; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--fg); }
  header { display:flex; align-items:center; gap:16px; padding:12px 20px; border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; font-weight:600; }
  .dim { color:var(--dim); }
  #status { margin-left:auto; display:flex; align-items:center; gap:8px; }
  #dot { width:10px; height:10px; border-radius:50%; background:var(--dim); }
  #dot.ok { background:var(--purchases); } #dot.bad { background:var(--bad); }
  #banner { display:none; background:#3a1d1d; color:#ffb3b3; padding:8px 20px; }
  main { display:grid; grid-template-columns: repeat(12, 1fr); gap:14px; padding:14px 20px; }
  section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; }
  section h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim); margin:0 0 10px; font-weight:600; }
  .w12 { grid-column: span 12; } .w8 { grid-column: span 8; } .w4 { grid-column: span 4; } .w6 { grid-column: span 6; }
  .cards { display:grid; grid-template-columns: repeat(6, 1fr); gap:10px; }
  .card { background:#121a22; border:1px solid var(--line); border-radius:6px; padding:8px 10px; }
  .card .v { font-size:22px; font-weight:600; font-variant-numeric: tabular-nums; }
  .card .k { color:var(--dim); font-size:12px; }
  table { width:100%; border-collapse:collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align:right; padding:5px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--dim); font-weight:500; font-size:12px; }
  th:first-child, td:first-child { text-align:left; }
  tbody tr.scope { cursor:pointer; } tbody tr.scope:hover { background:#1e2833; }
  tbody tr.sel { background:#223042; }
  .legend span { margin-right:14px; font-size:12px; } .legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
  .reasons { display:grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap:4px 16px; margin-top:10px; }
  .reason { display:flex; gap:8px; border-bottom:1px solid var(--line); padding:3px 0; font-variant-numeric: tabular-nums; }
  .reason .r { flex:1; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
  .reason .t { font-weight:600; } .reason .s { color:var(--dim); min-width:60px; text-align:right; }
  .warn { color:var(--bad); font-weight:600; }
  .bar { height:8px; background:var(--views); border-radius:2px; }
  .empty { color:var(--dim); font-style:italic; padding:8px 0; }
  svg text { fill:var(--dim); font-size:10px; }
  .exp { margin-bottom:14px; }
  .exp h3 { font-size:14px; margin:0 0 6px; }
</style>
</head>
<body>
<header>
  <h1>zhongtai · live</h1>
  <span class="dim">prefix <b id="prefix">–</b> · window <span id="window">–</span></span>
  <div id="status"><span id="dot"></span><span id="status-text" class="dim">connecting…</span></div>
</header>
<div id="banner"></div>
<main>
  <section class="w12">
    <h2>Pipeline health</h2>
    <div class="cards">
      <div class="card"><div class="v" data-testid="events-per-s" id="events-per-s">–</div><div class="k">events / s</div></div>
      <div class="card"><div class="v" data-testid="total-received" id="total-received">–</div><div class="k">received</div></div>
      <div class="card"><div class="v" data-testid="total-valid" id="total-valid">–</div><div class="k">valid (<span id="total-unique">–</span> unique)</div></div>
      <div class="card"><div class="v" data-testid="total-dlq" id="total-dlq">–</div><div class="k">DLQ (<span id="dlq-share">–</span> of last window)</div></div>
      <div class="card"><div class="v" data-testid="dlq-per-s" id="dlq-per-s">–</div><div class="k">DLQ / s</div></div>
      <div class="card"><div class="v" data-testid="lag" id="lag">–</div><div class="k">consumer lag <span id="lag-group"></span></div></div>
    </div>
    <div class="reasons" id="dlq-reasons"></div>
  </section>

  <section class="w8">
    <h2>Funnel per campaign × channel <span class="dim" style="text-transform:none">(click a row to chart it)</span></h2>
    <table>
      <thead><tr><th>campaign | channel</th><th>views</th><th>carts</th><th>purchases</th><th>revenue</th>
        <th>view→cart</th><th>cart→purchase</th><th>conversion</th><th>purchases / min</th></tr></thead>
      <tbody id="funnel"></tbody>
    </table>
  </section>

  <section class="w4">
    <h2>Top tags · segment sizes</h2>
    <div id="tags"></div>
  </section>

  <section class="w12">
    <h2>Per minute · <span id="chart-scope">all</span></h2>
    <div class="legend"><span><i style="background:var(--views)"></i>views</span><span><i style="background:var(--carts)"></i>carts</span>
      <span><i style="background:var(--purchases)"></i>purchases</span><span><i style="background:var(--revenue)"></i>revenue (bars, right axis)</span></div>
    <div id="chart"></div>
  </section>

  <section class="w12">
    <h2>Experiments</h2>
    <div id="experiments"></div>
  </section>

  <section class="w12">
    <h2>Top recommendation pairs <span class="dim" style="text-transform:none">(item-to-item similarity; recs.enabled)</span></h2>
    <div id="recs"></div>
  </section>

  <section class="w12">
    <h2>Latest list prices <span class="dim" style="text-transform:none">(the same for everyone; pricing.enabled)</span></h2>
    <div id="prices"></div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const num = (n) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US");
const dec = (x, d) => (x === null || x === undefined) ? "–" : Number(x).toLocaleString("en-US", {minimumFractionDigits: d, maximumFractionDigits: d});
const pct = (x, d = 1) => (x === null || x === undefined) ? "–" : (x * 100).toFixed(d) + "%";
const spct = (x) => (x === null || x === undefined) ? "–" : (x >= 0 ? "+" : "") + (x * 100).toFixed(1) + "%";
let selected = "all";
let latest = null;

function cell(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function row(cells) { const tr = document.createElement("tr"); cells.forEach((c) => tr.appendChild(c)); return tr; }
function svgEl(markup) { const t = document.createElement("template"); t.innerHTML = markup.trim(); return t.content.firstChild; }
function hhmm(label) { return label.slice(8, 10) + ":" + label.slice(10, 12); }

function sparkline(values, w = 140, h = 26) {
  const max = Math.max(1, ...values), n = values.length, bw = w / n;
  let bars = "";
  values.forEach((v, i) => {
    const bh = v ? Math.max(1, (v / max) * (h - 2)) : 0;
    bars += `<rect x="${(i * bw).toFixed(1)}" y="${(h - bh).toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="var(--purchases)"/>`;
  });
  return svgEl(`<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">${bars}</svg>`);
}

function chart(f) {
  const W = Math.max(600, $("chart").clientWidth || 1000), H = 240, L = 50, R = 60, T = 10, B = 24;
  const s = f.series, n = f.minutes.length, pw = W - L - R, ph = H - T - B;
  const max = Math.max(1, ...s.views, ...s.carts, ...s.purchases);
  const rev = s.revenue.map(Number), rmax = Math.max(1, ...rev);
  const pad = pw / (2 * n), x = (i) => L + pad + (n === 1 ? 0 : (i * (pw - 2 * pad)) / (n - 1));
  const y = (v) => T + ph - (v / max) * ph, yr = (v) => T + ph - (v / rmax) * ph;
  let g = "";
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4, yy = y(v);
    g += `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="var(--line)"/>`;
    g += `<text x="${L - 6}" y="${yy + 3}" text-anchor="end">${Math.round(v)}</text>`;
    g += `<text x="${W - R + 6}" y="${yr((rmax * k) / 4) + 3}">${((rmax * k) / 4).toFixed(0)}</text>`;
  }
  const bw = Math.max(2, 2 * pad - 2);
  rev.forEach((v, i) => { if (v) g += `<rect x="${x(i) - bw / 2}" y="${yr(v)}" width="${bw}" height="${T + ph - yr(v)}" fill="var(--revenue)" opacity="0.35"/>`; });
  for (const [k, color] of [["views", "var(--views)"], ["carts", "var(--carts)"], ["purchases", "var(--purchases)"]]) {
    const pts = s[k].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    g += `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts}"/>`;
  }
  const step = Math.max(1, Math.ceil(n / 10));
  f.minutes.forEach((m, i) => { if (i % step === 0 || i === n - 1) g += `<text x="${x(i)}" y="${H - 6}" text-anchor="middle">${hhmm(m)}</text>`; });
  return svgEl(`<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${g}</svg>`);
}

function renderHealth(s) {
  const t = s.totals || {}, h = s.health || {};
  $("prefix").textContent = s.prefix;
  $("window").textContent = `${s.window.minutes} min to ${hhmm(s.window.end)} UTC`;
  $("events-per-s").textContent = dec(h.events_per_s, 1);
  $("total-received").textContent = num(t.received || 0);
  $("total-valid").textContent = num(t.valid || 0);
  $("total-unique").textContent = num(t.unique || 0);
  $("total-dlq").textContent = num(t.dlq || 0);
  $("dlq-share").textContent = pct(h.dlq_share, 2);
  $("dlq-per-s").textContent = dec(h.dlq_per_s, 2);
  const lag = h.lag || {};
  $("lag").textContent = lag.error ? "n/a" : num(lag.total);
  $("lag").title = lag.error || "";
  $("lag-group").textContent = lag.group ? `(${lag.group})` : "";
  const box = $("dlq-reasons"); box.replaceChildren();
  const reasons = Object.keys(t).filter((k) => k.startsWith("dlq:")).sort();
  if (!reasons.length) box.appendChild(cell("div", "no DLQ records", {class: "empty"}));
  for (const k of reasons) {
    const r = k.slice(4), rate = (h.dlq_per_s_by_reason || {})[r];
    const item = cell("div", null, {class: "reason", title: `DLQ reason ${r}`});
    item.append(cell("span", r, {class: "r"}), cell("span", num(t[k]), {class: "t", "data-testid": `dlq-${r}`}),
                cell("span", `${dec(rate, 2)}/s`, {class: "s"}));
    box.appendChild(item);
  }
}

function renderFunnel(s) {
  const body = $("funnel"); body.replaceChildren();
  if (!s.funnels.some((f) => f.scope === selected)) selected = "all";
  // scopes with no funnel step in the window are folded into one line (the API still lists them)
  const shown = s.funnels.filter((f) => f.scope === "all" || f.scope === selected || f.views + f.carts + f.purchases > 0);
  const idle = s.funnels.length - shown.length;
  for (const f of shown) {
    const name = f.scope === "all" ? "all campaigns" : f.scope;
    const tr = row([
      cell("td", name),
      cell("td", num(f.views), {"data-testid": `funnel-views-${f.scope}`}),
      cell("td", num(f.carts), {"data-testid": `funnel-carts-${f.scope}`}),
      cell("td", num(f.purchases), {"data-testid": `funnel-purchases-${f.scope}`}),
      cell("td", dec(f.revenue, 2), {"data-testid": `funnel-revenue-${f.scope}`}),
      cell("td", pct(f.view_to_cart)), cell("td", pct(f.cart_to_purchase)), cell("td", pct(f.conversion, 2)),
    ]);
    const sp = document.createElement("td"); sp.appendChild(sparkline(f.series.purchases)); tr.appendChild(sp);
    tr.className = "scope" + (f.scope === selected ? " sel" : "");
    if (f.scope === "all") tr.style.fontWeight = "600";
    tr.addEventListener("click", () => { selected = f.scope; render(latest); });
    body.appendChild(tr);
  }
  if (idle) body.appendChild(row([cell("td", `+ ${idle} campaign | channel scopes with no views, carts or purchases in this window`,
                                        {colspan: "9", class: "empty", "data-testid": "idle-scopes"})]));
  const f = s.funnels.find((x) => x.scope === selected);
  $("chart-scope").textContent = selected === "all" ? "all campaigns" : selected;
  $("chart").replaceChildren(f ? chart(f) : cell("div", "no counters yet", {class: "empty"}));
}

function renderTags(s) {
  const box = $("tags"); box.replaceChildren();
  const top = (s.tags || {}).top || [];
  if (!top.length) { box.appendChild(cell("div", "no tags yet", {class: "empty", "data-testid": "no-tags"})); return; }
  const max = Math.max(...top.map((t) => t.size));
  const tbl = document.createElement("table"), body = document.createElement("tbody");
  for (const t of top) {
    const bar = cell("div", null, {class: "bar"}); bar.style.width = `${Math.max(2, (100 * t.size) / max)}%`;
    const bc = document.createElement("td"); bc.style.width = "45%"; bc.appendChild(bar);
    body.appendChild(row([cell("td", t.tag), cell("td", num(t.size), {"data-testid": `tag-${t.tag}`}), bc]));
  }
  tbl.appendChild(body); box.appendChild(tbl);
  box.appendChild(cell("div", `${num(s.tags.count)} tags`, {class: "dim"}));
}

function interval(ci, lo, hi, w = 160, h = 14) {
  if (!ci || ci[0] === null || ci[1] === null) return cell("span", "–");
  const sx = (v) => ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * w;
  const color = ci[0] > 0 ? "var(--purchases)" : ci[1] < 0 ? "var(--bad)" : "var(--dim)";
  return svgEl(`<svg width="${w}" height="${h}"><line x1="${sx(0)}" x2="${sx(0)}" y1="0" y2="${h}" stroke="var(--line)"/>` +
    `<line x1="${sx(ci[0])}" x2="${sx(ci[1])}" y1="${h / 2}" y2="${h / 2}" stroke="${color}" stroke-width="4"/></svg>`);
}

function renderExperiments(s) {
  const box = $("experiments"); box.replaceChildren();
  if (!s.experiments.length) { box.appendChild(cell("div", "no experiments yet", {class: "empty"})); return; }
  for (const e of s.experiments) {
    const div = cell("div", null, {class: "exp", "data-testid": `exp-${e.experiment}`});
    div.appendChild(cell("h3", e.experiment));
    if (e.error) { div.appendChild(cell("div", e.error, {class: "warn"})); box.appendChild(div); continue; }
    const srm = e.srm || {};
    div.appendChild(cell("div", srm.warning
      ? `SRM warning: sample ratio mismatch (p = ${Number(srm.p_value).toExponential(2)}), results not trustworthy`
      : `${num(e.total_n)} units · SRM ok (p = ${srm.p_value === null ? "–" : Number(srm.p_value).toFixed(3)})`,
      {class: srm.warning ? "warn" : "dim", "data-testid": `srm-${e.experiment}`}));
    const cis = e.variants.flatMap((v) => Object.values(v.metrics).flatMap((m) => m.lift_ci)).filter((x) => x !== null);
    const span = Math.max(0.05, ...cis.map(Math.abs)), lo = -span, hi = span;
    const tbl = document.createElement("table");
    tbl.appendChild(row(["variant", "metric", "n", "value", "lift", "95% CI", "", "p", "p adj", "decision"].map((x) => cell("th", x))));
    for (const v of e.variants) {
      for (const metric of ["conversion", "revenue"]) {
        const m = v.metrics[metric];
        const value = metric === "conversion" ? pct(v.rate, 2) : dec(v.mean, 2);
        const ic = document.createElement("td"); if (m) ic.appendChild(interval(m.lift_ci, lo, hi));
        tbl.appendChild(row([
          cell("td", metric === "conversion" ? v.variation + (v.control && v.variation !== "control" ? " (control)" : "") : ""), cell("td", metric),
          cell("td", num(v.n)), cell("td", value), cell("td", m ? spct(m.lift) : ""),
          cell("td", m && m.lift_ci[0] !== null ? `[${spct(m.lift_ci[0])}, ${spct(m.lift_ci[1])}]` : (m ? "–" : "")), ic,
          cell("td", m && m.p_value !== null ? m.p_value.toFixed(4) : ""), cell("td", m && m.p_adjusted !== null ? m.p_adjusted.toFixed(4) : ""),
          cell("td", metric === e.primary_metric ? (v.decision || "") : ""),
        ]));
      }
    }
    div.appendChild(tbl); box.appendChild(div);
  }
}

function renderRecs(r) {
  const box = $("recs"); box.replaceChildren();
  if (!r.pairs || !r.pairs.length) { box.appendChild(cell("div", "no recommendations yet", {class: "empty", "data-testid": "no-recs"})); return; }
  const tbl = document.createElement("table");
  tbl.appendChild(row(["item", "similar item", "score"].map((x) => cell("th", x))));
  for (const p of r.pairs) tbl.appendChild(row([cell("td", p.item), cell("td", p.similar), cell("td", dec(p.score, 4), {"data-testid": `rec-${p.item}-${p.similar}`})]));
  box.appendChild(tbl);
  if (!r.complete) box.appendChild(cell("div", `best among the first ${num(r.scanned)} items`, {class: "dim"}));
}

function loadRecs() { fetch("api/recs/pairs").then((res) => res.json()).then(renderRecs).catch(() => {}); }

function renderPrices(r) {
  const box = $("prices"); box.replaceChildren();
  if (!r.prices || !r.prices.length) { box.appendChild(cell("div", "no prices yet", {class: "empty", "data-testid": "no-prices"})); return; }
  const tbl = document.createElement("table");
  tbl.appendChild(row(["item", "price", "since", "policy", "reasons"].map((x) => cell("th", x))));
  for (const p of r.prices) tbl.appendChild(row([cell("td", p.item), cell("td", dec(p.price_cents / 100, 2), {"data-testid": `price-${p.item}`}),
    cell("td", new Date(p.since_ms).toISOString()), cell("td", p.policy + (p.variant ? ` (${p.variant})` : "")), cell("td", p.reasons.join(", "))]));
  box.appendChild(tbl);
}

function loadPrices() { fetch("api/prices").then((res) => res.json()).then(renderPrices).catch(() => {}); }

function render(s) {
  if (!s) return;
  renderHealth(s); renderFunnel(s); renderTags(s); renderExperiments(s);
}

function connect() {
  const es = new EventSource("events");
  es.addEventListener("summary", (ev) => {
    latest = JSON.parse(ev.data);
    render(latest);
    $("dot").className = "ok"; $("banner").style.display = "none";
    $("status-text").textContent = "live · " + new Date(latest.now_ms).toISOString().slice(11, 19) + " UTC";
  });
  es.addEventListener("failure", (ev) => {
    $("dot").className = "bad"; $("banner").style.display = "block";
    $("banner").textContent = JSON.parse(ev.data).error;
  });
  es.onerror = () => { $("dot").className = "bad"; $("status-text").textContent = "reconnecting…"; };
}
connect();
loadRecs(); setInterval(loadRecs, 15000);
loadPrices(); setInterval(loadPrices, 15000);
</script>
</body>
</html>
"""
