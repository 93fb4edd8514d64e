// How the fairpool dashboard shows data: text formats, tables that become cards on a phone, and
// line charts drawn as SVG (no chart library). Everything is put in the page as text, never HTML.

export function percent(value) { return value == null ? "—" : `${(value * 100).toFixed(0)}%`; }

export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// --- formatting ------------------------------------------------------------------

export function ago(ts) {
  if (!ts) return "—";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${s.toFixed(0)}s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)}m ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)}h ago`;
  return new Date(ts * 1000).toLocaleString();
}

export function seconds(value) {
  if (value == null) return "—";
  if (value < 1) return `${(value * 1000).toFixed(0)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  if (value < 7200) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function runtime(job) {
  if (!job.started_at) return "—";
  return seconds((job.finished_at || Date.now() / 1000) - job.started_at);
}

export function badge(status) { return el("span", status, `badge s-${String(status).toLowerCase()}`); }

// --- tables ---------------------------------------------------------------

// columns: [{key, label, render(row) -> Node|string}]; on phones each row becomes a card whose
// cells carry their column's name (data-label). ``decorate(tr, row)`` sets the row's data-*
// attributes, which also say which row it is.
//
// A refresh (several a second while jobs run) updates the table in place: a row that is still
// the same row keeps its element, and a cell whose content is unchanged keeps its own. Replacing
// them all made a button under the pointer a new one between press and release, and the browser
// then fires no click: an admin's "Drain" went nowhere now and then.
export function table(node, columns, rows, decorate) {
  const labels = columns.map((column) => column.label).join("\n");
  if (node.dataset.columns !== labels || !node.tBodies.length) {
    node.replaceChildren();
    const head = node.createTHead().insertRow();
    for (const column of columns) head.append(el("th", column.label));
    node.createTBody();
    node.dataset.columns = labels;
  }
  const body = node.tBodies[0];
  if (!rows.length) {
    body.replaceChildren();
    const cell = body.insertRow().insertCell();
    cell.colSpan = columns.length;
    cell.className = "empty";
    cell.textContent = "nothing to show";
    return;
  }
  if (body.rows.length && body.rows[0].cells[0].className === "empty") body.replaceChildren();
  rows.forEach((row, index) => {
    const fresh = document.createElement("tr");
    if (decorate) decorate(fresh, row);
    let tr = body.rows[index];
    if (!tr || tr.dataset.row !== rowKey(fresh)) {
      fresh.dataset.row = rowKey(fresh);
      if (tr) tr.replaceWith(fresh); else body.append(fresh);
      tr = fresh;
    }
    columns.forEach((column, at) => {
      const td = tr.cells[at] || tr.insertCell();
      td.dataset.label = column.label;
      td.dataset.field = column.key;
      const value = column.render ? column.render(row) : row[column.key];
      const content = value instanceof Node ? value : document.createTextNode(value == null ? "—" : String(value));
      if (!sameContent(td, content)) td.replaceChildren(content);
    });
  });
  while (body.rows.length > rows.length) body.rows[body.rows.length - 1].remove();
}

function rowKey(tr) { return JSON.stringify(Object.entries(tr.dataset)); }

function sameContent(td, content) {
  if (td.childNodes.length !== 1) return false;
  const current = td.firstChild;
  if (content.nodeType === Node.TEXT_NODE) return current.nodeType === Node.TEXT_NODE && current.data === content.data;
  return current.nodeType === Node.ELEMENT_NODE && current.outerHTML === content.outerHTML;
}

// --- charts ------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  return node;
}

// series: [{name, values (null: a gap), color, dashed}]; the x axis is time (at: seconds).
export function lineChart(node, at, series, options = {}) {
  // Drawn at the container's own width, so that text keeps its size on a phone and a desktop.
  const width = Math.max(280, Math.round(node.clientWidth || 640)), height = 200;
  const left = 44, right = 10, top = 10, bottom = 24;
  node.replaceChildren();
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "plot" });
  const values = series.flatMap((s) => s.values.filter((v) => v != null));
  let max = options.max || Math.max(1e-9, ...values);
  if (!options.max) max = niceCeil(max);
  const t0 = at.length ? at[0] : 0, t1 = at.length ? at[at.length - 1] : 1;
  const x = (t) => left + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "gridline" }));
    const label = svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = options.percent ? percent(v) : formatNumber(v);
    chart.append(label);
  }
  const span = t1 - t0;
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = svg("text", { x: x(t), y: height - 6, "text-anchor": anchor, class: "axis" });
    label.textContent = t === t1 ? "now" : span < 120 ? `${Math.round(span)} s ago` : `${Math.round(span / 60)} min ago`;
    if (at.length > 1) chart.append(label);
  }
  for (const s of series) {
    let d = "", pen = false;
    s.values.forEach((v, i) => {
      if (v == null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(at[i]).toFixed(1)},${y(Math.min(v, max)).toFixed(1)}`;
      pen = true;
    });
    if (d) {
      chart.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.dashed ? 1.5 : 2.2,
        "stroke-dasharray": s.dashed ? "6 4" : "none", "vector-effect": "non-scaling-stroke" }));
    }
  }
  if (!at.length) {
    const text = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" });
    text.textContent = "no samples yet";
    chart.append(text);
  }
  node.append(chart);
  const legend = el("ul", null, "legend");
  for (const s of series.filter((s) => !s.hideLegend)) {
    const item = el("li");
    const swatch = svg("svg", { viewBox: "0 0 16 4", width: 16, height: 6, "aria-hidden": "true" });
    swatch.append(svg("line", { x1: 0, x2: 16, y1: 2, y2: 2, stroke: s.color, "stroke-width": 3,
      "stroke-dasharray": s.dashed ? "4 3" : "none" }));
    item.append(swatch, document.createTextNode(" " + s.name));
    legend.append(item);
  }
  node.append(legend);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function formatNumber(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1);
}
