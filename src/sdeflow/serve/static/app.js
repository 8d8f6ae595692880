// sdeflow playground: plain JS, no build step. Every generation is a job: POST → id → poll.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { runs: [], options: null, mask: null, shape: null, img: null };

function showError(msg) {
  const box = $("#error");
  box.textContent = msg || "";
  box.hidden = !msg;
}

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text ?? value;
  return o;
}

function fillSelects() {
  for (const sel of document.querySelectorAll("select[data-kind]")) {
    const runs = state.runs.filter(r => r.kind === sel.dataset.kind);
    sel.replaceChildren(...runs.map(r => option(r.id, r.name)));
    if (!runs.length) sel.append(option("", `(no ${sel.dataset.kind} runs listed)`));
  }
  for (const sel of document.querySelectorAll("select[data-solvers]")) {
    const keep = [...sel.options].filter(o => o.value === "");
    const solvers = state.options.solvers.filter(s => (sel.dataset.solvers !== "fixed" || !s.adaptive)
                                                   && (s.kind !== "auto" || "auto" in sel.dataset));
    sel.replaceChildren(...keep, ...solvers.map(s => option(s.name, `${s.name} (${s.kind})`)));
  }
  $("#explore-form [name=solvers]").value = "heun";
  for (const o of $("#explore-form [name=solvers]").options)
    o.selected = ["heun", "euler_maruyama"].includes(o.value);
  $("#sample-form [name=solver]").value = "auto";
  for (const o of $("#compare-form [name=solvers]").options) o.selected = o.value === "auto";
  for (const form of ["#sample-form", "#compare-form"]) fillSchedules($(form));
}

function runOf(form) { return state.runs.find(r => r.id === form.run.value); }

function fillSchedules(form) {
  const run = runOf(form);
  const files = run ? run.schedule_files.map(f => option(`file:${f}`, `tuned: ${f}`)) : [];
  form.schedule.replaceChildren(option("", "default"),
    ...state.options.schedules.map(s => option(s)), ...files);
}

function formBody(form, fields) {
  const body = { run: form.run.value };
  for (const [name, type] of Object.entries(fields)) {
    const el = form[name];
    if (type === "multi") { body[name] = [...el.selectedOptions].map(o => o.value); continue; }
    if (el.value === "") continue;
    body[name] = type === "int" ? parseInt(el.value, 10) : type === "float" ? parseFloat(el.value) : el.value;
  }
  return body;
}

// --- jobs -------------------------------------------------------------------------------------
async function runJob(panel, endpoint, body, render) {
  showError("");
  const box = $(`#${panel}-job`);
  let job;
  try {
    job = await api(endpoint, { method: "POST", headers: { "Content-Type": "application/json" },
                                body: JSON.stringify(body) });
  } catch (e) { showError(e.message); return; }
  const cancel = document.createElement("button");
  cancel.textContent = "Cancel"; cancel.className = "cancel";
  cancel.onclick = () => api(`/api/jobs/${job.id}/cancel`, { method: "POST" }).catch(e => showError(e.message));
  const bar = document.createElement("progress");
  const text = document.createElement("span");
  box.replaceChildren(bar, " ", text, " ", cancel);
  while (!["done", "error", "cancelled"].includes(job.status)) {
    if (job.total) { bar.max = job.total; bar.value = Math.min(job.step, job.total); }
    else bar.removeAttribute("value");
    text.textContent = job.status === "queued" ? `queued (${job.ahead} ahead)` :
      `running: step ${job.step}${job.total ? " / " + job.total : ""}`;
    await new Promise(r => setTimeout(r, 200));
    try { job = await api(`/api/jobs/${job.id}`); } catch (e) { showError(e.message); return; }
  }
  cancel.remove();
  bar.max = 1; bar.value = job.status === "done" ? 1 : 0;
  text.textContent = `${job.status} in ${job.wall_seconds?.toFixed(2)} s`;
  box.dataset.status = job.status;
  if (job.status === "error") showError(job.error);
  if (job.status === "done") render(job);
}

function img(src, alt, width) {
  const i = document.createElement("img");
  i.src = src; i.alt = alt; if (width) i.width = width;
  return i;
}

function figure(src, caption, width) {
  const f = document.createElement("figure");
  const c = document.createElement("figcaption");
  c.textContent = caption;
  f.append(img(src, caption, width), c);
  return f;
}

function statsTable(rows, cols) {
  const t = document.createElement("table");
  t.className = "stats";
  t.innerHTML = "<tr>" + cols.map(c => `<th>${c}</th>`).join("") + "</tr>";
  for (const r of rows) {
    const tr = t.insertRow();
    for (const c of cols) {
      const v = r[c];
      tr.insertCell().textContent = typeof v === "number" ? +v.toPrecision(4) : (v ?? "—");
    }
  }
  return t;
}

// --- panels -----------------------------------------------------------------------------------
function explore(ev) {
  ev.preventDefault();
  const body = formBody(ev.target, { t: "float", solvers: "multi", steps: "int", seed: "int", paths: "int" });
  runJob("explore", "/api/explore", body, job => {
    const ref = job.result.reference;
    const note = document.createElement("p");
    note.textContent = `reference: ${ref.reference} (NFE ${ref.nfe}); t = ${job.result.t}`;
    $("#explore-result").replaceChildren(img(job.images.explore, "explore"), note,
      statsTable(job.result.solvers, ["solver", "kind", "steps", "nfe", "seconds",
        "rms_error_vs_exact_ode", "sliced_wasserstein_to_data"]));
  });
}

// a result's warning (e.g. DPM-Solver-v3 statistics estimated for another condition)
function warned(result) { return result.warning ? ` — warning: ${result.warning}` : ""; }

function sample(ev) {
  ev.preventDefault();
  const body = formBody(ev.target, { solver: "str", steps: "int", schedule: "str", seed: "int",
    n: "int", class_label: "int", guidance: "float" });
  runJob("sample", "/api/sample", body, job => {
    const s = job.result;
    const a = document.createElement("a");
    a.href = job.images.grid + "?download=1"; a.textContent = "download PNG"; a.id = "sample-download";
    const cap = `${s.solver}, ${s.steps ?? "adaptive"} steps, ${s.schedule}, NFE ${s.nfe}, ` +
      `sampling ${s.seconds.toFixed(2)} s, wall ${job.wall_seconds.toFixed(2)} s` + warned(s);
    $("#sample-result").replaceChildren(figure(job.images.grid, cap), a);
  });
}

function compare(ev) {
  ev.preventDefault();
  const form = ev.target;
  const body = formBody(form, { solvers: "multi", schedule: "str", seed: "int", n: "int" });
  body.steps = form.steps.value.split(",").map(s => s.trim()).filter(Boolean).map(s => parseInt(s, 10));
  runJob("compare", "/api/compare", body, job => {
    $("#compare-result").replaceChildren(...job.result.panels.map(p =>
      figure(job.images[p.image], `${p.solver}, ${p.steps ?? "adaptive"} steps: NFE ${p.nfe}, ` +
        `${p.seconds.toFixed(2)} s` + warned(p), 160)));
  });
}

// --- inpainting: the mask canvas ----------------------------------------------------------------
const canvas = () => $("#mask-canvas");

function drawCanvas() {
  const c = canvas(), ctx = c.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, c.width, c.height);
  if (state.img) ctx.drawImage(state.img, 0, 0, c.width, c.height);
  if (!state.mask) return;
  const [h, w] = state.shape.slice(-2);
  ctx.fillStyle = "rgba(220, 30, 30, 0.6)";
  for (let i = 0; i < h; i++)
    for (let j = 0; j < w; j++)
      if (!state.mask[i][j]) ctx.fillRect(j * c.width / w, i * c.height / h, c.width / w, c.height / h);
}

function resetMask(hideRight = false) {
  const [h, w] = state.shape.slice(-2);
  state.mask = Array.from({ length: h }, () => Array.from({ length: w }, (_, j) => hideRight && j >= w / 2 ? 0 : 1));
  drawCanvas();
}

function paint(ev) {
  const c = canvas(), r = c.getBoundingClientRect();
  const [h, w] = state.shape.slice(-2);
  const j = Math.floor((ev.clientX - r.left) / r.width * w), i = Math.floor((ev.clientY - r.top) / r.height * h);
  const rad = Math.max(0, Math.round(w / 16));
  for (let di = -rad; di <= rad; di++)
    for (let dj = -rad; dj <= rad; dj++)
      if (state.mask[i + di] && state.mask[i + di][j + dj] !== undefined) state.mask[i + di][j + dj] = 0;
  drawCanvas();
}

function loadCanvasImage(src) {
  const im = new Image();
  im.onload = () => { state.img = im; drawCanvas(); };
  im.src = src;
}

async function selectInpaintRun() {
  const form = $("#inpaint-form"), run = runOf(form);
  state.upload = null;
  if (!run) return;
  state.shape = run.shape;
  resetMask();
  try {
    const t = await api(`/api/runs/${run.id}/test-images`);
    form.image.replaceChildren(...t.urls.map((u, i) =>
      option(i, `#${i}` + (t.labels ? ` (class ${t.labels[i]})` : ""))));
    loadCanvasImage(t.urls[0]);
  } catch (e) { showError(e.message); }
}

async function upload(ev) {
  const file = ev.target.files[0], form = $("#inpaint-form");
  if (!file) return;
  const data = new FormData();
  data.append("file", file);
  try {
    const u = await api(`/api/runs/${form.run.value}/uploads`, { method: "POST", body: data });
    state.upload = u.upload_id;
    showError("");
    loadCanvasImage(u.url);
  } catch (e) { showError(e.message); ev.target.value = ""; }
}

function inpaint(ev) {
  ev.preventDefault();
  const form = ev.target;
  const body = formBody(form, { method: "str", solver: "str", steps: "int", samples: "int", seed: "int" });
  if (state.upload) body.upload = state.upload; else body.image = parseInt(form.image.value, 10);
  if (body.method !== "colorize") body.mask = state.mask;
  runJob("inpaint", "/api/inpaint", body, job => {
    $("#inpaint-result").replaceChildren(
      figure(job.images.before, body.method === "colorize" ? "grey input" : "masked input", 160),
      figure(job.images.after, `${job.result.method} (${job.result.solver}), NFE ${job.result.nfe}` + warned(job.result), 320),
      figure(job.images.original, "original", 160));
  });
}

// --- start ------------------------------------------------------------------------------------
function tabs() {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.onclick = () => {
      for (const o of document.querySelectorAll("#tabs button")) o.classList.toggle("active", o === b);
      for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== b.dataset.tab;
      showError("");
    };
  }
}

async function status() {
  try {
    const s = await api("/api/status");
    $("#server-status").textContent = "jobs: " + (Object.entries(s.jobs).map(([k, v]) => `${v} ${k}`).join(", ") || "none");
  } catch (e) { $("#server-status").textContent = "server unreachable"; }
}

async function start() {
  tabs();
  try {
    [state.options, { runs: state.runs }] = await Promise.all([api("/api/options"), api("/api/runs")]);
  } catch (e) { showError("cannot reach the server: " + e.message); return; }
  fillSelects();
  $("#explore-form").onsubmit = explore;
  $("#sample-form").onsubmit = sample;
  $("#compare-form").onsubmit = compare;
  $("#inpaint-form").onsubmit = inpaint;
  for (const f of ["#sample-form", "#compare-form"]) $(f).run.onchange = () => fillSchedules($(f));
  const form = $("#inpaint-form");
  form.run.onchange = selectInpaintRun;
  form.image.onchange = () => { state.upload = null; form.file.value = ""; loadCanvasImage(`/api/runs/${form.run.value}/test-images/${form.image.value}.png`); };
  form.file.onchange = upload;
  $("#mask-clear").onclick = () => resetMask();
  $("#mask-half").onclick = () => resetMask(true);
  let down = false;
  canvas().onmousedown = e => { down = true; paint(e); };
  canvas().onmousemove = e => { if (down) paint(e); };
  window.addEventListener("mouseup", () => { down = false; });
  await selectInpaintRun();
  document.body.dataset.ready = "1";
  status(); setInterval(status, 3000);
}
start();
