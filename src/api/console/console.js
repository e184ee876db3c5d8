// agentdrift console: overview, control charts, events, session replays.
// No framework, no CDN: the binary embeds this file. Charts are SVG drawn here.
"use strict";

const view = document.getElementById("view");
const live = document.getElementById("live");
const SVG = "http://www.w3.org/2000/svg";

// ---------- HTTP, with the read token when the service asks for one ----------

let token = sessionStorage.getItem("agentdrift-token") || "";

function askToken() {
  return new Promise((resolve) => {
    const dlg = document.getElementById("login");
    const form = document.getElementById("login-form");
    form.onsubmit = () => {
      token = document.getElementById("token").value.trim();
      sessionStorage.setItem("agentdrift-token", token);
      resolve();
    };
    dlg.showModal();
  });
}

async function api(path) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch(path, { headers });
    if (r.status === 401 || r.status === 403) {
      await askToken();
      continue;
    }
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const msg = body && body.error ? body.error.message : r.statusText;
      throw new Error(`${path}: ${r.status} ${msg}`);
    }
    return body;
  }
  throw new Error(`${path}: not authorised`);
}

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function num(x, digits = 3) {
  if (x === null || x === undefined) return "—";
  if (typeof x !== "number") return String(x);
  if (!isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
  return String(+x.toFixed(digits));
}
const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%");
const usd = (x) => (x === null || x === undefined ? "—" : "$" + num(x, 4));
const segName = (k) => (typeof k === "string" ? k : `${k.agent}/${k.task_type}`);
const enc = encodeURIComponent;
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "—");

// The documented severity rule (README "Alerts"), so the console and the alerts agree.
function severity(e) {
  if (e.kind === "grounding") return "warning";
  const ratio = e.limit !== 0 && isFinite(e.statistic) ? Math.abs(e.statistic / e.limit) : Infinity;
  let sev;
  if (typeof e.p_value === "number") sev = e.p_value <= 1e-6 ? "critical" : e.p_value <= 1e-3 ? "warning" : "info";
  else sev = ratio >= 2 ? "critical" : ratio >= 1.25 ? "warning" : "info";
  if (e.kind === "loop" && ratio >= 2) sev = "critical";
  const harm = ["bernoulli:failure", "bernoulli:escalation", "bernoulli:tool_failure"];
  if (harm.includes(e.detector) && e.direction === "up") sev = sev === "info" ? "warning" : "critical";
  return sev;
}

function sevTag(e) {
  const sv = severity(e);
  return h("span", { class: "sev-" + sv }, sv);
}

function eventLink(e) {
  return h("a", { href: `#/event/${enc(e.id)}` }, e.message || e.id);
}

function sessionLink(id) {
  return h("a", { href: `#/session/${enc(id)}` }, id);
}

function chartLink(segment, chart, label) {
  return h("a", { href: `#/chart/${enc(segment)}/${enc(chart)}` }, label || chart);
}

function show(title, ...content) {
  view.replaceChildren(h("h1", {}, title), ...content);
  document.title = `${title} · agentdrift`;
  view.focus({ preventScroll: true });
}

function fail(err) {
  console.warn(err);
  view.replaceChildren(h("h1", {}, "Cannot load this view"), h("p", { class: "error", role: "alert" }, String(err.message || err)));
}

// ---------- live events (Server-Sent Events read with fetch, so a token can be sent) ----------

const listeners = new Set();

async function stream() {
  for (;;) {
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const r = await fetch("/v1/events/stream", { headers });
      if (r.status === 401 || r.status === 403) {
        live.textContent = "live updates need a token";
        await new Promise((res) => setTimeout(res, 5000));
        continue;
      }
      if (!r.ok || !r.body) throw new Error("stream " + r.status);
      live.textContent = "live";
      live.classList.add("on");
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          const kind = (frame.split("\n").find((l) => l.startsWith("event:")) || "").slice(6).trim();
          if (kind === "drift" && data) {
            const ev = JSON.parse(data);
            for (const f of listeners) f(ev);
          }
        }
      }
    } catch (e) {
      // Reconnect below.
    }
    live.textContent = "reconnecting…";
    live.classList.remove("on");
    await new Promise((res) => setTimeout(res, 2000));
  }
}

// ---------- overview ----------

async function overview() {
  const [segs, newest] = await Promise.all([api("/v1/segments"), api("/v1/events?order=newest&limit=1000")]);
  const events = newest.events;
  const latestTs = events.reduce((m, e) => Math.max(m, e.ts), 0);
  const now = Math.max(Date.now(), latestTs);
  const counts = {};
  for (const e of events) {
    const k = segName(e.segment);
    const c = (counts[k] = counts[k] || { hour: 0, day: 0 });
    if (now - e.ts <= 3600e3) c.hour++;
    if (now - e.ts <= 86400e3) c.day++;
  }
  const details = await Promise.all(
    segs.segments.map((sg) => api(`/v1/segments/${segName(sg.segment)}`).catch(() => null)),
  );
  const rows = segs.segments.map((sg, i) => {
    const name = segName(sg.segment);
    const charts = (details[i] && details[i].charts) || [];
    const close = charts
      .filter((c) => typeof c.statistic === "number" && typeof c.limit === "number" && c.limit !== 0)
      .map((c) => ({ id: c.id, r: Math.abs(c.statistic / c.limit) }))
      .sort((a, b) => b.r - a.r)
      .slice(0, 3);
    const c = counts[name] || { hour: 0, day: 0 };
    return h(
      "tr",
      { "data-segment": name },
      h("td", {}, h("a", { href: `#/segment/${enc(name)}` }, name)),
      h("td", { class: "num" }, c.hour),
      h("td", { class: "num" }, c.day),
      h("td", { class: "num" }, sg.live.sessions),
      h("td", { class: "num" }, pct(sg.live.success_rate), h("span", { class: "muted" }, ` (baseline ${pct(sg.baseline.success_rate)})`)),
      h("td", { class: "num" }, usd(sg.live.cost_per_success_usd)),
      h(
        "td",
        {},
        close.length
          ? close.map((x) =>
              h(
                "div",
                {},
                h("span", { class: "bar" + (x.r >= 1 ? " hot" : ""), style: `width:${Math.min(100, x.r * 60)}px` }),
                " ",
                chartLink(name, x.id),
                h("span", { class: "muted" }, ` ${(100 * x.r).toFixed(0)}% of limit`),
              ),
            )
          : h("span", { class: "muted" }, "no readings yet"),
      ),
    );
  });
  const table = h(
    "table",
    { id: "segments" },
    h("caption", { class: "muted" }, `${segs.segments.length} segments · ${segs.open_sessions ?? 0} sessions open · ${segs.unscored_sessions ?? 0} unscored`),
    h(
      "thead",
      {},
      h("tr", {}, ["segment", "events 1 h", "events 24 h", "sessions scored", "success", "cost / success", "charts closest to their limit"].map((t, i) => h("th", { class: i >= 1 && i <= 5 ? "num" : null, scope: "col" }, t))),
    ),
    h("tbody", {}, rows),
  );
  const recent = h("ol", { id: "recent-events" }, events.slice(0, 15).map((e) => eventItem(e)));
  show("Overview", table, h("h2", {}, "Latest drift events"), recent);
  const onEvent = (e) => {
    if (!document.body.contains(recent)) return listeners.delete(onEvent);
    recent.prepend(eventItem(e));
    while (recent.children.length > 15) recent.lastChild.remove();
    const row = table.querySelector(`tr[data-segment="${CSS.escape(segName(e.segment))}"]`);
    if (row) {
      row.children[1].textContent = String(+row.children[1].textContent + 1);
      row.children[2].textContent = String(+row.children[2].textContent + 1);
    }
  };
  listeners.add(onEvent);
}

function eventItem(e) {
  return h("li", {}, sevTag(e), " ", h("code", {}, segName(e.segment)), " ", h("code", {}, e.detector), " — ", eventLink(e), h("span", { class: "muted" }, " · " + when(e.ts)));
}

// ---------- one segment: its charts ----------

async function segmentView(name) {
  const seg = await api(`/v1/segments/${name}`);
  const rows = seg.charts.map((c) =>
    h(
      "tr",
      {},
      h("td", {}, chartLink(name, c.id)),
      h("td", { class: "num" }, num(c.statistic)),
      h("td", { class: "num" }, num(c.limit)),
      h("td", { class: "num" }, c.alarms),
      h("td", { class: "num" }, num(c.arl0, 0)),
      h("td", {}, c.unit || ""),
    ),
  );
  show(
    `Segment ${name}`,
    h(
      "div",
      { class: "grid" },
      h("div", { class: "card" }, "sessions scored", h("b", {}, seg.live.sessions)),
      h("div", { class: "card" }, "success", h("b", {}, pct(seg.live.success_rate)), h("span", { class: "muted" }, "baseline " + pct(seg.baseline.success_rate))),
      h("div", { class: "card" }, "cost per success", h("b", {}, usd(seg.live.cost_per_success_usd)), h("span", { class: "muted" }, "baseline " + usd(seg.baseline.cost_per_success_usd))),
      h("div", { class: "card" }, "alarms", h("b", {}, seg.alarms)),
    ),
    h("h2", {}, "Charts"),
    h("table", {}, h("thead", {}, h("tr", {}, ["chart", "statistic", "limit", "alarms", "in-control ARL", "unit"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
    h("h2", {}, "Recent events"),
    h("ol", {}, seg.recent_events.slice().reverse().map(eventItem)),
  );
}

// ---------- control chart ----------

async function chartView(segment, chart) {
  const [series, seg] = await Promise.all([
    api(`/v1/charts?segment=${enc(segment)}&chart=${enc(chart)}`),
    api(`/v1/segments/${segment}`),
  ]);
  const pick = h(
    "select",
    { id: "chart-pick", "aria-label": "Chart of this segment", onchange: (ev) => (location.hash = `#/chart/${enc(segment)}/${enc(ev.target.value)}`) },
    seg.charts.map((c) => h("option", { value: c.id, selected: c.id === chart }, c.id)),
  );
  const pts = series.points;
  const box = h("div", { class: "chart-wrap" });
  let lo = 0;
  let hi = Math.max(pts.length, 1);
  const draw = () => box.replaceChildren(drawChart(series, lo, hi, box.clientWidth || 1000));
  const zoom = (f) => {
    const mid = (lo + hi) / 2;
    const half = Math.max(5, ((hi - lo) * f) / 2);
    lo = Math.max(0, Math.floor(mid - half));
    hi = Math.min(pts.length, Math.ceil(mid + half));
    if (hi - lo < 2) hi = Math.min(pts.length, lo + 2);
    draw();
  };
  const pan = (d) => {
    const w = hi - lo;
    lo = Math.max(0, Math.min(pts.length - w, lo + Math.round(d * w)));
    hi = lo + w;
    draw();
  };
  const controls = h(
    "div",
    { class: "controls" },
    h("label", { for: "chart-pick" }, "Chart"),
    pick,
    h("button", { type: "button", onclick: () => zoom(0.5), "aria-label": "Zoom in" }, "+"),
    h("button", { type: "button", onclick: () => zoom(2), "aria-label": "Zoom out" }, "−"),
    h("button", { type: "button", onclick: () => pan(-0.25), "aria-label": "Earlier" }, "←"),
    h("button", { type: "button", onclick: () => pan(0.25), "aria-label": "Later" }, "→"),
    h("button", { type: "button", onclick: () => ((lo = 0), (hi = Math.max(pts.length, 1)), draw()) }, "All"),
    h("span", { class: "muted" }, `${pts.length} readings (newest 500 kept) · ${series.family} · in-control ARL ${num(series.arl0, 0)} ${series.unit}`),
  );
  box.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    zoom(ev.deltaY < 0 ? 0.8 : 1.25);
  }, { passive: false });
  let dragX = null;
  box.addEventListener("pointerdown", (ev) => (dragX = ev.clientX));
  box.addEventListener("pointerup", (ev) => {
    if (dragX !== null && Math.abs(ev.clientX - dragX) > 10) pan(-(ev.clientX - dragX) / box.clientWidth);
    dragX = null;
  });
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "+") zoom(0.5);
    else if (ev.key === "-") zoom(2);
    else if (ev.key === "ArrowLeft") pan(-0.25);
    else if (ev.key === "ArrowRight") pan(0.25);
  });
  const alarms = pts.filter((p) => p.events && p.events.length);
  show(
    `${chart} · ${segment}`,
    h("p", {}, h("a", { href: `#/segment/${enc(segment)}` }, "← segment " + segment)),
    controls,
    box,
    h("h2", {}, `Alarm points (${alarms.length})`),
    alarms.length
      ? h("ul", {}, alarms.slice(-50).reverse().map((p) => h("li", {}, when(p.ts), " · session ", sessionLink(p.session_id), " · ", p.events.map((id) => h("a", { href: `#/event/${enc(id)}` }, id)))))
      : h("p", { class: "muted" }, "No alarm in these readings."),
  );
  draw();
  const onEvent = (e) => {
    if (!document.body.contains(box)) return listeners.delete(onEvent);
    if (segName(e.segment) === segment && e.detector === chart) route();
  };
  listeners.add(onEvent);
}

function drawChart(series, lo, hi, width) {
  const W = Math.max(400, Math.round(width) - 10);
  const H = 360;
  const m = { l: 56, r: 16, t: 12, b: 28 };
  const pts = series.points.slice(lo, hi);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${series.chart}: statistic against its limit`, tabindex: "0" });
  if (!pts.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no readings yet: the chart moves as sessions close"));
    return svg;
  }
  const limits = pts.map((p) => p.limit).filter(isFinite);
  const stats = pts.map((p) => p.statistic).filter(isFinite);
  let ymax = Math.max(...stats, ...limits, series.centre ?? -Infinity);
  let ymin = Math.min(...stats, series.two_sided ? -Math.max(...limits) : Infinity, series.centre ?? Infinity);
  if (!isFinite(ymin)) ymin = 0;
  if (ymax === ymin) ymax = ymin + 1;
  const pad = (ymax - ymin) * 0.08;
  ymax += pad;
  ymin -= pad;
  const x = (i) => m.l + ((W - m.l - m.r) * i) / Math.max(1, pts.length - 1);
  const y = (v) => m.t + ((H - m.t - m.b) * (ymax - v)) / (ymax - ymin);
  svg.append(s("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }), s("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  for (let k = 0; k <= 4; k++) {
    const v = ymin + ((ymax - ymin) * k) / 4;
    svg.append(s("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, num(v, 2)));
  }
  svg.append(s("text", { x: m.l, y: H - 8 }, when(pts[0].ts)), s("text", { x: W - m.r, y: H - 8, "text-anchor": "end" }, when(pts[pts.length - 1].ts)));
  if (series.centre !== null && series.centre !== undefined) {
    svg.append(s("line", { class: "centre", x1: m.l, x2: W - m.r, y1: y(series.centre), y2: y(series.centre) }, s("title", {}, "centre line")));
  }
  const path = (f) => pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(f(p)).toFixed(1)}`).join("");
  svg.append(s("path", { class: "limit", d: path((p) => p.limit) }, s("title", {}, "limit")));
  if (series.two_sided) svg.append(s("path", { class: "limit lower", d: path((p) => -p.limit) }, s("title", {}, "lower limit")));
  svg.append(s("path", { class: "stat", d: path((p) => (isFinite(p.statistic) ? p.statistic : 0)) }));
  pts.forEach((p, i) => {
    if (!p.events || !p.events.length) return;
    const go = () => (location.hash = `#/event/${enc(p.events[0])}`);
    svg.append(
      s(
        "circle",
        {
          class: "alarm",
          cx: x(i),
          cy: y(p.statistic),
          r: 6,
          tabindex: "0",
          role: "link",
          "aria-label": `alarm: event ${p.events[0]}, session ${p.session_id}`,
          "data-event": p.events[0],
          onclick: go,
          onkeydown: (ev) => (ev.key === "Enter" || ev.key === " ") && go(),
        },
        s("title", {}, `${when(p.ts)} · ${num(p.statistic)} > ${num(p.limit)} · session ${p.session_id}`),
      ),
    );
  });
  return svg;
}

// ---------- one event ----------

async function eventView(id) {
  const e = await api(`/v1/events/${enc(id)}`);
  const seg = segName(e.segment);
  const facts = h(
    "dl",
    { class: "kv" },
    h("dt", {}, "severity"), h("dd", {}, sevTag(e)),
    h("dt", {}, "segment"), h("dd", {}, h("a", { href: `#/segment/${enc(seg)}` }, seg), e.fallback_from ? ` (session of ${segName(e.fallback_from)}, pooled)` : ""),
    h("dt", {}, "detector"), h("dd", {}, chartLink(seg, e.detector), ` (${e.kind})`),
    h("dt", {}, "statistic"), h("dd", { id: "event-statistic" }, num(e.statistic)),
    h("dt", {}, "limit"), h("dd", {}, num(e.limit)),
    h("dt", {}, "p-value"), h("dd", {}, num(e.p_value)),
    h("dt", {}, "direction"), h("dd", {}, e.direction || "—"),
    h("dt", {}, "session"), h("dd", {}, sessionLink(e.session_id), e.seq !== undefined ? ` at step ${e.seq}` : ""),
    h("dt", {}, "time"), h("dd", {}, when(e.ts)),
    h("dt", {}, "id"), h("dd", {}, h("code", {}, e.id)),
  );
  const moved = h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ["what moved", "baseline", "observed", "score"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, e.moved.map((m) => h("tr", {}, h("td", {}, m.what), h("td", { class: "num" }, num(m.baseline)), h("td", { class: "num" }, num(m.observed)), h("td", { class: "num" }, num(m.score))))),
  );
  const parts = [h("p", {}, e.message), facts];
  if (e.grounding) {
    const g = e.grounding;
    parts.push(
      h("h2", {}, "Claim and source"),
      h(
        "dl",
        { class: "kv", id: "grounding" },
        h("dt", {}, "the output said"), h("dd", {}, h("q", {}, g.claim), ` (${g.kind}, step ${g.claim_seq})`),
        h("dt", {}, "the source gave"), h("dd", {}, h("code", {}, g.source_value), ` (${g.source}, step ${g.source_seq})`),
        h("dt", {}, "source excerpt"), h("dd", {}, h("q", {}, g.excerpt)),
        h("dt", {}, "rule"), h("dd", {}, g.rule),
      ),
    );
  }
  parts.push(h("h2", {}, "What moved"), moved);
  if (e.moved.some((m) => m.what.includes(" → "))) parts.push(h("h2", {}, "Transition differences"), heatMap(e.moved));
  parts.push(
    h("h2", {}, "Sessions to replay"),
    h("ul", { id: "exemplars" }, [e.session_id, ...e.exemplars.filter((x) => x !== e.session_id)].map((x) => h("li", {}, sessionLink(x)))),
  );
  if (e.observations.length) {
    parts.push(
      h("h2", {}, "Observations behind the statistic"),
      h("table", {}, h("thead", {}, h("tr", {}, ["session", "step", "value", "z"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, e.observations.slice(-30).map((o) => h("tr", {}, h("td", {}, sessionLink(o.session_id)), h("td", { class: "num" }, o.seq ?? "—"), h("td", { class: "num" }, num(o.value)), h("td", { class: "num" }, num(o.z)))))),
    );
  }
  show(`Event: ${e.detector}`, ...parts);
}

// A from × to grid of the moved transitions, coloured by their Pearson residual.
function heatMap(moved) {
  const cells = moved.filter((m) => m.what.includes(" → ")).map((m) => {
    const [from, to] = m.what.split(" → ");
    return { from, to, m };
  });
  const froms = [...new Set(cells.map((c) => c.from))];
  const tos = [...new Set(cells.map((c) => c.to))];
  const max = Math.max(...cells.map((c) => Math.abs(c.m.score)), 1e-9);
  const colour = (v) => {
    const a = Math.min(1, Math.abs(v) / max);
    return v >= 0 ? `rgba(179,38,30,${0.15 + 0.75 * a})` : `rgba(11,92,173,${0.15 + 0.75 * a})`;
  };
  return h(
    "table",
    { class: "heat", id: "heatmap" },
    h("caption", { class: "muted" }, "observed − baseline transition probability (red: more than baseline, blue: less); cell text: residual"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "from \\ to"), tos.map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      froms.map((f) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, f),
          tos.map((t) => {
            const c = cells.find((x) => x.from === f && x.to === t);
            if (!c) return h("td", {}, "");
            const title = `${f} → ${t}: baseline ${num(c.m.baseline)}, observed ${num(c.m.observed)}`;
            return h("td", { style: `background:${colour(c.m.score)};color:${Math.abs(c.m.score) / max > 0.6 ? "#fff" : "#1b1f24"}`, title }, num(c.m.score, 1));
          }),
        ),
      ),
    ),
  );
}

// ---------- one session: the replay ----------

async function sessionView(id) {
  const [rep, rp] = await Promise.all([api(`/v1/sessions/${enc(id)}`), api(`/v1/sessions/${enc(id)}/replay`)]);
  const t0 = rp.steps.length ? rp.steps[0].ts : 0;
  const steps = h(
    "ol",
    { class: "steps", id: "steps" },
    rp.steps.map((st) => {
      const failed = st.status === "error";
      const head = [h("strong", {}, st.kind), " ", h("span", { class: "meta" }, `#${st.seq} · +${((st.ts - t0) / 1000).toFixed(1)} s · ${st.agent}`)];
      if (st.model) head.push(h("span", { class: "meta" }, ` · ${st.model}`));
      if (st.input_tokens || st.output_tokens) head.push(h("span", { class: "meta" }, ` · ${st.input_tokens ?? 0}→${st.output_tokens ?? 0} tokens`));
      if (st.cost_usd) head.push(h("span", { class: "meta" }, ` · ${usd(st.cost_usd)}`));
      const body = [];
      if (st.tool) body.push(h("div", {}, "tool ", h("code", {}, st.tool), failed ? h("span", { class: "sev-critical" }, ` failed${st.error_class ? " (" + st.error_class + ")" : ""}`) : ""));
      if (st.args !== undefined) body.push(h("pre", {}, "args " + JSON.stringify(st.args, null, 1)));
      if (st.result !== undefined) body.push(h("pre", {}, "result " + (typeof st.result === "string" ? st.result : JSON.stringify(st.result, null, 1))));
      else if (st.result_chars !== undefined) body.push(h("div", { class: "meta" }, `result: ${st.result_chars} chars`));
      if (st.error) body.push(h("pre", {}, st.error));
      if (st.text) body.push(h("pre", {}, st.text));
      if (st.to_agent) body.push(h("div", {}, `hands off to `, h("code", {}, st.to_agent)));
      if (st.kind === "end") body.push(h("div", {}, `outcome ${st.outcome ?? "—"}`, st.reward !== undefined ? `, reward ${st.reward}` : ""));
      return h("li", { class: `kind-${st.kind}${failed ? " failed" : ""}` }, h("div", {}, head), body);
    }),
  );
  const tree = h(
    "ul",
    { class: "tree", id: "span-tree" },
    rp.span_tree.map((n) => h("li", { style: `padding-left:${1.2 * (n.depth || 0)}rem` }, h("code", {}, n.kind), ` #${n.seq} `, n.agent, n.to_agent ? h("strong", {}, ` ⇒ ${n.to_agent}`) : "")),
  );
  const features = h(
    "table",
    { id: "features" },
    h("thead", {}, h("tr", {}, ["feature", "value", "baseline median", "baseline percentile"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rep.features.map((f) =>
        h(
          "tr",
          {},
          h("td", {}, f.feature),
          h("td", { class: "num" }, num(f.value)),
          h("td", { class: "num" }, num(f.baseline_median)),
          h(
            "td",
            {},
            f.baseline_percentile === null || f.baseline_percentile === undefined
              ? "—"
              : [h("span", { class: "bar" + (f.baseline_percentile > 0.95 || f.baseline_percentile < 0.05 ? " hot" : ""), style: `width:${Math.round(100 * f.baseline_percentile)}px` }), ` ${(100 * f.baseline_percentile).toFixed(0)}`],
          ),
        ),
      ),
    ),
  );
  const facts = h(
    "dl",
    { class: "kv" },
    h("dt", {}, "status"), h("dd", {}, rep.status, rep.close_reason ? ` (${rep.close_reason})` : ""),
    h("dt", {}, "segment"), h("dd", {}, rep.segment ? h("a", { href: `#/segment/${enc(segName(rep.segment))}` }, segName(rep.segment)) : "not scored"),
    h("dt", {}, "outcome"), h("dd", {}, rep.outcome ?? "—", rep.outcome_source ? ` (${rep.outcome_source})` : ""),
    h("dt", {}, "steps"), h("dd", {}, rp.steps.length),
    h("dt", {}, "agents"), h("dd", {}, [...rp.agents].join(", ") || "—"),
    h("dt", {}, "cost"), h("dd", {}, usd(rep.span_tree.cost_usd)),
  );
  show(
    `Session ${id}`,
    facts,
    h("h2", {}, `Drift events (${rep.events.length})`),
    rep.events.length ? h("ol", {}, rep.events.map(eventItem)) : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Features against the baseline"),
    features,
    h("h2", {}, "Steps"),
    steps,
    h("h2", {}, "Agents and spans"),
    h("details", { open: rp.span_tree.length <= 30 }, h("summary", {}, `${rp.span_tree.length} nodes, ${[...rp.agents].length} agent(s)`), tree),
  );
}

// ---------- all events ----------

async function eventsView() {
  const page = await api("/v1/events?order=newest&limit=200");
  show("Drift events", h("ol", { id: "all-events" }, page.events.map(eventItem)));
}

// ---------- routing ----------

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "chart" && parts.length >= 3) await chartView(parts[1], parts.slice(2).join("/"));
    else if (parts[0] === "event" && parts[1]) await eventView(parts[1]);
    else if (parts[0] === "session" && parts[1]) await sessionView(parts.slice(1).join("/"));
    else if (parts[0] === "segment" && parts[1]) await segmentView(parts.slice(1).join("/"));
    else if (parts[0] === "events") await eventsView();
    else await overview();
  } catch (e) {
    fail(e);
  }
}

window.addEventListener("hashchange", route);
route();
stream();
