// netspec serve: the page. The editor is CodeMirror 6 (editor.js, bundled from editors/web):
// it highlights the spec and, as you type, sends the text to the server and underlines the
// diagnostics that come back; the same answer carries the summary rows and the diagram's SVG.
// No spec text is ever evaluated here; the SVG is sanitized before it joins the page.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { index: 0, files: [], dirty: false, mtime: null, sort: null, view: null,
                editor: null };

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" },
                                       ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function setStatus(text) { $("status").textContent = text; }

// ---- the file -----------------------------------------------------------------------------

async function loadFiles() {
  state.files = await api("/api/files");
  const select = $("file");
  state.files.forEach((f) => {
    const option = document.createElement("option");
    option.value = f.index;
    option.textContent = f.name + (f.writable ? "" : " (read-only)");
    select.appendChild(option);
  });
  select.addEventListener("change", () => openFile(Number(select.value)));
  const compare = $("compare");
  state.files.forEach((f) => {
    const option = document.createElement("option");
    option.value = f.index;
    option.textContent = f.name;
    compare.appendChild(option);
  });
  compare.addEventListener("change", showComparison);
  await openFile(0);
}

async function openFile(index) {
  state.index = index;
  const body = await api(`/api/files/${index}`);
  state.editor.setText(body.text);  // checked at once: the diagnostics, table and diagram
  state.mtime = body.mtime;
  setDirty(false);
  $("banner").hidden = true;
}

function setDirty(dirty) {
  state.dirty = dirty;
  $("save").disabled = !dirty || !state.files[state.index].writable;
  document.title = (dirty ? "● " : "") + state.files[state.index].name + " — netspec";
}

async function save() {
  if (!state.dirty || !state.files[state.index].writable) return;
  const text = state.editor.text();
  try {
    const body = await api(`/api/files/${state.index}`,
                           { method: "PUT", body: JSON.stringify({ text }) });
    state.mtime = body.mtime;
    if (state.editor.text() === text) setDirty(false);
    setStatus("saved");
  } catch (error) {
    setStatus(`not saved: ${error.message}`);
  }
}

// `netspec fmt` on the editor's text, as an edit of the user's (undo takes it back).
async function format() {
  const text = state.editor.text();
  try {
    const body = await api(`/api/files/${state.index}/format`,
                           { method: "POST", body: JSON.stringify({ text }) });
    if (state.editor.text() !== text) return;  // typed meanwhile: format again later
    if (body.text !== text) state.editor.replace(body.text);
    setStatus("formatted");
  } catch (error) {
    setStatus(`not formatted: ${error.message}`);
  }
}

function watchDisk() {
  const events = new EventSource("/api/events");
  events.addEventListener("changed", async (event) => {
    const change = JSON.parse(event.data);
    if (change.index !== state.index || change.mtime === state.mtime) return;
    if (!state.dirty) {
      await openFile(state.index);
      setStatus("reloaded: the file changed on disk");
    } else {
      $("banner-text").textContent = "The file changed on disk; your edits are not saved.";
      $("banner").hidden = false;
    }
  });
}

// ---- checking as you type --------------------------------------------------------------------

// The editor's linter calls this after each pause in typing (and when a file is opened):
// one request answers with the diagnostics to underline, the table and the diagram.
async function check(text) {
  const index = state.index;
  let data;
  try {
    data = await api(`/api/files/${index}/check`,
                     { method: "POST", body: JSON.stringify({ text }) });
  } catch (error) {
    setStatus(`check failed: ${error.message}`);
    return [];
  }
  if (index !== state.index || state.editor.text() !== text) return [];  // a newer one comes
  showDiagnostics(data.diagnostics, data.file);
  const errors = data.diagnostics.filter((d) => d.severity === "error").length;
  setStatus(errors ? `${errors} error${errors > 1 ? "s" : ""}` : "ok");
  document.body.dataset.state = errors ? "errors" : "ok";
  if (data.ok) {
    state.checked = text;  // the rows' source positions are this text's
    $("title").textContent = data.title || "";
    $("total").textContent = totalsText(data.totals);
    showRows(data.rows || []);
    showDiagram(data.svg, data.svg_error);
  } else if (data.title) {  // a block library: no table, no diagram
    $("title").textContent = data.title;
    $("total").textContent = "";
    showRows([]);
    showDiagram(null, "");
  }
  return data.diagnostics.filter((d) => d.file === data.file);
}

// Hovering a layer's call or label (or a block's call) in the editor: its rows' output
// shape, parameters, MACs and receptive field, from the last check of this very text.
function hover(line, column, word) {
  if (state.checked !== state.editor.text()) return null;
  const rows = (state.rows || []).filter((r) =>
    (r.line === line && r.column === column && r.depth === 0) || r.name === word);
  if (rows.length === 0) return null;
  const box = document.createElement("div");
  box.className = "layer-info";
  for (const r of rows.slice(0, 6)) {
    const item = document.createElement("div");
    const name = document.createElement("b");
    name.textContent = r.name;
    item.appendChild(name);
    const rf = r.receptive_field && r.receptive_field.size != null
      ? `, receptive field ${[].concat(r.receptive_field.size).join("x")}` : "";
    item.appendChild(document.createTextNode(
      ` ${r.op}: output [${r.output_shape.join(", ")}], ${number(r.params)} parameters, ` +
      `${number(r.macs)} MACs${rf}`));
    box.appendChild(item);
  }
  if (rows.length > 6) box.appendChild(document.createTextNode(`and ${rows.length - 6} more`));
  return box;
}

// Completions at a place in the text, from the server (the language server's).
async function complete(text, line, column) {
  try {
    const body = await api(`/api/files/${state.index}/complete`,
                           { method: "POST", body: JSON.stringify({ text, line, column }) });
    return body.items;
  } catch (error) {
    return null;
  }
}

function totalsText(totals) {
  return totals ? `${number(totals.params)} parameters, ${number(totals.macs)} MACs` : "";
}

// ---- comparison: another spec's totals and diagram beside this one --------------------------------

async function showComparison() {
  const value = $("compare").value;
  $("compare-side").hidden = $("diagram2").hidden = value === "";
  if (value === "") return;
  const index = Number(value);
  try {
    const file = await api(`/api/files/${index}`);
    const data = await api(`/api/files/${index}/check`,
                           { method: "POST", body: JSON.stringify({ text: file.text }) });
    $("title2").textContent = data.title || state.files[index].name;
    const errors = data.diagnostics.filter((d) => d.severity === "error").length;
    $("total2").textContent = errors ? `${errors} error${errors > 1 ? "s" : ""}`
                                     : totalsText(data.totals);
    const box = $("diagram2");
    box.replaceChildren();
    if (data.svg) {
      const svg = sanitize(new DOMParser().parseFromString(data.svg, "image/svg+xml")
                           .documentElement);
      if (svg.nodeName === "svg") {
        svg.removeAttribute("width");
        svg.removeAttribute("height");
        box.appendChild(document.importNode(svg, true));
      }
    }
  } catch (error) {
    $("total2").textContent = error.message;
  }
}

function showDiagnostics(diagnostics, file) {
  const list = $("diagnostics");
  list.replaceChildren();
  for (const d of diagnostics) {
    const item = document.createElement("li");
    item.className = d.severity;
    const elsewhere = d.file && d.file !== file;  // in an imported file
    const where = d.line ? `${elsewhere ? d.file + ":" : ""}${d.line}:${d.column} ` : "";
    item.appendChild(document.createTextNode(where + d.message));
    if (d.hint) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = "hint: " + d.hint;
      item.appendChild(hint);
    }
    if (d.line && !elsewhere) {
      item.addEventListener("click", () => state.editor.jumpTo(d.line, d.column));
    }
    list.appendChild(item);
  }
}

// ---- summary table -----------------------------------------------------------------------------

function number(n) { return n == null ? "" : n.toLocaleString("en-US"); }

function showRows(rows) {
  state.rows = rows;
  renderRows();
}

function renderRows() {
  const body = $("summary").tBodies[0];
  body.replaceChildren();
  let rows = state.rows.slice();
  if (state.sort) {
    const { key, dir } = state.sort;
    const value = (r) => key === "rf" ? (r.receptive_field ? [].concat(r.receptive_field.size)[0] : 0)
      : key === "output_shape" ? r.output_shape.reduce((a, b) => a * b, 1) : r[key];
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      return (typeof x === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
    });
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.name = r.name;
    tr.dataset.kind = r.kind;
    if (r.kind === "block") tr.className = "block";
    const rf = r.receptive_field ? [].concat(r.receptive_field.size).join("x") : "";
    const cells = [r.name, r.op, "[" + r.output_shape.join(", ") + "]", number(r.params),
                   number(r.macs), rf];
    cells.forEach((text, k) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (k === 0 && !state.sort) td.style.paddingLeft = (8 + 16 * r.depth) + "px";
      if (k >= 3) td.className = "num";
      tr.appendChild(td);
    });
    if (r.kind === "block") tr.cells[0].addEventListener("click", () => toggleBlock(tr));
    tr.addEventListener("click", () => selectLayer(r.name, false));
    body.appendChild(tr);
  }
}

function toggleBlock(tr) {
  const collapsed = tr.classList.toggle("collapsed");
  const prefix = tr.dataset.name + ".";
  for (const row of $("summary").tBodies[0].rows) {
    if (row.dataset.name.startsWith(prefix)) row.hidden = collapsed;
  }
}

function sortBy(key) {
  state.sort = state.sort && state.sort.key === key
    ? (state.sort.dir === 1 ? { key, dir: -1 } : null) : { key, dir: 1 };
  renderRows();
}

// ---- diagram -------------------------------------------------------------------------------------

function sanitize(svg) {
  for (const bad of svg.querySelectorAll("script, foreignObject, iframe, object, embed")) {
    bad.remove();
  }
  for (const el of svg.querySelectorAll("*")) {
    for (const attr of Array.from(el.attributes)) {
      if (/^on/i.test(attr.name) || /href$/i.test(attr.name)) el.removeAttribute(attr.name);
    }
  }
  return svg;
}

function showDiagram(markup, error) {
  const box = $("diagram");
  if (!markup) {
    box.textContent = error || "";
    return;
  }
  const doc = new DOMParser().parseFromString(markup, "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") return;
  sanitize(svg);
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  const imported = document.importNode(svg, true);
  box.replaceChildren(imported);
  const base = imported.viewBox.baseVal;
  if (!state.view || state.view.file !== state.index) {
    state.view = { file: state.index, x: base.x, y: base.y, w: base.width, h: base.height };
  }
  applyView();
  for (const node of imported.querySelectorAll("g.node")) {
    const title = node.querySelector("title");
    if (title) {
      node.dataset.layer = title.textContent;
      node.addEventListener("click", (event) => {
        event.stopPropagation();
        selectLayer(title.textContent, true);
      });
    }
  }
}

function applyView() {
  const svg = $("diagram").querySelector("svg");
  const v = state.view;
  if (svg && v) svg.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
}

function enablePanZoom() {
  const box = $("diagram");
  box.addEventListener("wheel", (event) => {
    if (!state.view) return;
    event.preventDefault();
    const rect = box.getBoundingClientRect();
    const factor = event.deltaY > 0 ? 1.15 : 1 / 1.15;
    const v = state.view;
    const px = v.x + (event.clientX - rect.left) / rect.width * v.w;
    const py = v.y + (event.clientY - rect.top) / rect.height * v.h;
    Object.assign(v, { x: px - (px - v.x) * factor, y: py - (py - v.y) * factor,
                       w: v.w * factor, h: v.h * factor });
    applyView();
  }, { passive: false });
  let drag = null;
  box.addEventListener("mousedown", (event) => { drag = { x: event.clientX, y: event.clientY }; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (event) => {
    if (!drag || !state.view) return;
    const rect = box.getBoundingClientRect();
    const v = state.view;
    v.x -= (event.clientX - drag.x) / rect.width * v.w;
    v.y -= (event.clientY - drag.y) / rect.height * v.h;
    drag = { x: event.clientX, y: event.clientY };
    applyView();
  });
}

// A layer picked in the diagram or the table: its row and node are marked, and the editor
// shows where it is written (its own line, or the call of the block it comes from).
function selectLayer(name, fromDiagram) {
  const data = (state.rows || []).find((r) => r.name === name);
  if (data && data.line) state.editor.jumpTo(data.line, data.column, false);
  for (const row of $("summary").tBodies[0].rows) {
    const hit = row.dataset.name === name;
    row.classList.toggle("selected", hit);
    if (hit && fromDiagram) {
      row.hidden = false;
      row.scrollIntoView({ block: "nearest" });
    }
  }
  for (const node of $("diagram").querySelectorAll("g.node")) {
    node.classList.toggle("selected", node.dataset.layer === name);
  }
}

// ---- wiring ----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  state.editor = window.NetspecEditor.create({
    parent: $("editor"), check, hover, complete, onChange: () => setDirty(true),
  });
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "s") {
      event.preventDefault();
      save();
    } else if (event.shiftKey && event.altKey && event.code === "KeyF") {
      event.preventDefault();
      format();
    }
  });
  $("save").addEventListener("click", save);
  $("format").addEventListener("click", format);
  $("reload").addEventListener("click", () => openFile(state.index));
  for (const th of $("summary").tHead.rows[0].cells) {
    th.addEventListener("click", () => sortBy(th.dataset.key));
  }
  enablePanZoom();
  loadFiles().then(watchDisk).catch((error) => setStatus(error.message));
});
