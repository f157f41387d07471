// blendae serve: the compare and runs views. Plain DOM, no build step.
// Every string from a file or the server goes in through textContent, never innerHTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const CODECS = [["blendae", "blendae"], ["webp", "WebP"], ["avif", "AVIF"]];
const EXT = { blendae: "bae", webp: "webp", avif: "avif" };
const MIME = { blendae: "application/octet-stream", webp: "image/webp", avif: "image/avif" };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

const fmtBytes = (n) => `${n.toLocaleString("en-US")} B`;
const fmtNum = (x, digits) => (x === null || x === undefined ? "–" : x.toFixed(digits));
const fmtPsnr = (x) => (x === null ? "∞ dB (lossless)" : `${x.toFixed(2)} dB`);

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function fmtEpochs(run) {
  if (run.epochs === null) return run.epochs_planned === null ? "–" : `0 / ${run.epochs_planned}`;
  const planned = run.epochs_planned;
  return planned === null || planned === run.epochs ? String(run.epochs) : `${run.epochs} / ${planned}`;
}

function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

// ---- decoding in the browser (bae.js) ------------------------------------------------------
// Every blendae file the server sends is decoded again here (bae.js, in a worker) and compared,
// pixel for pixel, with the server's decoding: the check that a .bae file decodes the same
// anywhere.
let worker = null;
const pending = new Map(); // request id → {resolve, reject}
let nextRequest = 0;

/** Decode .bae bytes in the worker with one of the named shipped models: RGBA pixels. */
function decodeInBrowser(bytes, names) {
  if (!worker) {
    worker = new Worker("/static/bae-worker.js", { type: "module" });
    worker.onmessage = ({ data }) => {
      const { resolve, reject } = pending.get(data.id);
      pending.delete(data.id);
      if (data.error === undefined) resolve(data);
      else reject(new Error(data.error));
    };
    worker.onerror = (event) => { // the worker itself failed (e.g. it could not load)
      for (const { reject } of pending.values()) reject(new Error(event.message || "worker failed"));
      pending.clear();
      worker = null;
    };
  }
  return new Promise((resolve, reject) => {
    const id = nextRequest++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, bytes, names });
  });
}

function bytesOf(b64) {
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** RGB(A) pixels of the server's PNG, exactly: no color conversion, no premultiplication. */
async function pngPixels(b64) {
  const blob = new Blob([bytesOf(b64)], { type: "image/png" });
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

/** Decode .bae bytes with bae.js and compare them with the server's PNG of the same image. */
async function checkInBrowser(data, pngB64, modelNames) {
  let ours;
  try {
    ours = await decodeInBrowser(data, modelNames);
  } catch (error) {
    return { ok: false, text: `decoding in your browser failed: ${error.message}` };
  }
  const theirs = await pngPixels(pngB64);
  if (ours.width !== theirs.width || ours.height !== theirs.height) {
    return { ok: false, text: `decoded in your browser: ${ours.width}×${ours.height}, ` +
      `not the server's ${theirs.width}×${theirs.height}` };
  }
  let differ = 0;
  for (let i = 0; i < ours.data.length; i += 4) {
    if (ours.data[i] !== theirs.data[i] || ours.data[i + 1] !== theirs.data[i + 1] ||
        ours.data[i + 2] !== theirs.data[i + 2]) differ++;
  }
  if (differ) {
    return { ok: false, text: `decoded in your browser: ${differ} of ${ours.width * ours.height} ` +
      "pixels differ from the server's" };
  }
  return { ok: true, text: "decoded in your browser: identical to the server's pixels" };
}

async function showBrowserCheck(figure, data, pngB64, modelNames) {
  const line = el("span", { class: "browser" }, "decoding in your browser…");
  figure.querySelector("figcaption").append(el("br"), line);
  let result;
  try {
    result = await checkInBrowser(data, pngB64, modelNames);
  } catch (error) {
    result = { ok: false, text: `decoding in your browser failed: ${error.message}` };
  }
  line.textContent = result.text;
  line.classList.toggle("error", !result.ok);
  figure.dataset.browser = result.ok ? "identical" : "different";
}

// ---- compare -------------------------------------------------------------------------------
// The last comparison, redrawn when the zoom changes: {name, file, result}; the file is sent
// again when the quality slider moves.
let current = null;
let qualityTimer = null;
let qualityRequest = 0; // the latest slider request: the answers to older ones are dropped

function zoomFor(width, height) {
  const choice = $("#zoom").value;
  if (choice !== "auto") return Number(choice);
  return Math.max(1, Math.min(8, Math.floor(192 / Math.max(width, height))));
}

function pngUrl(b64) {
  return `data:image/png;base64,${b64}`;
}

function downloadLink(b64, mime, filename, label) {
  return el("a", { href: `data:${mime};base64,${b64}`, download: filename, class: "download" }, label);
}

function tile({ codec, label, setting, b64png, width, height, zoom, stats, extra }) {
  const img = el("img", { src: pngUrl(b64png), alt: `${label} ${setting}`.trim() });
  img.style.width = `${width * zoom}px`;
  img.style.height = `${height * zoom}px`;
  const caption = el("figcaption", {}, el("span", { class: "name" }, `${label} ${setting}`.trim()));
  if (stats) {
    caption.append(
      el("span", { class: "bytes" }, fmtBytes(stats.bytes)), " · ",
      el("span", { class: "bpp" }, `${stats.bpp.toFixed(3)} bpp`), " · ",
      el("span", { class: "psnr" }, fmtPsnr(stats.psnr)),
    );
  }
  if (extra) caption.append(el("br"), extra);
  const dataset = { codec, setting };
  if (stats) dataset.bytes = String(stats.bytes);
  return el("figure", { class: "tile", dataset }, img, caption);
}

function stem(name) {
  return name.replace(/\.[^.]*$/, "") || "image";
}

/** A point's label: the model or quality, and a variable-rate model's quality ("general q63"). */
function settingOf(point) {
  return point.quality === null || point.quality === undefined ?
    point.setting : `${point.setting} q${point.quality}`;
}

/** One row: the original, the blendae file, and the WebP and AVIF files nearest in size. */
function rowElement(row, name, result, zoom) {
  const dataset = { model: row.blendae.setting };
  if (row.blendae.quality !== null && row.blendae.quality !== undefined) {
    dataset.quality = String(row.blendae.quality);
  }
  const line = el("div", { class: "row", dataset });
  line.append(tile({
    codec: "original", label: "original", setting: "", b64png: result.original.image,
    width: result.width, height: result.height, zoom, stats: null,
  }));
  for (const [codec, label] of CODECS) {
    const point = row[codec];
    const setting = settingOf(point);
    const delta = point.bytes - row.blendae.bytes;
    const extra = el("span", {},
      downloadLink(point.file, MIME[codec], `${stem(name)}-${setting.replace(" ", "-")}.${EXT[codec]}`,
        `download .${EXT[codec]}`),
      codec === "blendae" ? "" : el("span", { class: "delta" },
        ` (${delta >= 0 ? "+" : ""}${delta} B vs blendae)`),
      point.note ? el("span", { class: "note" }, el("br"), point.note) : null);
    const figure = tile({
      codec, label, setting, b64png: point.image,
      width: result.width, height: result.height, zoom, stats: point, extra,
    });
    line.append(figure);
    if (codec === "blendae") showBrowserCheck(figure, bytesOf(point.file), point.image, [point.setting]);
  }
  return line;
}

/** The slider of the variable-rate model's quality: moving it codes the image again. */
function qualityControl(result) {
  const row = result.rows.find((r) => r.blendae.setting === result.slider);
  if (!row) return null;
  const input = el("input", {
    type: "range", id: "quality", min: 0, max: 100, step: 1, value: row.blendae.quality,
  });
  input.setAttribute("aria-label", `${result.slider} quality, 0 to 100`);
  const shown = el("output", { id: "quality-value" }, String(row.blendae.quality));
  input.addEventListener("input", () => {
    shown.textContent = input.value;
    clearTimeout(qualityTimer); // code once the slider rests for a moment
    qualityTimer = setTimeout(() => recode(Number(input.value)), 200);
  });
  return el("div", { class: "quality", id: "quality-box" },
    el("label", {}, `${result.slider} quality `, input, " ", shown),
    el("span", { class: "explain" }, "0 smallest … 100 best: the image is coded again, with the " +
      "WebP and AVIF files nearest in size"), " ",
    el("span", { id: "quality-status", role: "status" }));
}

/** The slider moved: code the image with the variable-rate model at `quality`, swap its row. */
async function recode(quality) {
  const state = current;
  if (!state) return;
  const mine = ++qualityRequest;
  const status = $("#quality-status");
  setStatus(status, `coding at quality ${quality}…`);
  try {
    const answer = await api(`/api/quality?quality=${quality}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: state.file,
    });
    if (mine !== qualityRequest || current !== state) return; // a newer request or file
    const rows = state.result.rows;
    const i = rows.findIndex((r) => r.blendae.setting === state.result.slider);
    rows[i] = answer.row;
    const old = [...document.querySelectorAll("#results .row")]
      .find((node) => node.dataset.model === state.result.slider);
    const zoom = zoomFor(state.result.width, state.result.height);
    old.replaceWith(rowElement(answer.row, state.name, state.result, zoom));
    setStatus($("#quality-status"), "");
  } catch (error) {
    if (mine === qualityRequest) setStatus($("#quality-status"), `quality ${quality}: ${error.message}`, true);
  }
}

function showComparison() {
  const { name, result } = current;
  const zoom = zoomFor(result.width, result.height);
  const box = $("#results");
  box.replaceChildren();
  box.append(el("p", { class: "hint" },
    `${name}: ${result.width}×${result.height} ${result.channels === 1 ? "gray" : "RGB"}, ` +
    `${fmtBytes(result.original.bytes)} uploaded; shown at ${zoom}×. ` +
    "WebP and AVIF: the quality whose file is nearest in bytes to each blendae file."));
  if (result.slider) {
    const control = qualityControl(result);
    if (control) box.append(control);
  }
  for (const row of result.rows) box.append(rowElement(row, name, result, zoom));
}

function showDecoded(name, result, data) {
  current = null;
  const zoom = zoomFor(result.width, result.height);
  const box = $("#results");
  box.replaceChildren(el("p", { class: "hint" },
    `${name}: a ${result.width}×${result.height} image decoded from a .bae file of ` +
    `${settingOf({ setting: result.model, quality: result.quality })}, shown at ${zoom}×.`));
  const stats = { bytes: result.bytes, bpp: result.bpp, psnr: null };
  const figure = tile({
    codec: "decoded", label: "decoded", setting: "", b64png: result.image,
    width: result.width, height: result.height, zoom, stats: null,
    extra: el("span", {},
      el("span", { class: "bytes" }, fmtBytes(stats.bytes)), " · ",
      el("span", { class: "bpp" }, `${stats.bpp.toFixed(3)} bpp`), " · ",
      downloadLink(result.image, "image/png", `${stem(name)}.png`, "download .png")),
  });
  figure.dataset.bytes = String(result.bytes);
  box.append(el("div", { class: "row" }, figure));
  showBrowserCheck(figure, data, result.image, [result.model]);
}

async function handleFile(file, name) {
  const status = $("#status");
  const isBae = name.toLowerCase().endsWith(".bae");
  setStatus(status, isBae ? `decoding ${name}…` : `coding ${name} with every codec…`);
  $("#results").replaceChildren();
  try {
    const result = await api(isBae ? "/api/decode" : "/api/compare", {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file,
    });
    if (isBae) {
      showDecoded(name, result, new Uint8Array(await file.arrayBuffer()));
    } else {
      current = { name, file, result };
      showComparison();
    }
    setStatus(status, "");
  } catch (error) {
    current = null;
    setStatus(status, `${name}: ${error.message}`, true);
    if (isBae) setStatus(status, `${status.textContent}${await browserVerdict(file)}`, true);
  }
}

/** What bae.js says about a .bae file the server refused (with every shipped model). */
async function browserVerdict(file) {
  try {
    const names = (await api("/api/models")).models.map((m) => m.name);
    await decodeInBrowser(new Uint8Array(await file.arrayBuffer()), names);
    return " (your browser's decoder read it without an error)";
  } catch (error) {
    return ` (your browser's decoder: ${error.message})`;
  }
}

let samples = null;
let sampleIndex = 0;

async function loadSample() {
  const status = $("#status");
  try {
    if (samples === null) samples = (await api("/api/samples")).samples;
    if (!samples.length) throw new Error("no sample images are installed");
    const url = samples[sampleIndex++ % samples.length];
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    await handleFile(await response.blob(), url.split("/").pop());
  } catch (error) {
    setStatus(status, `sample: ${error.message}`, true);
  }
}

function setUpCompare() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) handleFile(file, file.name);
  });
  $("#file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) handleFile(file, file.name);
    event.target.value = "";
  });
  $("#sample").addEventListener("click", loadSample);
  $("#zoom").addEventListener("change", () => current && showComparison());
  api("/api/models").then((info) => {
    const models = info.models.map((m) => m.name + (m.default ? " (default)" : "")).join(", ");
    const slider = info.slider ? ` ${info.slider} codes at any quality 0..100 (the slider).` : "";
    $("#limits").textContent =
      `Shipped models: ${models}.${slider} Images up to ` +
      `${info.max_pixels.toLocaleString("en-US")} pixels; nothing is stored on the server.`;
  }).catch((error) => setStatus($("#status"), error.message, true));
}

// ---- runs ----------------------------------------------------------------------------------
function runLink(name) {
  return el("a", { href: `#run/${encodeURIComponent(name)}` }, name);
}

async function showRuns() {
  const status = $("#runs-status");
  const body = $("#runs-table tbody");
  setStatus(status, "reading runs…");
  try {
    const { root, runs } = await api("/api/runs");
    body.replaceChildren();
    for (const run of runs) {
      const state = run.broken ? `broken: ${run.problems.join("; ")}` :
        run.problems.length ? run.problems.join("; ") : "ok";
      body.append(el("tr", { class: run.broken ? "broken" : "", dataset: { run: run.name } },
        el("td", {}, runLink(run.name)),
        el("td", {}, run.model ?? "–"),
        el("td", {}, run.data ?? "–"),
        el("td", {}, run.preset ?? "–"),
        el("td", {}, run.protocol ?? "–"),
        el("td", { class: "num" }, fmtEpochs(run)),
        el("td", { class: "num" }, fmtNum(run.test_loss, 5)),
        el("td", { class: "num" }, run.test_psnr === null ? "–" : `${run.test_psnr.toFixed(2)} dB`),
        el("td", { class: "num" }, fmtNum(run.test_ssim, 4)),
        el("td", { class: "num" }, fmtSeconds(run.seconds)),
        el("td", {}, state)));
    }
    setStatus(status, runs.length ? `${runs.length} runs in ${root}` : `no run folders in ${root}`);
  } catch (error) {
    setStatus(status, error.message, true);
  }
}

function lossCurve(metrics) {
  // An SVG of train/test loss per epoch (log scale), for runs without loss.png.
  const series = [["train_loss", "#2a6fdb"], ["test_loss", "#d9822b"]];
  const points = metrics.filter((r) => typeof r.epoch === "number");
  const values = points.flatMap((r) => series.map(([k]) => r[k])).filter((v) => v > 0);
  if (points.length < 1 || !values.length) return null;
  const W = 480, H = 260, pad = 36;
  const lo = Math.log10(Math.min(...values)), hi = Math.log10(Math.max(...values));
  const e0 = points[0].epoch, e1 = points[points.length - 1].epoch;
  const x = (e) => pad + ((e - e0) / Math.max(1, e1 - e0)) * (W - 2 * pad);
  const y = (v) => H - pad - ((Math.log10(v) - lo) / Math.max(1e-9, hi - lo)) * (H - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "curve");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  for (const [key, color] of series) {
    const d = points.filter((r) => r[key] > 0).map((r) => `${x(r.epoch)},${y(r[key])}`).join(" ");
    if (!d) continue;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", d);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "2");
    svg.append(line);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", W - pad - 80);
    label.setAttribute("y", key === "train_loss" ? 18 : 34);
    label.setAttribute("fill", color);
    label.textContent = key.replace("_", " ");
    svg.append(label);
  }
  const axis = document.createElementNS(ns, "text");
  axis.setAttribute("x", pad);
  axis.setAttribute("y", H - 8);
  axis.textContent = `epochs ${e0}–${e1}, loss ${(10 ** lo).toPrecision(2)}–${(10 ** hi).toPrecision(2)} (log)`;
  svg.append(axis);
  return svg;
}

async function showRun(name) {
  const box = $("#run-detail");
  box.replaceChildren(el("p", {}, `reading ${name}…`));
  try {
    const run = await api(`/api/runs/${encodeURIComponent(name)}`);
    const parts = [el("h2", {}, run.name)];
    if (run.problems.length) {
      parts.push(el("p", { class: "error" },
        `${run.broken ? "broken run folder" : "warnings"}: ${run.problems.join("; ")}`));
    }
    const plots = el("div", { class: "plots" });
    for (const file of run.images) {
      const src = `/api/runs/${encodeURIComponent(run.name)}/files/${encodeURIComponent(file)}`;
      plots.append(el("figure", { class: "tile", dataset: { file } },
        el("img", { src, alt: file }), el("figcaption", {}, file)));
    }
    if (!run.images.includes("loss.png")) {
      const svg = lossCurve(run.metrics);
      if (svg) plots.prepend(el("figure", { class: "tile" }, svg, el("figcaption", {}, "metrics.jsonl")));
    }
    parts.push(plots);
    if (run.summary) parts.push(el("h3", {}, "summary.md"), el("pre", { class: "summary" }, run.summary));
    parts.push(el("h3", {}, "final.json"), el("pre", {}, JSON.stringify(run.final, null, 2)));
    parts.push(el("h3", {}, "config.json"), el("pre", {}, JSON.stringify(run.config, null, 2)));
    box.replaceChildren(...parts);
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, `${name}: ${error.message}`));
  }
}

// ---- routing: #compare, #runs, #run/NAME ---------------------------------------------------
function route() {
  const hash = location.hash || "#compare";
  const runsView = hash === "#runs" || hash.startsWith("#run/");
  $("#compare-view").hidden = runsView;
  $("#runs-view").hidden = !runsView;
  $("#nav-compare").classList.toggle("active", !runsView);
  $("#nav-runs").classList.toggle("active", runsView);
  if (runsView) {
    showRuns();
    if (hash.startsWith("#run/")) showRun(decodeURIComponent(hash.slice(5)));
    else $("#run-detail").replaceChildren();
  }
}

setUpCompare();
window.addEventListener("hashchange", route);
route();
