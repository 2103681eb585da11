// A time series' page: poll /api/batches/B, redraw the table and the drift plot until done.
(function () {
  "use strict";
  const root = document.getElementById("batch");
  if (!root) return;
  const stateUrl = root.dataset.stateUrl;
  const SVG = "http://www.w3.org/2000/svg";

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function fixed(value, digits) {
    return value === undefined || value === null ? "" : value.toFixed(digits);
  }

  function renderTable(state) {
    const body = document.getElementById("batch-frames");
    const rows = state.frames.map(function (frame, index) {
      const tr = document.createElement("tr");
      tr.dataset.status = frame.status;
      const cal = frame.calibration || {};
      tr.append(cell(String(index + 1)));
      const name = cell("");
      if (frame.job) {
        const link = document.createElement("a");
        link.href = "/status/" + frame.subid;
        link.textContent = frame.file;
        name.append(link);
      } else {
        name.textContent = frame.file;
      }
      tr.append(name);
      tr.append(cell(frame.status + (frame.failure_reason ? ": " + frame.failure_reason : "")));
      tr.append(cell(fixed(cal.ra, 5)), cell(fixed(cal.dec, 5)),
        cell(fixed(cal.orientation, 3)), cell(fixed(cal.pixscale, 4)));
      return tr;
    });
    body.replaceChildren.apply(body, rows);
    const summary = document.getElementById("batch-summary");
    summary.dataset.status = state.status;
    summary.textContent = state.status + ": " + state.solved + " solved, " + state.failed +
      " failed of " + state.total;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  // East and north offsets (arcsec) of each solved frame's centre from the first one's.
  function renderDrift(state) {
    const plot = document.getElementById("drift");
    const solved = state.frames.map(function (f, i) { return [i, f.calibration]; })
      .filter(function (p) { return p[1]; });
    plot.replaceChildren();
    if (solved.length === 0) return;
    const first = solved[0][1];
    const cosDec = Math.cos(first.dec * Math.PI / 180);
    const points = solved.map(function (p) {
      let dra = p[1].ra - first.ra;
      if (dra > 180) dra -= 360;
      if (dra < -180) dra += 360;
      return [p[0], dra * cosDec * 3600, (p[1].dec - first.dec) * 3600];
    });
    const total = Math.max(1, state.frames.length - 1);
    let span = 1;
    for (const p of points) span = Math.max(span, Math.abs(p[1]), Math.abs(p[2]));
    const W = 600, H = 300, pad = 30;
    const x = function (frame) { return pad + (W - 2 * pad) * frame / total; };
    const y = function (value) { return H / 2 - (H / 2 - pad) * value / span; };
    plot.append(svg("line", { x1: pad, x2: W - pad, y1: H / 2, y2: H / 2, stroke: "#999" }));
    const series = [[1, "#c0392b", "east"], [2, "#2471a3", "north"]];
    for (const [column, colour, label] of series) {
      const path = points.map(function (p) { return x(p[0]) + "," + y(p[column]); }).join(" ");
      plot.append(svg("polyline", { points: path, fill: "none", stroke: colour, "stroke-width": 2 }));
      const text = svg("text", { x: W - pad - 40, y: column === 1 ? 15 : 30, fill: colour });
      text.textContent = label;
      plot.append(text);
    }
    const scale = svg("text", { x: 2, y: 15, fill: "#555" });
    scale.textContent = "±" + span.toFixed(1) + "″";
    plot.append(scale);
  }

  function poll() {
    fetch(stateUrl, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (state) {
        if (state.frames) {
          renderTable(state);
          renderDrift(state);
        }
        if (state.status !== "done") setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  poll();
})();
