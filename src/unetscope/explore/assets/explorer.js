/* unetscope explorer: the run folders' figures made interactive, the images behind every point.
   Plain JS and SVG, no library. Every text from a database or a settings file enters the page as a
   text node or an attribute value (never as HTML), so a run named "<script>" shows as that text. */
(function () {
  "use strict";
  var STATIC = window.UNETSCOPE_EXPLORER || null; // the --html export's data (null: served)
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var SVGNS = "http://www.w3.org/2000/svg";
  var INDEX = null;
  var main = document.getElementById("main");
  var tip = document.getElementById("tip");

  // --- DOM helpers (text only: no innerHTML anywhere) ---------------------------------------------
  function el(tag, attrs) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function sv(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "on") Object.keys(v).forEach(function (ev) { e.addEventListener(ev, v[ev]); });
      else if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, String(v));
    });
  }
  function add(e, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(e, x); }); return; }
    e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function fmt(v, d) { return v === null || v === undefined || !isFinite(v) ? "–" : Number(v).toFixed(d === undefined ? 3 : d); }
  function pct(v) { return v === null || v === undefined || !isFinite(v) ? "–" : (100 * v).toFixed(1) + "%"; }
  function condText(c) { return c === null || c === undefined ? "–" : typeof c === "number" ? "class " + c : String(c); }
  function json(v) { return JSON.stringify(v); }
  function showTip(ev, text) {
    tip.textContent = text; tip.hidden = false;
    var x = ev.clientX + 14, y = ev.clientY + 12;
    if (x + 340 > window.innerWidth) x = ev.clientX - 350;
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }

  // --- data: the server's endpoints, or the export's embedded data ---------------------------------
  function qs(o) {
    return Object.keys(o).filter(function (k) { return o[k] !== null && o[k] !== undefined && o[k] !== ""; })
      .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(o[k]); }).join("&");
  }
  function getJSON(url) {
    return fetch(url).then(function (r) {
      return r.json().then(function (d) { if (!r.ok) throw new Error(d.error || ("HTTP " + r.status)); return d; });
    });
  }
  var server = {
    index: function () { return getJSON("/api/index"); },
    stats: function (f, run, flt) { return getJSON("/api/stats?" + qs({ f: f, run: run, cond: flt.cond, seeds: flt.seeds })); },
    variant: function (f, run, vid, flt, by) { return getJSON("/api/variant?" + qs({ f: f, run: run, vid: vid, cond: flt.cond, seeds: flt.seeds, by: by })); },
    seed: function (f, run, seed) { return getJSON("/api/seed?" + qs({ f: f, run: run, seed: seed })); },
    image: function (f, run, seed, vid) { return "/api/image?" + qs({ f: f, run: run, seed: seed, vid: vid }); },
    file: function (f, path) { return "/files/" + f + "/" + path.split("/").map(encodeURIComponent).join("/"); }
  };
  function parseSeeds(text) {
    if (!text) return null;
    var out = [];
    String(text).split(",").forEach(function (p) {
      p = p.trim(); if (!p) return;
      var m = /^(\d+)-(\d+)$/.exec(p);
      if (m) { for (var s = +m[1]; s <= +m[2] && out.length < 100000; s++) out.push(s); }
      else if (/^\d+$/.test(p)) out.push(+p);
      else throw new Error("seeds must look like 0-9,15; got " + text);
    });
    return out;
  }
  var local = STATIC && {
    index: function () { return Promise.resolve(STATIC.index); },
    _rows: function (f, run) { return (STATIC.rows || {})[f + "/" + run]; },
    _keep: function (R, flt) { // the sample indices the filter keeps
      var seeds = parseSeeds(flt.seeds), set = seeds && {};
      if (seeds) seeds.forEach(function (s) { set[s] = 1; });
      return R.seeds.map(function (s, i) { return i; }).filter(function (i) {
        return (!set || set[R.seeds[i]]) && (!flt.cond || json(R.conds[i]) === flt.cond);
      });
    },
    stats: function (f, run, flt) {
      var R = this._rows(f, run), out = {};
      if (!R) return Promise.resolve(out);
      var keep = {}; this._keep(R, flt).forEach(function (i) { keep[i] = 1; });
      Object.keys(R.variants).forEach(function (vid) {
        var v = R.variants[vid], s = [], p = [], x = {};
        v[1].forEach(function (i, j) { if (keep[i]) { if (v[2][j] !== null) s.push(v[2][j]); if (v[3][j] !== null) p.push(Math.min(v[3][j], 100)); } });
        out[vid] = [s.length, mean(s), sd(s), mean(p), sd(p)];
        if (v[4]) {
          Object.keys(v[4]).forEach(function (k) { var a = v[1].map(function (i, j) { return keep[i] ? v[4][k][j] : null; }).filter(function (y) { return y !== null; }); x[k] = [a.length, mean(a), sd(a)]; });
          out[vid].push(x);
        }
      });
      return Promise.resolve(out);
    },
    variant: function (f, run, vid, flt, by) {
      var R = this._rows(f, run), v = R && R.variants[vid];
      if (!v) return Promise.reject(new Error("this export holds no rows of that variant"));
      var keep = {}; this._keep(R, flt).forEach(function (i) { keep[i] = 1; });
      var rows = [], images = {}, imgs = (STATIC.images || {})[f + "/" + run] || {};
      v[1].forEach(function (i, j) {
        if (!keep[i]) return;
        var seed = R.seeds[i];
        var extra = {}; Object.keys(v[4] || {}).forEach(function (k) { extra[k] = v[4][k][j]; });
        rows.push({ seed: seed, cond: R.conds[i], ssim: v[2][j], psnr: v[3][j], extra: extra });
        var b = imgs[seed + "/" + BASE], w = imgs[seed + "/" + vid];
        if (b || w) images[seed] = { baseline: !!b, variant: !!w };
      });
      var larger = by ? LARGER[by] : undefined;
      if (larger === undefined) rows.sort(function (a, b) { return (a.ssim === null) - (b.ssim === null) || a.ssim - b.ssim || a.seed - b.seed; });
      else rows.sort(function (a, b) { var x = a.extra[by], y = b.extra[by]; return (x === null || x === undefined) - (y === null || y === undefined) || (larger ? y - x : x - y) || a.seed - b.seed; });
      return Promise.resolve({ run: run, variant_id: vid, variant: v[0], rows: rows, images: images, by: larger === undefined ? "ssim" : by });
    },
    seed: function (f, run, seed) {
      var R = this._rows(f, run), rows = [], imgs = (STATIC.images || {})[f + "/" + run] || {};
      var i = R ? R.seeds.indexOf(seed) : -1;
      if (R && i >= 0) Object.keys(R.variants).forEach(function (vid) {
        var v = R.variants[vid], j = v[1].indexOf(i);
        if (j >= 0) rows.push({ variant_id: vid, variant: v[0], ssim: v[2][j], psnr: v[3][j] });
      });
      var images = Object.keys(imgs).filter(function (k) { return k.split("/")[0] === String(seed); }).map(function (k) { return k.split("/")[1]; });
      return Promise.resolve({ run: run, seed: seed, rows: rows, images: images });
    },
    image: function (f, run, seed, vid) { return ((STATIC.images || {})[f + "/" + run] || {})[seed + "/" + vid] || null; },
    file: function (f, path) { return (STATIC.files || {})[f + "/" + path] || null; }
  };
  var api = local || server;
  // an experiment's own statistics (feature-change): their names, and whether larger is a larger change
  var LARGER = { rel_l1: true, cos: false }, STAT_NAME = { rel_l1: "relative L1 change", cos: "cosine similarity" };
  function statOf(st, stat, psnr) { // [n, mean, sd] of a variant's stats for what a figure draws
    if (!st) return null;
    if (stat) return st[5] && st[5][stat] ? st[5][stat] : null;
    return psnr ? [st[0], st[3], st[4]] : [st[0], st[1], st[2]];
  }
  var BASE = STATIC ? STATIC.baseline : null;
  function mean(a) { if (!a.length) return null; var s = 0; a.forEach(function (x) { s += x; }); return s / a.length; }
  function sd(a) { if (!a.length) return null; var m = mean(a), s = 0; a.forEach(function (x) { s += (x - m) * (x - m); }); return Math.sqrt(s / a.length); }

  // --- images: a kept image, or a note in its place --------------------------------------------------
  function image(f, run, seed, vid, label, big) {
    var src = api.image(f, run, seed, vid);
    if (!src) return el("span", { "class": "missing", text: STATIC ? "not in this export" : "no image kept" });
    var img = el("img", { "class": "px" + (big ? " big" : ""), src: src, alt: label + ", seed " + seed, title: label + ", seed " + seed });
    img.addEventListener("error", function () {
      var note = el("span", { "class": "missing", text: "image missing or damaged" });
      if (!STATIC) getJSON(src).catch(function (e) { note.textContent = e.message.slice(0, 140); });
      if (img.parentNode) img.parentNode.replaceChild(note, img);
    });
    return img;
  }

  // --- charts ----------------------------------------------------------------------------------------
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { return [lo]; }
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var err = (hi - lo) / n / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(+v.toFixed(10));
    return out;
  }
  function invertX(fig) { return /^t(_start)?$/.test(String(fig.xlabel || "").trim()); }
  var W = 640, H = 320, M = { l: 52, r: 14, t: 28, b: 40 };

  /* series: [{label, x, mean, std, k, vids, color, dash, ref}] where ref = {f, run} clicks go to. */
  function lineChart(fig, series, onPoint, opts) {
    opts = opts || {};
    var xs = [], ys = [];
    series.forEach(function (s) {
      s.x.forEach(function (x, i) {
        xs.push(x);
        var m = s.mean[i], d = s.std ? s.std[i] : null, k = s.k || 0;
        if (m !== null && isFinite(m)) { ys.push(m); if (d !== null && k) { ys.push(m - k * d); ys.push(m + k * d); } }
      });
    });
    (fig.hlines || []).forEach(function (h) { ys.push(h.y); });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (/SSIM/.test(fig.ylabel || "")) y1 = Math.min(y1, 1.0);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 0.05; y1 += 0.05; }
    var pad = (y1 - y0) * 0.04; y0 -= pad; y1 += pad;
    var inv = opts.invert !== undefined ? opts.invert : invertX(fig);
    function X(v) { var u = (v - x0) / (x1 - x0); return M.l + (inv ? 1 - u : u) * (W - M.l - M.r); }
    function Y(v) { return H - M.b - (v - y0) / (y1 - y0) * (H - M.t - M.b); }
    var root = sv("svg", { "class": "chart", viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": fig.title || "" });
    root.appendChild(sv("text", { x: W / 2, y: 16, "text-anchor": "middle", "font-weight": "600", text: fig.title || "" }));
    var ax = sv("g", { "class": "axis" });
    ticks(y0, y1, 5).forEach(function (v) {
      ax.appendChild(sv("line", { "class": "grid", x1: M.l, x2: W - M.r, y1: Y(v), y2: Y(v) }));
      ax.appendChild(sv("text", { x: M.l - 5, y: Y(v) + 4, "text-anchor": "end", text: +v.toFixed(4) }));
    });
    ticks(x0, x1, 8).forEach(function (v) {
      ax.appendChild(sv("line", { x1: X(v), x2: X(v), y1: H - M.b, y2: H - M.b + 4 }));
      ax.appendChild(sv("text", { x: X(v), y: H - M.b + 16, "text-anchor": "middle", text: v }));
    });
    ax.appendChild(sv("path", { d: "M" + M.l + "," + M.t + "V" + (H - M.b) + "H" + (W - M.r), fill: "none" }));
    ax.appendChild(sv("text", { x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle", text: fig.xlabel || "" }));
    ax.appendChild(sv("text", { x: 12, y: (M.t + H - M.b) / 2, "text-anchor": "middle", transform: "rotate(-90 12 " + (M.t + H - M.b) / 2 + ")", text: fig.ylabel || "" }));
    root.appendChild(ax);
    (fig.hlines || []).forEach(function (h) {
      if (h.y < y0 || h.y > y1) return;
      root.appendChild(sv("line", { x1: M.l, x2: W - M.r, y1: Y(h.y), y2: Y(h.y), stroke: "#888", "stroke-dasharray": "5 4" }));
      root.appendChild(sv("text", { x: M.l + 4, y: Y(h.y) - 3, fill: "#777", text: h.label }));
    });
    (fig.vlines || []).forEach(function (v) {
      if (v.x < x0 || v.x > x1) return;
      root.appendChild(sv("line", { x1: X(v.x), x2: X(v.x), y1: M.t, y2: H - M.b, stroke: "#222", "stroke-dasharray": "2 3" }));
      root.appendChild(sv("text", { x: X(v.x) + 3, y: M.t + 10, text: v.label }));
    });
    var legend = el("div", { "class": "legend" });
    series.forEach(function (s, si) {
      var color = s.color || COLORS[si % COLORS.length];
      var pts = [], band = [], lo = [];
      s.x.forEach(function (x, i) {
        var m = s.mean[i]; if (m === null || !isFinite(m)) return;
        pts.push([X(x), Y(m)]);
        var d = s.std ? s.std[i] : null;
        if (d !== null && d !== undefined && s.k) {
          var top = m + s.k * d; if (/SSIM/.test(fig.ylabel || "")) top = Math.min(top, 1);
          band.push([X(x), Y(Math.min(top, y1))]); lo.push([X(x), Y(Math.max(m - s.k * d, y0))]);
        }
      });
      if (band.length > 1) {
        var b = band.concat(lo.reverse());
        root.appendChild(sv("path", { d: "M" + b.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join("L") + "Z", fill: color, opacity: 0.15 }));
      }
      if (pts.length) root.appendChild(sv("path", { "class": "curve", "data-label": s.label, d: "M" + pts.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join("L"),
        fill: "none", stroke: color, "stroke-width": s.dash ? 1.4 : 1.8, "stroke-dasharray": s.dash || null }));
      legend.appendChild(el("span", null, el("span", { "class": "sw" }), s.label));
      legend.lastChild.firstChild.style.background = color;
      if (!s.vids) return;
      s.x.forEach(function (x, i) {
        var m = s.mean[i], vid = s.vids[i];
        if (m === null || !isFinite(m) || !vid) return;
        var ring = opts.marked && opts.marked[vid];
        var c = sv("circle", { "class": "pt" + (ring ? " hasimg" : ""), cx: X(x).toFixed(1), cy: Y(m).toFixed(1), r: ring ? 4.5 : series.length * s.x.length > 400 ? 2.2 : 3, fill: color,
          "data-vid": vid, "data-series": si, "data-x": x });
        c.addEventListener("mousemove", function (ev) {
          var n = s.n ? s.n[i] : null, d = s.std ? s.std[i] : null;
          showTip(ev, s.label + "\n" + (fig.xlabel || "x") + " = " + x + "\nmean " + fmt(m, 4) + (d !== null && d !== undefined ? ", sd " + fmt(d, 4) : "") +
            (n !== null && n !== undefined ? ", n = " + n : "") + "\nclick: the samples behind this point");
        });
        c.addEventListener("mouseleave", hideTip);
        c.addEventListener("click", function () { hideTip(); mark(root, c); onPoint(s, i); });
        root.appendChild(c);
      });
    });
    return el("div", null, root, legend);
  }
  function mark(root, node) {
    Array.prototype.forEach.call(root.querySelectorAll(".sel"), function (e) { e.parentNode.removeChild(e); });
    var bb = node.getBBox();
    root.appendChild(sv("rect", { "class": "sel", x: bb.x - 2, y: bb.y - 2, width: bb.width + 4, height: bb.height + 4 }));
  }
  function viridis(t) {
    var stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(Math.floor(t), stops.length - 2), u = t - i, a = stops[i], b = stops[i + 1];
    return "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + u * (b[j] - a[j])); }).join(",") + ")";
  }
  function heatChart(fig, values, vids, stats, onCell, marked, stat) {
    var rows = fig.rows, cols = fig.cols, hh = Math.max(18, Math.min(34, 220 / rows.length));
    var lo = 0, hi = 1; // SSIM: 0..1; an experiment's own statistic: its range (up to the 99th percentile, as the PNG)
    if (stat) {
      var all = []; values.forEach(function (row) { row.forEach(function (v) { if (v !== null && isFinite(v)) all.push(v); }); });
      all.sort(function (a, b) { return a - b; });
      if (all.length) { lo = stat === "rel_l1" ? 0 : all[0]; hi = stat === "rel_l1" ? all[Math.floor(0.99 * (all.length - 1))] : 1; }
      if (!(hi > lo)) hi = lo + 1;
    }
    function color(v) { return viridis((v - lo) / (hi - lo)); }
    var h = M.t + rows.length * hh + M.b + 26, w = W, cw = (w - M.l - M.r - 60) / cols.length;
    var root = sv("svg", { "class": "chart", viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img", "aria-label": fig.title || "" });
    root.appendChild(sv("text", { x: w / 2, y: 16, "text-anchor": "middle", "font-weight": "600", text: fig.title || "" }));
    rows.forEach(function (r, ri) {
      root.appendChild(sv("text", { x: M.l - 6, y: M.t + ri * hh + hh / 2 + 4, "text-anchor": "end", text: r }));
      cols.forEach(function (c, ci) {
        var v = values[ri][ci], vid = vids && vids[ri] ? vids[ri][ci] : null;
        var rect = sv("rect", { "class": "cell", x: (M.l + ci * cw).toFixed(2), y: M.t + ri * hh, width: (cw + 0.3).toFixed(2), height: hh - 1,
          fill: v === null ? "#ddd" : color(v), "data-vid": vid, "data-row": r, "data-col": c });
        rect.addEventListener("mousemove", function (ev) {
          var st = statOf(stats && vid ? stats[vid] : null, stat);
          showTip(ev, (fig.ylabel || "row") + " = " + r + ", " + (fig.xlabel || "col") + " = " + c + "\nmean " + (stat ? STAT_NAME[stat] : "SSIM") + " " + fmt(st && stat ? st[1] : v, 4) +
            (st ? ", sd " + fmt(st[2], 4) + ", n = " + st[0] : "") + (vid ? "\nclick: the samples behind this cell" : ""));
        });
        rect.addEventListener("mouseleave", hideTip);
        if (vid) rect.addEventListener("click", function () { hideTip(); mark(root, rect); onCell(r, c, vid); });
        root.appendChild(rect);
        if (marked && vid && marked[vid]) root.appendChild(sv("circle", { cx: M.l + (ci + 0.5) * cw, cy: M.t + ri * hh + hh / 2, r: 2.5, fill: "#e0218a", "pointer-events": "none" }));
      });
    });
    (fig.marks || []).forEach(function (mk) {
      root.appendChild(sv("line", { x1: M.l + (mk.col + 0.5) * cw, x2: M.l + (mk.col + 0.5) * cw, y1: M.t + mk.row * hh + 2, y2: M.t + (mk.row + 1) * hh - 3, stroke: "red", "stroke-width": 2, "pointer-events": "none" }));
    });
    var step = Math.max(1, Math.ceil(cols.length / 12));
    cols.forEach(function (c, ci) {
      if (ci % step) return;
      root.appendChild(sv("text", { x: M.l + (ci + 0.5) * cw, y: M.t + rows.length * hh + 14, "text-anchor": "middle", text: c }));
    });
    root.appendChild(sv("text", { x: (M.l + w - M.r - 60) / 2, y: M.t + rows.length * hh + 32, "text-anchor": "middle", text: fig.xlabel || "" }));
    root.appendChild(sv("text", { x: 12, y: M.t + rows.length * hh / 2, "text-anchor": "middle", transform: "rotate(-90 12 " + (M.t + rows.length * hh / 2) + ")", text: fig.ylabel || "" }));
    for (var i = 0; i <= 10; i++) {
      root.appendChild(sv("rect", { x: w - M.r - 40, y: M.t + (10 - i) * rows.length * hh / 11, width: 12, height: rows.length * hh / 11 + 0.5, fill: viridis(i / 10) }));
    }
    root.appendChild(sv("text", { x: w - M.r - 24, y: M.t + 8, text: stat ? +hi.toPrecision(2) : "1" }));
    root.appendChild(sv("text", { x: w - M.r - 24, y: M.t + rows.length * hh, text: stat ? +lo.toPrecision(2) : "0" }));
    return root;
  }
  function histChart(values, lo, hi, bins, title, xlabel, onBar) {
    var counts = [], members = [], w = 520, h = 260, bw = (hi - lo) / bins;
    for (var i = 0; i < bins; i++) { counts.push(0); members.push([]); }
    values.forEach(function (v, j) {
      if (v === null) return;
      var b = Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / bw)));
      counts[b]++; members[b].push(j);
    });
    var top = Math.max.apply(null, counts.concat([1]));
    var root = sv("svg", { "class": "chart", viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img", "aria-label": title });
    root.appendChild(sv("text", { x: w / 2, y: 16, "text-anchor": "middle", "font-weight": "600", text: title }));
    function X(v) { return M.l + (v - lo) / (hi - lo) * (w - M.l - M.r); }
    function Y(c) { return h - M.b - c / top * (h - M.t - M.b); }
    ticks(0, top, 4).forEach(function (c) {
      root.appendChild(sv("line", { "class": "grid", x1: M.l, x2: w - M.r, y1: Y(c), y2: Y(c) }));
      root.appendChild(sv("text", { x: M.l - 5, y: Y(c) + 4, "text-anchor": "end", text: c }));
    });
    ticks(lo, hi, 6).forEach(function (v) { root.appendChild(sv("text", { x: X(v), y: h - M.b + 15, "text-anchor": "middle", text: +v.toFixed(3) })); });
    root.appendChild(sv("text", { x: w / 2, y: h - 6, "text-anchor": "middle", text: xlabel }));
    counts.forEach(function (c, b) {
      if (!c) return;
      var r = sv("rect", { "class": "bar", x: X(lo + b * bw) + 0.5, y: Y(c), width: Math.max(1, X(lo + (b + 1) * bw) - X(lo + b * bw) - 1), height: h - M.b - Y(c), "data-bin": b });
      r.addEventListener("mousemove", function (ev) { showTip(ev, fmt(lo + b * bw) + " – " + fmt(lo + (b + 1) * bw) + ": " + c + " samples\nclick: show them"); });
      r.addEventListener("mouseleave", hideTip);
      r.addEventListener("click", function () { hideTip(); mark(root, r); onBar(members[b], lo + b * bw, lo + (b + 1) * bw); });
      root.appendChild(r);
    });
    return root;
  }

  // --- navigation ------------------------------------------------------------------------------------
  function runLabel(r) {
    if (r.experiment === "shortcut") return "shortcut" + (r.settings && r.settings.name ? " " + r.settings.name : "");
    return r.experiment;
  }
  function buildNav() {
    var nav = clear(document.getElementById("nav"));
    if (INDEX.folders.length > 1) nav.appendChild(el("button", { "class": "compare" + (location.hash === "#compare" ? " on" : ""), text: "Compare the " + INDEX.folders.length + " folders", on: { click: function () { go("#compare"); } } }));
    INDEX.folders.forEach(function (F) {
      nav.appendChild(el("h2", { title: F.path, text: F.name }));
      var m = F.model || {};
      nav.appendChild(el("div", { "class": "model", text: "model " + (m.name || "?") + (m.K ? ", K = " + m.K : "") + (F.sampler ? "; " + F.sampler.method + " S = " + F.sampler.steps : "") }));
      F.runs.forEach(function (r) {
        var h = "#f=" + F.id + "&run=" + encodeURIComponent(r.run);
        nav.appendChild(el("button", { "class": location.hash === h ? "on" : null, "data-run": r.run, on: { click: function () { go(h); } } },
          runLabel(r), el("br"), el("small", { text: r.run })));
      });
    });
  }
  function go(h) { if (location.hash === h) route(); else location.hash = h; }
  function route() {
    hideTip();
    buildNav();
    var h = location.hash.replace(/^#/, "");
    if (h === "compare" && INDEX.folders.length > 1) return compareView();
    var p = {};
    h.split("&").forEach(function (kv) { var i = kv.indexOf("="); if (i > 0) p[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1)); });
    var F = INDEX.folders[+p.f || 0], r = F && F.runs.filter(function (x) { return x.run === p.run; })[0];
    if (!F) return;
    if (!r) r = F.runs[0];
    if (!r) { clear(main).appendChild(el("p", { "class": "note", text: F.path + " holds no runs yet." })); return; }
    if (r.experiment === "shortcut") shortcutView(F, r); else runView(F, r);
    window.scrollTo(0, 0);
  }

  // --- a run of an experiment ---------------------------------------------------------------------------
  function source(F, r) {
    return el("p", { "class": "source" }, "From ", el("code", { text: F.path }), " · run ", el("code", { text: r.run }),
      " in ", el("code", { text: "results.sqlite" }), isFinite(r.created) && r.created > 0 ? " · created " + new Date(r.created * 1000).toISOString().slice(0, 16).replace("T", " ") : "");
  }
  function kvTable(obj) {
    var t = el("table", { "class": "kv" });
    Object.keys(obj || {}).forEach(function (k) { t.appendChild(el("tr", null, el("th", { text: k }), el("td", null, el("code", { text: typeof obj[k] === "string" ? obj[k] : json(obj[k]) })))); });
    return t;
  }
  function distinctConds(r) {
    var seen = {}, out = [];
    r.conds.forEach(function (c) { var k = json(c); if (c !== null && !seen[k]) { seen[k] = 1; out.push(c); } });
    return out.sort(function (a, b) { return a < b ? -1 : a > b ? 1 : 0; });
  }
  function runView(F, r) {
    clear(main);
    main.appendChild(el("h2", { text: (r.title || r.experiment) }));
    main.appendChild(source(F, r));
    var fd = r.findings || {};
    if (fd.findings && fd.findings.text) main.appendChild(el("div", { "class": "findings", text: fd.findings.text }));
    else if (!r.findings) main.appendChild(el("div", { "class": "warn", text: "No findings file for this run (interrupted or still being written): the figures and numbers below are what is stored so far." }));
    var det = el("details", null, el("summary", { text: "Settings, model identity and numbers" }));
    det.appendChild(kvTable(Object.assign({ samples: r.seeds.length + " (seeds " + (r.seeds.length ? r.seeds[0] + "…" + r.seeds[r.seeds.length - 1] : "–") + ")" }, r.settings)));
    if (fd.findings) { var rest = Object.assign({}, fd.findings); delete rest.text; det.appendChild(el("p", { text: "Findings' numbers:" })); det.appendChild(kvTable(rest)); }
    if (r.stats && Object.keys(r.stats).length) { det.appendChild(el("p", { text: "Stored statistics:" })); det.appendChild(kvTable(r.stats)); }
    main.appendChild(det);

    var flt = { cond: "", seeds: "" }, stats = null, asked = 0;
    var conds = distinctConds(r);
    var sel = el("select", { id: "f-cond", "aria-label": "class or prompt" }, el("option", { value: "", text: "all" }));
    conds.forEach(function (c) { sel.appendChild(el("option", { value: json(c), text: condText(c) })); });
    var seedIn = el("input", { id: "f-seeds", placeholder: "e.g. 0-9,15", "aria-label": "seeds" });
    var status = el("span", { "class": "note" });
    var bar = el("div", { "class": "filters" },
      conds.length ? el("label", null, (typeof conds[0] === "string" ? "Prompt " : "Class "), sel) : null,
      el("label", null, "Seeds ", seedIn),
      el("button", { id: "f-apply", text: "Apply", on: { click: apply } }),
      el("button", { text: "Clear", on: { click: function () { sel.value = ""; seedIn.value = ""; apply(); } } }), status);
    main.appendChild(bar);
    var extra = el("div");
    main.appendChild(extra);
    var figs = el("div", { "class": "cards" });
    main.appendChild(figs);
    var detail = el("div", { id: "detail" });

    function apply() {
      flt = { cond: sel.value, seeds: seedIn.value.trim() };
      try { parseSeeds(flt.seeds); } catch (e) { status.textContent = e.message; return; }
      status.textContent = "querying…";
      var mine = ++asked; // a slower, older answer never overwrites a newer one
      api.stats(F.id, r.run, flt).then(function (s) {
        if (mine !== asked) return;
        stats = s;
        var filtered = flt.cond || flt.seeds;
        var ns = Object.keys(s).map(function (k) { var x = s[k][5]; return x ? Math.max.apply(null, Object.keys(x).map(function (q) { return x[q][0]; })) : s[k][0]; });
        status.textContent = filtered ? "filtered: " + (ns.length ? Math.max.apply(null, ns) : 0) + " of " + r.seeds.length + " samples per point" : r.seeds.length + " samples per point";
        draw(filtered);
        if (detail.dataset.vid) openVariant(detail.dataset.vid, detail.dataset.label, null, null, detail.dataset.flt === json(flt)); // under its redrawn figure; asked again if the filter changed
      }).catch(function (e) { status.textContent = e.message; });
    }
    function openVariant(vid, label, anchor, stat, keep) { // keep: the panel's samples are still right, only move it
      if (anchor) detail.dataset.stat = stat || "";
      detail.dataset.vid = vid; detail.dataset.label = label; detail.dataset.flt = json(flt);
      if (anchor) detail.dataset.stem = anchor.getAttribute("data-stem");
      else anchor = Array.prototype.filter.call(figs.children, function (c) { return c.getAttribute("data-stem") === detail.dataset.stem; })[0]; // redrawn
      if (anchor) anchor.parentNode.insertBefore(detail, anchor.nextSibling);
      else if (!detail.parentNode) main.appendChild(detail);
      if (!keep) variantPanel(detail, F, r, vid, label, flt, detail.dataset.stat || null);
    }
    var marked = null; // in a shared file: the points whose images it holds, ringed
    if (STATIC) {
      marked = {};
      Object.keys((STATIC.images || {})[F.id + "/" + r.run] || {}).forEach(function (k) { marked[k.split("/")[1]] = 1; });
    }
    function draw(filtered) {
      clear(figs);
      r.figures.forEach(function (fg) {
        var card = el("div", { "class": "card", "data-stem": fg.stem });
        var d = fg.data;
        if (d && d.kind === "lines") {
          var psnr = /PSNR/.test(d.ylabel || "");
          var series = d.curves.map(function (c, ci) {
            var vids = fg.variants ? fg.variants[ci] : null, s = { label: c.label, x: c.x, mean: c.mean, std: c.std, k: d.k, vids: vids, n: null };
            if (vids && stats) {
              var sts = vids.map(function (v) { return v ? statOf(stats[v], fg.stat, psnr) : null; });
              s.n = sts.map(function (st) { return st ? st[0] : null; });
              if (filtered) {
                s.mean = sts.map(function (st, i) { return st ? st[1] : (vids[i] ? null : c.mean[i]); });
                s.std = sts.map(function (st) { return st ? st[2] : null; });
              }
            }
            return s;
          });
          if (!filtered) (d.dashed || []).forEach(function (c) { series.push({ label: c.label, x: c.x, mean: c.y, std: null, dash: "5 4", color: "#000" }); });
          card.appendChild(lineChart(d, series, function (s, i) {
            openVariant(s.vids[i], s.label + ", " + d.xlabel + " = " + s.x[i], card, fg.stat);
          }, { marked: marked }));
        } else if (d && d.kind === "heatmap") {
          var values = d.values;
          if (filtered && fg.variants && stats) values = fg.variants.map(function (row) { return row.map(function (v) { var st = v ? statOf(stats[v], fg.stat) : null; return st ? st[1] : null; }); });
          card.appendChild(heatChart(d, values, fg.variants, stats, function (row, col, vid) {
            openVariant(vid, d.ylabel + " = " + row + ", " + d.xlabel + " = " + col, card, fg.stat);
          }, marked, fg.stat));
        } else {
          var src = api.file(F.id, fg.file);
          card.appendChild(src ? el("img", { "class": "fig", src: src, alt: fg.caption || fg.stem }) : el("span", { "class": "missing", text: "figure not in this export" }));
        }
        var src2 = d ? api.file(F.id, fg.file) : null;
        card.appendChild(el("div", { "class": "cap" }, fg.caption || fg.stem, src2 ? [" · ", el("a", { href: src2, target: "_blank", rel: "noopener", text: "PNG" })] : null,
          d && !fg.variants ? " (points of this figure stand for no single variant)" : null,
          marked && d && fg.variants ? " · this file holds the images of the ringed points (marked cells)" : null));
        figs.appendChild(card);
      });
      if (!r.figures.length) figs.appendChild(el("p", { "class": "note", text: "This run has no figures yet." }));
    }
    draw(false);
    apply();
    if (r.experiment === "trajectory") trajectoryPanel(extra, F, r);
  }

  var panelAsked = 0;
  function variantPanel(box, F, r, vid, label, flt, stat) {
    if (stat) return statPanel(box, F, r, vid, label, flt, stat);
    clear(box).className = "detail";
    box.appendChild(el("h3", { text: label }));
    box.appendChild(el("p", { "class": "note", text: "loading the samples…" }));
    var mine = ++panelAsked; // the latest click wins
    api.variant(F.id, r.run, vid, flt).then(function (d) {
      if (mine !== panelAsked) return;
      clear(box);
      box.appendChild(el("h3", { text: label }));
      var ss = d.rows.map(function (x) { return x.ssim; }).filter(function (x) { return x !== null; });
      box.appendChild(el("p", null, el("code", { text: json(d.variant) }), " · " + d.rows.length + " samples" + (flt.cond || flt.seeds ? " (filtered)" : "") +
        ", mean SSIM " + fmt(mean(ss)) + ", sd " + fmt(sd(ss)) + " · sorted worst first"));
      var withImg = d.rows.filter(function (x) { return d.images[x.seed]; });
      var grid = el("div", { "class": "pairs", "data-vid": vid });
      withImg.forEach(function (x) {
        var im = d.images[x.seed], imgs;
        if (im.error) imgs = el("span", { "class": "missing", text: "images of seed " + x.seed + " cannot be read: " + im.error.slice(0, 120) });
        else imgs = [im.baseline ? image(F.id, r.run, x.seed, BASE_ID(), "baseline") : el("span", { "class": "missing", text: "baseline image " + (STATIC ? "not in this export" : "not kept") }),
          im.variant ? image(F.id, r.run, x.seed, vid, "intervened") : el("span", { "class": "missing", text: "intervened image " + (STATIC ? "not in this export" : "not kept") })];
        grid.appendChild(el("div", { "class": "pair", "data-seed": x.seed }, el("div", { "class": "imgs" }, imgs),
          el("div", { "class": "lbl", text: "baseline | intervened" }),
          el("div", { "class": "meta", text: "seed " + x.seed + " · " + condText(x.cond) + " · SSIM " + fmt(x.ssim) + " · PSNR " + fmt(x.psnr, 1) })));
      });
      if (withImg.length) box.appendChild(grid);
      box.appendChild(el("p", { "class": "note", text: withImg.length ? "Images of " + withImg.length + " of " + d.rows.length + " samples were kept by the sweep (its --images seeds)" +
        (STATIC ? "; this file holds them for each figure's worst, best and a few other points only (" + (INDEX.export || "") + ")" : "") + "; every sample's numbers are below." :
        "No images of these samples were kept" + (STATIC ? " in this export" : " (a sweep keeps the images of its first --images seeds)") + "; every sample's numbers are below." }));
      var t = el("table", { "class": "rows" }, el("tr", null, el("th", { text: "rank" }), el("th", { text: "seed" }), el("th", { "class": "l", text: "class / prompt" }), el("th", { text: "SSIM" }), el("th", { text: "PSNR (dB)" })));
      d.rows.slice(0, 400).forEach(function (x, i) {
        t.appendChild(el("tr", null, el("td", { text: i + 1 }), el("td", { text: x.seed }), el("td", { "class": "l", text: condText(x.cond) }), el("td", { text: fmt(x.ssim, 4) }), el("td", { text: x.psnr === null ? "inf" : fmt(x.psnr, 2) })));
      });
      box.appendChild(el("div", { "class": "rowsbox" }, t));
      if (d.rows.length > 400) box.appendChild(el("p", { "class": "note", text: "the 400 worst of " + d.rows.length + " shown" }));
      box.scrollIntoView({ block: "nearest" });
    }).catch(function (e) { clear(box).appendChild(el("p", { "class": "warn", text: "cannot load this variant: " + e.message })); });
  }
  /* a variant of an experiment that measures activations (feature-change): its per-sample values,
     the largest change first; such a variant has no image of its own. */
  function statPanel(box, F, r, vid, label, flt, stat) {
    clear(box).className = "detail";
    box.appendChild(el("h3", { text: label }));
    box.appendChild(el("p", { "class": "note", text: "loading the samples…" }));
    var mine = ++panelAsked;
    api.variant(F.id, r.run, vid, flt, stat).then(function (d) {
      if (mine !== panelAsked) return;
      clear(box);
      box.appendChild(el("h3", { text: label }));
      var names = Object.keys(STAT_NAME);
      var vals = d.rows.map(function (x) { return x.extra ? x.extra[stat] : null; }).filter(function (x) { return x !== null && x !== undefined; });
      box.appendChild(el("p", null, el("code", { text: json(d.variant) }), " · " + d.rows.length + " samples" + (flt.cond || flt.seeds ? " (filtered)" : "") +
        ", mean " + STAT_NAME[stat] + " " + fmt(mean(vals), 4) + ", sd " + fmt(sd(vals), 4) + " · sorted by " + STAT_NAME[stat] + ", the largest change first"));
      box.appendChild(el("p", { "class": "note nopix", text: "No images for this point: this experiment measures how much a unit's activations change from the step before, on the unintervened sampler; there is no intervened image to show. Each sample's values are below." }));
      var t = el("table", { "class": "rows", "data-vid": vid }, el("tr", null, el("th", { text: "rank" }), el("th", { text: "seed" }), el("th", { "class": "l", text: "class / prompt" }),
        names.map(function (k) { return el("th", { text: STAT_NAME[k] }); })));
      d.rows.slice(0, 400).forEach(function (x, i) {
        t.appendChild(el("tr", null, el("td", { text: i + 1 }), el("td", { text: x.seed }), el("td", { "class": "l", text: condText(x.cond) }),
          names.map(function (k) { return el("td", { text: fmt(x.extra ? x.extra[k] : null, 4) }); })));
      });
      box.appendChild(el("div", { "class": "rowsbox" }, t));
      if (d.rows.length > 400) box.appendChild(el("p", { "class": "note", text: "the 400 largest changes of " + d.rows.length + " shown" }));
      box.scrollIntoView({ block: "nearest" });
    }).catch(function (e) { clear(box).appendChild(el("p", { "class": "warn", text: "cannot load this variant: " + e.message })); });
  }
  var BASELINE_ID = null;
  function BASE_ID() { return BASELINE_ID; }

  function trajectoryPanel(box, F, r) {
    var card = el("div", { "class": "card", id: "trajectory" }, el("h3", { text: "x_t and x_est0 along the trajectory: slide over t" }));
    box.appendChild(card);
    if (!r.images.length) { card.appendChild(el("p", { "class": "note", text: "No images were kept for this run." })); return; }
    var seedSel = el("select", { id: "traj-seed", "aria-label": "seed" });
    r.images.forEach(function (s) { seedSel.appendChild(el("option", { value: s, text: "seed " + s })); });
    var slider = el("input", { type: "range", id: "traj-t", min: 0, max: 0, value: 0, "aria-label": "t" });
    var tLabel = el("b"), view = el("div", { "class": "traj" });
    card.appendChild(el("div", { "class": "filters" }, el("label", null, "Sample ", seedSel), el("label", null, "t ", slider), tLabel));
    card.appendChild(view);
    var steps = [], byKey = {}, rowsByKey = {};
    function load() {
      api.seed(F.id, r.run, +seedSel.value).then(function (d) {
        byKey = {}; rowsByKey = {};
        d.rows.forEach(function (x) { if (x.variant && x.variant.type) rowsByKey[x.variant.type + "/" + x.variant.t] = x; });
        var have = {};
        d.images.forEach(function (vid) { have[vid] = 1; });
        var ts = {};
        d.rows.forEach(function (x) {
          var v = x.variant; if (!v || (v.type !== "x_t" && v.type !== "x_est0") || !have[x.variant_id]) return;
          byKey[v.type + "/" + v.t] = x.variant_id; ts[v.t] = 1;
        });
        steps = Object.keys(ts).map(Number).sort(function (a, b) { return b - a; });
        if (d.error) { clear(view).appendChild(el("span", { "class": "missing", text: d.error.slice(0, 140) })); return; }
        slider.max = Math.max(0, steps.length - 1);
        slider.value = Math.min(+slider.value, steps.length - 1);
        show();
      });
    }
    function show() {
      clear(view);
      if (!steps.length) { view.appendChild(el("p", { "class": "note", text: "No x_t / x_est0 images were kept for this sample." })); return; }
      var t = steps[+slider.value];
      tLabel.textContent = "t = " + t + " (" + steps.length + " steps kept)";
      ["x_t", "x_est0"].forEach(function (k) {
        var vid = byKey[k + "/" + t], row = rowsByKey[k + "/" + t];
        view.appendChild(el("div", null, el("div", { "class": "lbl", text: k + " at t = " + t }),
          vid ? image(F.id, r.run, +seedSel.value, vid, k, true) : el("span", { "class": "missing", text: "not kept" }),
          el("div", { "class": "meta", text: row ? "vs x_0: SSIM " + fmt(row.ssim) + ", PSNR " + fmt(row.psnr, 1) : "" })));
      });
      view.appendChild(el("div", null, el("div", { "class": "lbl", text: "x_0 (the output)" }), image(F.id, r.run, +seedSel.value, BASE_ID(), "x_0", true)));
    }
    seedSel.addEventListener("change", load);
    slider.addEventListener("input", show);
    load();
  }

  // --- a shortcut run ------------------------------------------------------------------------------------
  function shortcutView(F, r) {
    clear(main);
    var fd = r.findings || {};
    main.appendChild(el("h2", { text: "Shortcut sampler" + (r.settings.name ? " “" + r.settings.name + "”" : "") }));
    main.appendChild(source(F, r));
    if (!r.findings) { main.appendChild(el("div", { "class": "warn", text: "This shortcut run has no summary (interrupted): run its command again." })); }
    var tm = fd.timing || {}, b = tm.baseline || {}, s = tm.shortcut || {};
    var k = el("div", { "class": "kpis", id: "savings" });
    function kpi(v, label) { k.appendChild(el("div", { "class": "kpi" }, el("b", { text: v }), el("span", { text: label }))); }
    kpi(pct(fd.time_saving), "time saving, measured (median of " + (tm.repeats || "?") + " interleaved runs)");
    if (b.min !== undefined && s.min !== undefined) kpi(pct(1 - s.max / b.min) + " … " + pct(1 - s.min / b.max), "measured saving's spread (slowest … fastest pairing)");
    kpi(fd.time_saving_predicted === undefined ? "not recorded" : pct(fd.time_saving_predicted), "time saving, predicted from single evaluations");
    kpi(pct(fd.compute_saving), "compute saving (executed FLOPs)");
    kpi(fmt(fd.ssim_mean) + " ± " + fmt(fd.ssim_mad), "mean SSIM ± mean abs. deviation (" + (fd.samples || r.seeds.length) + " samples)");
    kpi((fd.nfe_shortcut !== undefined ? fd.nfe_shortcut : "–") + " / " + (fd.nfe_baseline !== undefined ? fd.nfe_baseline : "–"), "U-Net evaluations (shortcut / baseline)");
    main.appendChild(k);
    if (b.median !== undefined) main.appendChild(el("p", { "class": "note", text: "Baseline " + fmt(b.median, 2) + " s (" + fmt(b.min, 2) + "–" + fmt(b.max, 2) + "), shortcut " + fmt(s.median, 2) + " s (" + fmt(s.min, 2) + "–" + fmt(s.max, 2) + ")." }));
    (fd.warnings || []).forEach(function (w) { main.appendChild(el("div", { "class": "warn", text: "warning: " + w })); });
    var sched = fd.schedule || r.settings.schedule || {};
    var S = (r.settings.sampler || {}).steps || 100;
    main.appendChild(el("div", { "class": "card" }, el("h3", { text: "The schedule over t" }), timeline(sched.interventions || [], S, (r.settings.model || {}).K),
      el("details", null, el("summary", { text: "as JSON" }), el("pre", { text: JSON.stringify(sched, null, 1) }))));
    var ps = (fd.per_sample || []).slice();
    var cards = el("div", { "class": "cards" });
    main.appendChild(cards);
    var detail = el("div", { id: "detail" });
    if (ps.length) {
      var vals = ps.map(function (x) { return x.ssim; });
      var lo = Math.min(0.5, Math.min.apply(null, vals.filter(function (v) { return v !== null; })));
      cards.appendChild(el("div", { "class": "card", "data-stem": "ssim_histogram" }, histChart(vals, Math.floor(lo * 20) / 20, 1, 20, "SSIM of the shortcut against the baseline (Fig. 13)", "SSIM(shortcut, baseline)",
        function (idx, a, z) { samplesPanel(detail, F, r, idx.map(function (j) { return ps[j]; }), "Samples with SSIM in " + fmt(a) + " – " + fmt(z)); }),
        el("div", { "class": "cap", text: "Click a bar for its samples." })));
      var order = ps.slice().sort(function (a, b) { return a.ssim - b.ssim; });
      var n = Math.min(5, order.length);
      cards.appendChild(el("div", { "class": "card", id: "best-worst" }, el("h3", { text: "Worst and best samples" }),
        sampleTable(order.slice(0, n), r, "worst"), sampleTable(order.slice(-n).reverse(), r, "best")));
    }
    main.appendChild(detail);
    var pics = el("div", { "class": "cards" });
    main.appendChild(pics);
    (r.figures || []).forEach(function (fg) {
      if (fg.stem === "ssim_histogram" && ps.length) return; // drawn above, clickable
      var src = api.file(F.id, fg.file);
      pics.appendChild(el("div", { "class": "card" }, src ? el("img", { "class": "fig", src: src, alt: fg.stem }) : el("span", { "class": "missing", text: "figure not in this export" }), el("div", { "class": "cap", text: fg.file })));
    });
  }
  function condOfSeed(r, seed) { var i = r.seeds.indexOf(seed); return i >= 0 ? r.conds[i] : null; }
  function sampleTable(rows, r, what) {
    var t = el("table", { "class": "rows", "data-which": what }, el("tr", null, el("th", { "class": "l", text: what }), el("th", { text: "seed" }), el("th", { "class": "l", text: "class / prompt" }), el("th", { text: "SSIM" }), el("th", { text: "PSNR (dB)" })));
    rows.forEach(function (x, i) { t.appendChild(el("tr", null, el("td", { "class": "l", text: "#" + (i + 1) }), el("td", { text: x.seed }), el("td", { "class": "l", text: condText(condOfSeed(r, x.seed)) }), el("td", { text: fmt(x.ssim, 4) }), el("td", { text: fmt(x.psnr, 2) }))); });
    return t;
  }
  function samplesPanel(box, F, r, rows, label) {
    clear(box).className = "detail";
    rows = rows.slice().sort(function (a, b) { return a.ssim - b.ssim; });
    box.appendChild(el("h3", { text: label }));
    box.appendChild(el("p", { "class": "note", text: rows.length + " samples, worst first. A shortcut run keeps no per-sample images; its best/worst figure shows the five of each end." }));
    box.appendChild(sampleTable(rows, r, "rank"));
    box.scrollIntoView({ block: "nearest" });
  }
  function timeline(items, S, K) {
    var w = 700, lanes = {}, laneNames = [];
    items.forEach(function (it) { if (!(it.type in lanes)) { lanes[it.type] = laneNames.length; laneNames.push(it.type); } });
    var lh = 26, h = 34 + Math.max(1, laneNames.length) * lh + 34, l = 100, rr = 14;
    function X(t) { return l + (S - t) / Math.max(1, S - 1) * (w - l - rr); }
    var root = sv("svg", { "class": "chart", id: "timeline", viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img", "aria-label": "schedule timeline" });
    var cw = (w - l - rr) / Math.max(1, S - 1);
    var cut = {};
    items.forEach(function (it) {
      if (it.type === "StopEarly") return;
      var n = it.n || 1, a = it.start, z = it.type === "SkipSteps" ? it.start - n : it.start - n + 1;
      for (var t = z; t <= a; t++) cut[t] = 1;
    });
    var y0 = 26;
    laneNames.forEach(function (name, i) { root.appendChild(sv("text", { x: l - 6, y: y0 + i * lh + lh / 2 + 4, "text-anchor": "end", text: name })); });
    // relax periods: steps between two cuts that run the whole U-Net
    var t = S, inRun = false, start = null;
    for (t = S; t >= 0; t--) {
      var free = t >= 1 && !cut[t];
      if (free && !inRun) { inRun = true; start = t; }
      if (!free && inRun) {
        inRun = false;
        root.appendChild(sv("rect", { x: X(start) - cw / 2, y: y0 - 4, width: (start - t) * cw, height: laneNames.length * lh + 4, fill: "#e6f4ea" }));
      }
    }
    items.forEach(function (it) {
      var lane = lanes[it.type], y = y0 + lane * lh;
      if (it.type === "StopEarly") {
        root.appendChild(sv("line", { x1: X(it.at), x2: X(it.at), y1: y0 - 6, y2: y0 + laneNames.length * lh, stroke: "#d62728", "stroke-width": 2 }));
        root.appendChild(sv("text", { x: X(it.at) + 3, y: y, fill: "#d62728", text: "stop at t = " + it.at }));
        return;
      }
      var n = it.n || 1, a = it.start, z = it.type === "SkipSteps" ? it.start - n : it.start - n + 1;
      var depth = it.nb || it.ns || null;
      var rect = sv("rect", { x: X(a) - cw / 2, y: y + 2, width: Math.max(2, (a - z + 1) * cw - 1), height: lh - 6, rx: 2,
        fill: it.type === "SkipSteps" ? "#ff7f0e" : it.type === "ZeroSkips" ? "#9467bd" : it.type === "ReuseEncoder" ? "#17becf" : "#1f77b4",
        opacity: depth && K ? 0.35 + 0.65 * depth / K : 0.8 });
      rect.addEventListener("mousemove", function (ev) { showTip(ev, it.type + " " + JSON.stringify(it) + "\nsteps " + a + " … " + z); });
      rect.addEventListener("mouseleave", hideTip);
      root.appendChild(rect);
      if ((a - z + 1) * cw > 14 && depth) root.appendChild(sv("text", { x: X(a) - cw / 2 + 2, y: y + lh - 9, fill: "#fff", "font-size": "9", text: depth }));
    });
    var ya = y0 + laneNames.length * lh + 4;
    ticks(1, S, 10).forEach(function (v) { root.appendChild(sv("text", { x: X(v), y: ya + 14, "text-anchor": "middle", text: v })); });
    root.appendChild(sv("text", { x: (l + w) / 2, y: h - 4, "text-anchor": "middle", text: "t (sampling runs left to right) · green: the whole U-Net runs · number: blocks or skips cut" }));
    return root;
  }

  // --- compare mode --------------------------------------------------------------------------------------
  function flat(obj, pre, out) {
    out = out || {};
    Object.keys(obj || {}).forEach(function (k) {
      var v = obj[k], key = pre ? pre + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flat(v, key, out); else out[key] = v;
    });
    return out;
  }
  function compareView() {
    clear(main);
    var Fs = INDEX.folders;
    main.appendChild(el("h2", { text: "Compare " + Fs.length + " folders" }));
    var legend = el("div", { "class": "legend" });
    Fs.forEach(function (F, i) {
      legend.appendChild(el("span", { title: F.path }, el("span", { "class": "sw" }), F.name + " (" + ((F.model || {}).name || "?") + ")"));
      legend.lastChild.firstChild.style.background = COLORS[i % COLORS.length];
      if (i) legend.lastChild.firstChild.style.borderTop = "2px dashed #fff";
    });
    main.appendChild(el("p", { "class": "source" }, "From ", Fs.map(function (F, i) { return [i ? ", " : "", el("code", { text: F.path })]; })));
    main.appendChild(legend);
    var exps = [];
    Fs.forEach(function (F) { F.runs.forEach(function (r) { if (exps.indexOf(r.experiment) < 0) exps.push(r.experiment); }); });
    var any = false;
    exps.forEach(function (exp) {
      var pairs = Fs.map(function (F) { var rs = F.runs.filter(function (r) { return r.experiment === exp; });
        var drawn = rs.filter(function (r) { return r.figures.length; }); // the latest run with figures, else the latest
        rs = drawn.length ? drawn : rs;
        return rs.length ? { F: F, r: rs[rs.length - 1] } : null; }).filter(Boolean);
      if (pairs.length < 2) return;
      any = true;
      var sec = el("section", { "data-experiment": exp });
      sec.appendChild(el("h3", { text: (pairs[0].r.title || exp) + " — " + pairs.length + " folders" }));
      // the differences, named
      var flats = pairs.map(function (p) { return flat(Object.assign({ samples: p.r.seeds.length }, p.r.settings)); });
      var keys = [];
      flats.forEach(function (f) { Object.keys(f).forEach(function (k) { if (keys.indexOf(k) < 0) keys.push(k); }); });
      var diff = keys.filter(function (k) { var a = json(flats[0][k]); return flats.some(function (f) { return json(f[k]) !== a; }); });
      var t = el("table", { "class": "kv differences" }, el("tr", null, el("th", { text: "differs" }), pairs.map(function (p) { return el("th", { text: p.F.name }); })));
      diff.forEach(function (k) { t.appendChild(el("tr", null, el("th", { text: k }), flats.map(function (f) { return el("td", { "class": "diff" }, el("code", { text: f[k] === undefined ? "(absent)" : json(f[k]) })); }))); });
      sec.appendChild(diff.length ? t : el("p", { "class": "note", text: "Same settings in every folder." }));
      pairs.forEach(function (p) { var fd = p.r.findings || {}; if (fd.findings && fd.findings.text) sec.appendChild(el("div", { "class": "findings" }, el("b", { text: p.F.name + ": " }), fd.findings.text)); });
      if (exp === "shortcut") {
        var st = el("table", { "class": "rows" }, el("tr", null, el("th", { "class": "l", text: "folder" }), el("th", { text: "time saving" }), el("th", { text: "predicted" }), el("th", { text: "compute saving" }), el("th", { text: "mean SSIM" })));
        pairs.forEach(function (p) { var f = p.r.findings || {}; st.appendChild(el("tr", null, el("td", { "class": "l", text: p.F.name }), el("td", { text: pct(f.time_saving) }), el("td", { text: pct(f.time_saving_predicted) }), el("td", { text: pct(f.compute_saving) }), el("td", { text: fmt(f.ssim_mean) }))); });
        sec.appendChild(st);
      }
      var cards = el("div", { "class": "cards" }), detail = el("div");
      var stems = [];
      pairs.forEach(function (p) { p.r.figures.forEach(function (fg) { if (fg.data && stems.indexOf(fg.stem) < 0) stems.push(fg.stem); }); });
      stems.forEach(function (stem) {
        var figs = pairs.map(function (p) { return { p: p, fg: p.r.figures.filter(function (x) { return x.stem === stem; })[0] }; }).filter(function (x) { return x.fg && x.fg.data; });
        if (figs.length < 2) return;
        var d0 = figs[0].fg.data, card = el("div", { "class": "card", "data-stem": stem });
        if (d0.kind === "lines") {
          var series = [];
          figs.forEach(function (x, fi) {
            var fidx = Fs.indexOf(x.p.F);
            x.fg.data.curves.forEach(function (c, ci) {
              series.push({ label: x.p.F.name + ": " + c.label, x: c.x, mean: c.mean, std: c.std, k: x.fg.data.k, vids: x.fg.variants ? x.fg.variants[ci] : null,
                color: x.fg.data.curves.length > 1 ? COLORS[(fidx * 3 + ci) % COLORS.length] : COLORS[fidx % COLORS.length], dash: fi ? "6 3" : null, ref: x.p });
            });
          });
          var fig = Object.assign({}, d0, { title: d0.title, hlines: d0.hlines, vlines: [] });
          card.appendChild(lineChart(fig, series, function (s, i) { variantPanel(detail, s.ref.F, s.ref.r, s.vids[i], s.label + ", " + d0.xlabel + " = " + s.x[i], { cond: "", seeds: "" }, figs[0].fg.stat); }));
          card.appendChild(el("div", { "class": "cap", text: "Overlaid on the same axes: " + figs.map(function (x) { return x.p.F.name; }).join(" vs ") + ". Click a point for its samples." }));
        } else if (d0.kind === "heatmap") {
          figs.forEach(function (x) {
            card.appendChild(el("div", { "class": "cap", text: x.p.F.name }));
            card.appendChild(heatChart(x.fg.data, x.fg.data.values, x.fg.variants, null, function (row, col, vid) {
              variantPanel(detail, x.p.F, x.p.r, vid, x.p.F.name + ": " + x.fg.data.ylabel + " = " + row + ", " + x.fg.data.xlabel + " = " + col, { cond: "", seeds: "" }, x.fg.stat);
            }, null, x.fg.stat));
          });
        } else return;
        cards.appendChild(card);
      });
      sec.appendChild(cards);
      sec.appendChild(detail);
      main.appendChild(sec);
    });
    if (!any) main.appendChild(el("p", { "class": "note", text: "These folders share no experiment to compare." }));
  }

  // --- start ------------------------------------------------------------------------------------------------
  api.index().then(function (idx) {
    INDEX = idx;
    BASELINE_ID = idx.baseline;
    if (!BASE) BASE = idx.baseline;
    document.getElementById("where").textContent = idx.folders.map(function (F) { return F.path; }).join(" · ") + (idx.export ? " — " + idx.export : "");
    window.addEventListener("hashchange", route);
    route();
    document.body.setAttribute("data-ready", "1");
  }).catch(function (e) {
    clear(main).appendChild(el("p", { "class": "warn", text: "Cannot load the run folders: " + e.message }));
  });
})();
