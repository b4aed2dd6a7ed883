"use strict";
// The live dashboard. One EventSource on /dashboard/events: a `history` event first
// (the points the server kept), then a `sample` event per interval. Every number is
// the server's; this script only keeps the recent points and draws them.
(() => {
  const COLORS = { blue: "#2563eb", amber: "#d97706", red: "#d92d20" };
  const $ = (id) => document.getElementById(id);
  let points = [];
  let capacity = 300;
  let intervalMs = 1000;
  let state = {};

  const num = (v, digits = 1) => (v == null ? "–" : Number(v).toFixed(digits));
  const ms = (v) => (v == null ? "–" : v < 10 ? v.toFixed(2) : v.toFixed(1));
  const errorRate = (p) => (p && p.rps > 0 ? ((p.e4 + p.e5) / p.rps) * 100 : null);

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function fill(tbody, rows, build) {
    tbody.replaceChildren();
    for (const item of rows) build(tbody.insertRow(), item);
  }

  function tiles(point) {
    const total = point.total || {};
    const bus = point.bus || {};
    $("rps").textContent = num(total.rps);
    $("e4").textContent = num(total.e4);
    $("e5").textContent = num(total.e5);
    const rate = errorRate(total);
    $("errors").textContent = rate == null ? "–" : rate.toFixed(1) + " %";
    $("p50").textContent = ms(total.p50);
    $("p95").textContent = ms(total.p95);
    $("p99").textContent = ms(total.p99);
    $("in_flight").textContent = num(bus.in_flight, 0);
    $("pending").textContent = num(bus.pending, 0);
    $("late").textContent = num(bus.late);
    $("bus_p99").textContent = ms(bus.p99);
  }

  function charts() {
    const times = points.map((p) => p.t);
    const series = (key, color, from = (p) => p.total) =>
      ({ color, values: points.map((p) => (from(p) || {})[key] ?? null) });
    // The time axis grows with the history: from a minute up to all that is kept.
    const span = Math.min(capacity, Math.max(60000 / intervalMs, points.length)) * intervalMs;
    Charts.line($("chart-rps"), times,
      [series("rps", COLORS.blue), series("e4", COLORS.amber), series("e5", COLORS.red)], span);
    Charts.line($("chart-latency"), times,
      [series("p50", COLORS.blue), series("p95", COLORS.amber), series("p99", COLORS.red)], span);
  }

  function routes() {
    const last = points[points.length - 1] || { routes: {} };
    const recent = points.slice(-Math.round(60000 / intervalMs));
    fill($("routes").tBodies[0], state.routes || [], (row, name) => {
      const p = last.routes[name] || { rps: 0, e4: 0, e5: 0 };
      const rate = errorRate(p);
      cell(row, name, "name");
      cell(row, num(p.rps));
      cell(row, num(p.e4));
      cell(row, num(p.e5), p.e5 > 0 ? "bad" : "");
      cell(row, rate == null ? "–" : rate.toFixed(1) + " %");
      cell(row, ms(p.p50));
      cell(row, ms(p.p95));
      cell(row, ms(p.p99));
      const canvas = document.createElement("canvas");
      canvas.className = "spark";
      cell(row, "").append(canvas);
      Charts.spark(canvas, recent.map((q) => (q.routes[name] || { rps: 0 }).rps), COLORS.blue);
    });
  }

  function nodes() {
    fill($("nodes").tBodies[0], state.nodes || [], (row, n) => {
      cell(row, n.node === state.node ? `${n.node} (this one)` : n.node, "name");
      cell(row, `${Math.max(0, (Date.now() - n.time) / 1000).toFixed(1)} s ago`);
      cell(row, num(n.rps));
      cell(row, num(n.e4));
      cell(row, num(n.e5), n.e5 > 0 ? "bad" : "");
      cell(row, ms(n.p99));
      cell(row, num(n.pending, 0));
      cell(row, num(n.in_flight, 0));
    });
  }

  function events() {
    const rows = Object.entries(state.events || {}).filter(([, e]) => e.total > 0);
    rows.push(["late_replies", { total: state.late_total || 0, per_s: null }]);
    fill($("events").tBodies[0], rows, (row, [name, e]) => {
      cell(row, name, "name");
      cell(row, String(e.total));
      cell(row, num(e.per_s));
    });
  }

  function badge(text, kind) {
    const span = document.createElement("span");
    span.className = "badge " + kind;
    span.textContent = text;
    return span;
  }

  function workers() {
    const list = state.workers || [];
    $("workers-empty").hidden = list.length > 0;
    const box = $("workers");
    box.replaceChildren();
    for (const worker of list) {
      const title = document.createElement("h3");
      const age = Math.max(0, (Date.now() - worker.time) / 1000);
      title.textContent = `${worker.node} · seen ${age.toFixed(1)} s ago`;
      const table = document.createElement("table");
      table.createTHead().innerHTML =
        "<tr><th>upstream</th><th>breaker</th><th>opened</th><th>failure rate</th><th>instances</th></tr>";
      const body = table.createTBody();
      for (const [name, up] of Object.entries(worker.upstreams || {})) {
        const row = body.insertRow();
        cell(row, name, "name");
        const breaker = up.breaker.state;
        cell(row, "").append(badge(breaker.replace("_", " "), breaker));
        cell(row, String(up.breaker.opened));
        cell(row, (up.breaker.failure_rate * 100).toFixed(0) + " %");
        const where = cell(row, "");
        for (const instance of up.instances) {
          const line = document.createElement("div");
          line.textContent = `${instance.url} · ${instance.outstanding} in flight `;
          line.append(badge(instance.available ? "up" : "down", instance.available ? "up" : "down"));
          where.append(line);
        }
      }
      box.append(title, table);
    }
  }

  function webhooks() {
    const list = state.webhooks || [];
    $("webhooks-section").hidden = list.length === 0;
    fill($("webhooks").tBodies[0], list, (row, w) => {
      cell(row, w.name, "name");
      cell(row, Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(" "));
      cell(row, String(w.total));
      cell(row, num(w.per_s));
    });
  }

  function render() {
    $("node").textContent = state.node || "";
    if (points.length) tiles(points[points.length - 1]);
    charts();
    routes();
    nodes();
    events();
    workers();
    webhooks();
  }

  function status(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + kind;
  }

  const source = new EventSource("/dashboard/events");
  source.addEventListener("history", (e) => {
    const data = JSON.parse(e.data);
    points = data.points;
    capacity = data.capacity;
    intervalMs = data.interval_s * 1000;
    state = data.state;
    render();
  });
  source.addEventListener("sample", (e) => {
    const data = JSON.parse(e.data);
    points.push(data.point);
    if (points.length > capacity) points.splice(0, points.length - capacity);
    state = data.state;
    render();
  });
  source.addEventListener("open", () => status("live", "live"));
  source.addEventListener("error", () => {
    // CLOSED: the server refused the stream (the session ended); otherwise it retries.
    if (source.readyState === EventSource.CLOSED) location.assign("/dashboard/login");
    else status("reconnecting…", "down");
  });
  window.addEventListener("resize", charts);
})();
