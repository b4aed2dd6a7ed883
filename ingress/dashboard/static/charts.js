"use strict";
// Small line charts on <canvas>, drawn by hand (no library): a value axis with four
// grid lines, a time axis ending at the newest point, gaps where a value is null.
const Charts = (() => {
  const GRID = "#e3e6ea";
  const TEXT = "#667085";

  // 1, 2 or 5 times a power of ten: the smallest at or above v.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * power >= v) return m * power;
    return 10 * power;
  }

  function label(v) {
    if (v >= 1000) return (v / 1000).toFixed(v % 1000 ? 1 : 0) + "k";
    return v >= 10 || v === 0 ? String(Math.round(v)) : v.toPrecision(2);
  }

  // A context in CSS pixels, sharp on high-density screens.
  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  function path(ctx, times, values, x, y) {
    ctx.beginPath();
    let pen = false;
    values.forEach((v, i) => {
      if (v == null) { pen = false; return; }
      if (pen) ctx.lineTo(x(times[i]), y(v));
      else ctx.moveTo(x(times[i]), y(v));
      pen = true;
    });
    ctx.stroke();
  }

  // series: [{values: [number|null], color}], one value per entry of times (epoch ms);
  // span: how many ms the time axis covers.
  function line(canvas, times, series, span) {
    const { ctx, w, h } = prepare(canvas);
    const pad = { left: 40, right: 8, top: 6, bottom: 18 };
    let top = 0;
    for (const s of series) for (const v of s.values) if (v != null && v > top) top = v;
    top = niceMax(top);
    const end = times.length ? times[times.length - 1] : Date.now();
    const x = (t) => pad.left + (1 - (end - t) / span) * (w - pad.left - pad.right);
    const y = (v) => h - pad.bottom - (v / top) * (h - pad.top - pad.bottom);

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = TEXT;
    ctx.strokeStyle = GRID;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      const py = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, py);
      ctx.lineTo(w - pad.right, py);
      ctx.stroke();
      ctx.fillText(label(v), pad.left - 5, py);
    }
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "left";
    ctx.fillText(`-${Math.round(span / 1000)} s`, pad.left, h - 4);
    ctx.textAlign = "right";
    ctx.fillText("now", w - pad.right, h - 4);

    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    for (const s of series) {
      ctx.strokeStyle = s.color;
      path(ctx, times, s.values, x, y);
    }
  }

  // A sparkline: one series, no axes, scaled to its own maximum.
  function spark(canvas, values, color) {
    const { ctx, w, h } = prepare(canvas);
    const top = niceMax(Math.max(0, ...values.filter((v) => v != null)));
    const step = values.length > 1 ? w / (values.length - 1) : w;
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.2;
    path(ctx, values.map((_, i) => i), values, (i) => i * step, (v) => h - 1 - (v / top) * (h - 2));
  }

  return { line, spark };
})();
