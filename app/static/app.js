// Neural network playground front end: plain JS, no build step, no inline code (strict CSP).
"use strict";

const POLL_MS = 300;
const BOUNDARY_RESOLUTION = 60;
const METRICS_PAGE = 10000; // the most the metrics endpoint returns per request
const CLASS_COLOURS = [[37, 99, 235], [234, 88, 12], [22, 163, 74], [147, 51, 234]];
const FINAL_STATES = new Set(["completed", "stopped", "failed", "interrupted"]);

const $ = (id) => document.getElementById(id);

const state = {
  datasets: new Map(),
  bounds: [-1.5, 1.5],
  sample: null,
  grid: null,
  sessionId: null,
  metrics: [],
  task: "classification",
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A GET that meets a host in trouble (502/503/504 from a load balancer that does not retry, as the ALB,
// or no answer at all) is tried again twice, 0.5 s and 1 s later. Other methods never are: a POST or
// DELETE that failed that way may have been carried out.
const RETRY_STATUS = new Set([502, 503, 504]);
const RETRY_DELAYS_MS = [500, 1000];

async function fetchWithRetry(url, init) {
  const idempotent = (init.method || "GET").toUpperCase() === "GET";
  for (let attempt = 0; ; attempt++) {
    const last = !idempotent || attempt >= RETRY_DELAYS_MS.length;
    try {
      const response = await fetch(url, init);
      if (last || !RETRY_STATUS.has(response.status)) return response;
    } catch (error) {
      if (last) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
  }
}

// Models and sessions belong to whoever created them: this browser holds an owner token in an HttpOnly
// cookie (the page never sees it; it only remembers that it has one). The first change gets a token
// first. A change answered 401 anyway (a cookie that retention removed) did nothing, so the page gets a
// new token once and sends the same request again.
const OWNER_FLAG = "nnp-has-owner-cookie";
let ownerThisPage = false;

function remembered() {
  try {
    return window.localStorage.getItem(OWNER_FLAG) === "1";
  } catch {
    return false; // storage disabled: a token per page load
  }
}

async function becomeOwner() {
  const response = await fetch("/api/owners", { method: "POST" });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, (body && body.detail) || response.statusText);
  }
  try {
    window.localStorage.setItem(OWNER_FLAG, "1");
  } catch {
    // storage disabled: the cookie still works for this page's life
  }
  ownerThisPage = true;
}

async function api(path, options = {}, renewed = false) {
  const changes = (options.method || "GET").toUpperCase() !== "GET";
  if (changes && !ownerThisPage && !remembered()) await becomeOwner();
  const init = { ...options, headers: { "Content-Type": "application/json", ...(options.headers || {}) } };
  if (init.body !== undefined && typeof init.body !== "string") init.body = JSON.stringify(init.body);
  const response = await fetchWithRetry(path.startsWith("/api") ? path : `/api${path}`, init);
  if (response.status === 401 && !renewed) {
    await becomeOwner();
    return api(path, options, true);
  }
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const message = (body && (body.message || body.detail)) || response.statusText;
    throw new ApiError(response.status, typeof message === "string" ? message : JSON.stringify(message));
  }
  return body;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function intValue(id) {
  return Number.parseInt($(id).value, 10);
}

function floatValue(id) {
  return Number.parseFloat($(id).value);
}

// ---- data --------------------------------------------------------------------------------------

async function loadDatasets() {
  const datasets = await api("/datasets");
  const select = $("dataset");
  for (const ds of datasets) {
    state.datasets.set(ds.name, ds);
    const option = document.createElement("option");
    option.value = ds.name;
    option.textContent = `${ds.name} (${ds.task})`;
    select.append(option);
    state.bounds = ds.bounds;
  }
  if (datasets.length > 0) $("n-samples").max = String(datasets[0].max_samples);
}

function datasetParams() {
  return { n_samples: intValue("n-samples"), noise: floatValue("noise"), seed: intValue("data-seed") };
}

async function refreshSample() {
  const name = $("dataset").value;
  const spec = state.datasets.get(name);
  $("dataset-description").textContent = spec ? spec.description : "";
  state.task = spec ? spec.task : "classification";
  state.grid = null;
  const query = new URLSearchParams(Object.entries(datasetParams()).map(([k, v]) => [k, String(v)]));
  try {
    state.sample = await api(`/datasets/${encodeURIComponent(name)}/sample?${query}`);
    drawBoundary();
  } catch (error) {
    setStatus(error.message, true);
  }
}

// ---- layers ------------------------------------------------------------------------------------

function addLayer(width = 8, activation = "tanh") {
  const item = $("layer-template").content.firstElementChild.cloneNode(true);
  item.querySelector(".layer-width").value = String(width);
  item.querySelector(".layer-activation").value = activation;
  item.querySelector(".remove-layer").addEventListener("click", () => item.remove());
  $("layers").append(item);
}

function layerDefinitions() {
  return [...document.querySelectorAll("#layers .layer")].map((item) => ({
    width: Number.parseInt(item.querySelector(".layer-width").value, 10),
    activation: item.querySelector(".layer-activation").value,
    dropout: Number.parseFloat(item.querySelector(".layer-dropout").value) || 0,
  }));
}

// ---- training ----------------------------------------------------------------------------------

function setTraining(running) {
  $("train").disabled = running;
  $("stop").disabled = !running;
}

async function train() {
  setTraining(true);
  state.metrics = [];
  state.grid = null;
  drawCharts();
  drawBoundary();
  const dataset = $("dataset").value;
  try {
    setStatus("Creating model…");
    const model = await api("/models", {
      method: "POST",
      body: {
        name: `${dataset}-${Date.now().toString(36)}`,
        dataset,
        dataset_params: datasetParams(),
        layers: layerDefinitions(),
      },
    });
    state.task = model.task;
    const session = await api(`/models/${model.id}/sessions`, {
      method: "POST",
      body: {
        epochs: intValue("epochs"),
        learning_rate: floatValue("learning-rate"),
        batch_size: intValue("batch-size"),
        optimizer: $("optimizer").value,
        seed: intValue("seed"),
      },
    });
    state.sessionId = session.id;
    setStatus(`Session ${session.id} queued`);
    await poll(model.id, session.id);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    state.sessionId = null;
    setTraining(false);
  }
}

// Fetches the metrics recorded since the last epoch shown, page by page, and redraws the charts.
async function fetchMetrics(sessionId) {
  for (;;) {
    const lastEpoch = state.metrics.length ? state.metrics[state.metrics.length - 1].epoch : 0;
    const metrics = await api(`/sessions/${sessionId}/metrics?after_epoch=${lastEpoch}&limit=${METRICS_PAGE}`);
    state.metrics.push(...metrics.items);
    if (metrics.items.length < METRICS_PAGE) break;
  }
  drawCharts();
}

async function poll(modelId, sessionId) {
  for (;;) {
    await fetchMetrics(sessionId);
    const session = await api(`/sessions/${sessionId}`);
    setStatus(describe(session), session.status === "failed");
    if (FINAL_STATES.has(session.status)) {
      // The trainer flushes the last epochs before it records the final status, so they may have
      // landed after the metrics request above: fetch once more, now that nothing else can arrive.
      await fetchMetrics(sessionId);
      if (session.current_epoch > 0 && session.status !== "failed") {
        state.grid = await api(`/models/${modelId}/boundary?resolution=${BOUNDARY_RESOLUTION}`);
      }
      drawBoundary();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function describe(session) {
  const parts = [`Session ${session.id}: ${session.status}`, `epoch ${session.current_epoch}/${session.epochs}`];
  if (session.loss !== null) parts.push(`loss ${session.loss.toFixed(4)}`);
  if (session.accuracy !== null) parts.push(`accuracy ${(session.accuracy * 100).toFixed(1)}%`);
  if (session.error) parts.push(session.error);
  // A worker stopped (a deploy, a crash, a lost host) and another resumed from the last checkpoint.
  if (session.attempts > 1) parts.push(`resumed from epoch ${session.resumed_from_epoch ?? 0} (run ${session.attempts})`);
  return parts.join(" · ");
}

async function stop() {
  if (state.sessionId === null) return;
  try {
    await api(`/sessions/${state.sessionId}/stop`, { method: "POST" });
    setStatus("Stopping…");
  } catch (error) {
    setStatus(error.message, true);
  }
}

// ---- drawing -----------------------------------------------------------------------------------

function toCanvas(canvas, x, y) {
  const [low, high] = state.bounds;
  return [((x - low) / (high - low)) * canvas.width, (1 - (y - low) / (high - low)) * canvas.height];
}

function divergingColour(value, low, high) {
  // Blue for low values, white in the middle, orange for high values.
  const t = high > low ? Math.min(1, Math.max(0, (value - low) / (high - low))) : 0.5;
  const [a, b] = t < 0.5 ? [CLASS_COLOURS[0], [255, 255, 255]] : [[255, 255, 255], CLASS_COLOURS[1]];
  const u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
  return a.map((c, i) => Math.round(c + (b[i] - c) * u));
}

function valueRange(values) {
  let low = Infinity;
  let high = -Infinity;
  for (const v of values) {
    if (v < low) low = v;
    if (v > high) high = v;
  }
  return [low, high];
}

function drawBoundary() {
  const canvas = $("boundary");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const targets = state.sample && state.sample.targets;
  const range = targets ? valueRange(targets) : [0, 1];
  if (state.grid) {
    // One pixel per grid cell on a small canvas, scaled up smoothly: no seams between cells.
    const grid = state.grid;
    const n = grid.resolution;
    const cells = document.createElement("canvas");
    cells.width = n;
    cells.height = n;
    const cellCtx = cells.getContext("2d");
    const image = cellCtx.createImageData(n, n);
    for (let iy = 0; iy < n; iy++) {
      for (let ix = 0; ix < n; ix++) {
        const value = grid.values[iy][ix];
        const rgb = grid.confidence
          ? CLASS_COLOURS[value % CLASS_COLOURS.length]
          : divergingColour(value, range[0], range[1]);
        const alpha = grid.confidence ? 0.15 + 0.45 * grid.confidence[iy][ix] : 0.6;
        // Image rows run top to bottom; grid rows run from the lowest y upwards.
        const offset = ((n - 1 - iy) * n + ix) * 4;
        image.data.set([rgb[0], rgb[1], rgb[2], Math.round(alpha * 255)], offset);
      }
    }
    cellCtx.putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(cells, 0, 0, canvas.width, canvas.height);
  }
  if (!state.sample) return;
  const { points, labels } = state.sample;
  for (let i = 0; i < points.length; i++) {
    const [cx, cy] = toCanvas(canvas, points[i][0], points[i][1]);
    const rgb = labels ? CLASS_COLOURS[labels[i] % CLASS_COLOURS.length] : divergingColour(targets[i], range[0], range[1]);
    ctx.beginPath();
    ctx.arc(cx, cy, 3.5, 0, 2 * Math.PI);
    ctx.fillStyle = `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
    ctx.fill();
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  }
}

function drawLineChart(canvas, values, { min, max, colour, label }) {
  const ctx = canvas.getContext("2d");
  const pad = { left: 48, right: 10, top: 10, bottom: 22 };
  const w = canvas.width - pad.left - pad.right;
  const h = canvas.height - pad.top - pad.bottom;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#d0d5dd";
  ctx.lineWidth = 1;
  ctx.strokeRect(pad.left, pad.top, w, h);
  ctx.fillStyle = "#667085";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText(max.toPrecision(3), pad.left - 4, pad.top + 8);
  ctx.fillText(min.toPrecision(3), pad.left - 4, pad.top + h);
  ctx.textAlign = "left";
  ctx.fillText(label, pad.left + 4, canvas.height - 6);
  if (values.length === 0) return;
  ctx.textAlign = "right";
  ctx.fillText(`epoch ${values.length}`, pad.left + w, canvas.height - 6);
  const span = max - min || 1;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = pad.left + (values.length === 1 ? w : (i / (values.length - 1)) * w);
    const y = pad.top + h - ((v - min) / span) * h;
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.stroke();
}

function drawCharts() {
  const losses = state.metrics.map((m) => m.loss);
  const [, lossMax] = losses.length ? valueRange(losses) : [0, 1];
  drawLineChart($("loss-chart"), losses, { min: 0, max: lossMax, colour: "#ea580c", label: "loss" });
  const accuracies = state.metrics.filter((m) => m.accuracy !== null).map((m) => m.accuracy);
  const label = state.task === "regression" ? "accuracy (n/a for regression)" : "accuracy";
  drawLineChart($("accuracy-chart"), accuracies, { min: 0, max: 1, colour: "#2563eb", label });
}

// ---- start-up ----------------------------------------------------------------------------------

async function showVersion() {
  try {
    const response = await fetch("/version");
    // Readable from the private network only, unless nginx_internal_paths_public: elsewhere, no line.
    if (!response.ok) return;
    const v = await response.json();
    $("version").textContent = `release ${v.release_id} · torch ${v.torch_version} · ${v.device}`;
  } catch {
    // The page works without it.
  }
}

async function init() {
  $("add-layer").addEventListener("click", () => addLayer());
  $("train").addEventListener("click", train);
  $("stop").addEventListener("click", stop);
  for (const id of ["dataset", "n-samples", "noise", "data-seed"]) {
    $(id).addEventListener("change", refreshSample);
  }
  addLayer(8, "tanh");
  addLayer(8, "tanh");
  drawCharts();
  showVersion();
  try {
    await loadDatasets();
    await refreshSample();
    setStatus("Idle");
  } catch (error) {
    setStatus(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", init);
