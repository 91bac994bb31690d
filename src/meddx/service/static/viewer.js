// meddx viewer: worklist and study page, vanilla JS, no external resources.
// The bearer token is pasted once, kept in sessionStorage (this tab only) and sent as an Authorization header;
// the page never puts it in a URL or a cookie. Every text from the server is inserted with textContent.
"use strict";

const TOKEN_KEY = "meddx.token";
const $ = (id) => document.getElementById(id);
const state = { study: null, z: 0, image: null, overlay: null, window: null, urls: [] };

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, as = "json") {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
  if (res.status === 401) { sessionStorage.removeItem(TOKEN_KEY); showLogin("The token was refused."); throw new Error("unauthorised"); }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(res.status + ": " + detail);
  }
  if (as === "json") return res.json();
  if (as === "blob") return res.blob();
  return res.arrayBuffer();
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function show(section) {
  for (const id of ["login", "worklist", "study"]) $(id).hidden = id !== section;
  $("signout").hidden = section === "login";
}

function showLogin(message) {
  show("login");
  $("login-error").textContent = message || "";
  $("token").focus();
}

function pct(p) { return p === null || p === undefined ? "-" : (100 * p).toFixed(1) + " %"; }

function isPositive(r) {
  return r.positive_class ? r.label === r.positive_class : false;
}

function findingText(r) {
  let t = r.label || "-";
  if (r.probability !== undefined && r.probability !== null) t += " (" + pct(r.probability) + ")";
  return t;
}

function statusText(r) {
  if (r.status === "ood" || r.in_distribution === false) return "out of distribution: review";
  return r.status || "done";
}

function fmtTime(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

async function loadWorklist() {
  show("worklist");
  const body = $("worklist-table").querySelector("tbody");
  body.replaceChildren();  // no stale rows while the list reloads
  const data = await api("/v1/studies");
  body.replaceChildren();
  $("worklist-count").textContent = data.studies.length + " processed stud" + (data.studies.length === 1 ? "y" : "ies");
  for (const r of data.studies) {
    const tr = el("tr");
    tr.dataset.id = r.id;
    tr.className = "study-row";
    const link = el("a", r.id);
    link.href = "#/study/" + encodeURIComponent(r.id);
    const c0 = el("td"); c0.appendChild(link); tr.appendChild(c0);
    tr.appendChild(el("td", r.label || "-", isPositive(r) ? "pos" : "neg"));
    tr.appendChild(el("td", pct(r.probability)));
    tr.appendChild(el("td", statusText(r), r.status === "ood" || r.in_distribution === false ? "status-ood" : ""));
    tr.appendChild(el("td", (r.model && r.model.name) || "-"));
    tr.appendChild(el("td", fmtTime(r.created)));
    tr.addEventListener("click", () => { location.hash = "#/study/" + encodeURIComponent(r.id); });
    body.appendChild(tr);
  }
}

function releaseUrls() { for (const u of state.urls) URL.revokeObjectURL(u); state.urls = []; }

async function loadStudy(id) {
  show("study");
  releaseUrls();
  $("study-id").textContent = "";
  const r = await api("/v1/studies/" + encodeURIComponent(id));
  state.study = r;
  $("study-id").textContent = r.id;
  const finding = $("finding");
  finding.replaceChildren();
  finding.appendChild(el("span", "Finding: "));
  finding.appendChild(el("strong", findingText(r), isPositive(r) ? "pos" : "neg"));
  if (r.threshold !== null && r.threshold !== undefined) finding.appendChild(el("div", "operating threshold " + Number(r.threshold).toFixed(3), "muted"));
  const ood = $("ood");
  ood.hidden = !(r.in_distribution === false || r.status === "ood");
  ood.textContent = ood.hidden ? "" : "This study looks unlike the model's training data (OOD score " +
    (r.ood_score !== undefined ? Number(r.ood_score).toFixed(2) : "?") + "): the probabilities may be unreliable.";
  if (r.prediction_set) {
    ood.hidden = false;
    ood.textContent += (ood.textContent ? " " : "") + "Prediction set: {" + r.prediction_set.join(", ") + "}.";
  }
  renderProbabilities(r);
  renderLesions(r);
  renderLinks(r);
  $("model").textContent = r.model ? (r.model.name + " - " + (r.model.version || "")) : "";
  await loadView(r);
}

function renderProbabilities(r) {
  const body = $("probabilities").querySelector("tbody");
  body.replaceChildren();
  for (const [name, p] of Object.entries(r.probabilities || {})) {
    const tr = el("tr");
    tr.appendChild(el("td", name));
    const td = el("td");
    const bar = el("span", null, "bar");
    bar.style.width = Math.round(120 * p) + "px";
    td.appendChild(bar);
    td.appendChild(el("span", pct(p)));
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function size(les) {
  if (les.volume_ml !== undefined) return Number(les.volume_ml).toFixed(2) + " ml";
  if (les.area_mm2 !== undefined) return Number(les.area_mm2).toFixed(1) + " mm²";
  if (les.extent_mm) return les.extent_mm.map((v) => Number(v).toFixed(1)).join(" × ") + " mm";
  return les.n_px + " px";
}

function renderLesions(r) {
  const body = $("lesions").querySelector("tbody");
  body.replaceChildren();
  const list = r.lesions || [];
  if (!list.length) { const tr = el("tr"); const td = el("td", "none", "muted"); td.colSpan = 4; tr.appendChild(td); body.appendChild(tr); }
  for (const les of list) {
    const tr = el("tr");
    tr.appendChild(el("td", les.id));
    let s = size(les);
    if (les.extent_mm && les.volume_ml === undefined && les.area_mm2 !== undefined) s += " (" + les.extent_mm.map((v) => Number(v).toFixed(1)).join(" × ") + " mm)";
    tr.appendChild(el("td", s));
    tr.appendChild(el("td", (les.centroid_px || []).map((v) => Math.round(v)).join(", ")));
    tr.appendChild(el("td", les.score === null || les.score === undefined ? "-" : Number(les.score).toFixed(2)));
    if (les.centroid_px && les.centroid_px.length === 3) {
      tr.style.cursor = "pointer";
      tr.title = "show this slice";
      tr.addEventListener("click", () => setSlice(Math.round(les.centroid_px[0] * sliceScale())));
    }
    body.appendChild(tr);
  }
}

function sliceScale() {
  const v = state.study && state.study.view;
  const inShape = state.study && state.study.input && state.study.input.shape;
  if (!v || !inShape || inShape.length < 3) return 1;
  return v.shape[0] / inShape[0];
}

function renderLinks(r) {
  const ul = $("links");
  ul.replaceChildren();
  for (const name of r.attachments || []) {
    const li = el("li");
    const a = el("a", name === "report.pdf" ? "Report (PDF)" : "Report (HTML)");
    a.href = "#";
    a.className = "report-link";
    a.addEventListener("click", async (ev) => {
      ev.preventDefault();
      const blob = await api("/v1/studies/" + encodeURIComponent(r.id) + "/files/" + name, "blob");
      const url = URL.createObjectURL(blob);
      state.urls.push(url);
      window.open(url, "_blank", "noopener");
    });
    li.appendChild(a);
    ul.appendChild(li);
  }
  if (!(r.attachments || []).length) ul.appendChild(el("li", "no report stored (POST /v1/report makes one)", "muted"));
  if (r.orthanc_url && r.orthanc_study) {
    const li = el("li");
    const a = el("a", "This study in Orthanc");
    a.href = r.orthanc_url + "/app/explorer.html#study?uuid=" + encodeURIComponent(r.orthanc_study);
    a.target = "_blank";
    a.rel = "noopener";
    a.id = "orthanc-link";
    li.appendChild(a);
    ul.appendChild(li);
  }
}

async function loadView(r) {
  const v = r.view;
  state.image = state.overlay = null;
  if (!v) { $("viewport").hidden = true; return; }
  $("viewport").hidden = false;
  const base = "/v1/studies/" + encodeURIComponent(r.id) + "/files/";
  const buf = await api(base + v.image, "buffer");
  state.image = v.dtype === "int16" ? new Int16Array(buf) : new Uint8Array(buf);
  state.overlay = v.overlay ? new Uint8Array(await api(base + v.overlay, "buffer")) : null;
  const [nz, h, w] = v.shape;
  for (const id of ["image-canvas", "overlay"]) { $(id).width = w; $(id).height = h; }
  // physical aspect ratio from the input's in-plane spacing
  const sp = (r.input && r.input.spacing) || [1, 1];
  const ratio = (sp[sp.length - 2] || 1) / (sp[sp.length - 1] || 1);
  $("image-canvas").style.aspectRatio = w + " / " + (h * ratio);
  $("overlay").style.height = "100%";
  const slider = $("slice");
  slider.max = String(nz - 1);
  slider.disabled = nz <= 1;
  $("overlay-kind").textContent = v.overlay_kind === "mask" ? "segmentation" : (v.overlay_kind ? "heatmap" : "no overlay");
  $("show-overlay").disabled = !v.overlay;
  const wc = $("window-control");
  wc.hidden = v.dtype !== "int16";
  const sel = $("window");
  sel.replaceChildren();
  if (v.presets) {
    for (const [name, [c, wd]] of Object.entries(v.presets)) {
      const o = el("option", name + " (" + c + "/" + wd + ")");
      o.value = c + "," + wd;
      sel.appendChild(o);
    }
    state.window = v.window || Object.values(v.presets)[0];
    sel.value = state.window.join(",");
  }
  const sc = $("slice-scores");
  sc.hidden = !(r.slice_scores && r.slice_scores.length === nz && nz > 1);
  renderKeys(r, base);
  setSlice(v.key_slices && v.key_slices.length ? v.key_slices[0] : Math.floor(nz / 2));
}

async function renderKeys(r, base) {
  const box = $("key-images");
  box.replaceChildren();
  const v = r.view;
  for (let i = 0; i < (v.key_images || []).length; i++) {
    const fig = el("figure");
    const img = el("img");
    img.alt = "key image";
    const z = v.key_slices[i];
    fig.appendChild(img);
    fig.appendChild(el("figcaption", v.shape[0] > 1 ? "slice " + (z + 1) : "image"));
    fig.addEventListener("click", () => setSlice(z));
    box.appendChild(fig);
    api(base + v.key_images[i], "blob").then((b) => { const u = URL.createObjectURL(b); state.urls.push(u); img.src = u; });
  }
}

function setSlice(z) {
  const v = state.study && state.study.view;
  if (!v || !state.image) return;
  state.z = Math.max(0, Math.min(v.shape[0] - 1, z | 0));
  $("slice").value = String(state.z);
  $("slice-label").textContent = (state.z + 1) + " / " + v.shape[0];
  $("viewport").dataset.slice = String(state.z);
  draw();
}

function drawScores() {
  const r = state.study, c = $("slice-scores");
  if (c.hidden) return;
  const s = r.slice_scores, n = s.length, ctx = c.getContext("2d"), w = c.width, h = c.height;
  ctx.clearRect(0, 0, w, h);
  const bw = w / n;
  for (let i = 0; i < n; i++) {
    const v = Math.max(0, Math.min(1, s[i]));
    ctx.fillStyle = r.threshold !== null && v >= r.threshold ? "#ff6b6b" : "#4fb3ff";
    ctx.fillRect(i * bw + 1, h - v * (h - 4), Math.max(1, bw - 2), v * (h - 4));
  }
  if (r.threshold !== null && r.threshold !== undefined) {
    ctx.fillStyle = "#ffb347";
    ctx.fillRect(0, h - r.threshold * (h - 4), w, 1);
  }
  ctx.strokeStyle = "#e6e9ec";
  ctx.strokeRect(state.z * bw + 0.5, 0.5, bw - 1, h - 1);
}

function draw() {
  const v = state.study.view;
  const [, h, w] = v.shape;
  const n = h * w, off = state.z * n;
  const ctx = $("image-canvas").getContext("2d");
  const img = ctx.createImageData(w, h);
  let lo = 0, hi = 255;
  if (v.dtype === "int16" && state.window) { lo = state.window[0] - state.window[1] / 2; hi = state.window[0] + state.window[1] / 2; }
  const scale = 255 / Math.max(hi - lo, 1e-6);
  for (let i = 0; i < n; i++) {
    const g = Math.max(0, Math.min(255, (state.image[off + i] - lo) * scale));
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = g;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  const octx = $("overlay").getContext("2d");
  const ov = octx.createImageData(w, h);
  if (state.overlay && $("show-overlay").checked) {
    const mask = v.overlay_kind === "mask";
    for (let i = 0; i < n; i++) {
      const a = state.overlay[off + i];
      if (mask) {
        if (a > 127) { ov.data[4 * i] = 255; ov.data[4 * i + 1] = 40; ov.data[4 * i + 2] = 40; ov.data[4 * i + 3] = 255; }
      } else if (a > 40) { // heatmap: red (low) to yellow (high)
        ov.data[4 * i] = 255; ov.data[4 * i + 1] = a; ov.data[4 * i + 2] = 0; ov.data[4 * i + 3] = Math.min(255, 60 + a);
      }
    }
  }
  octx.putImageData(ov, 0, 0);
  $("overlay").style.opacity = String($("opacity").value / 100);
  drawScores();
}

function route() {
  $("error").textContent = "";
  if (!token()) { showLogin(); return; }
  const m = location.hash.match(/^#\/study\/([A-Za-z0-9._-]+)$/);
  const p = m ? loadStudy(decodeURIComponent(m[1])) : loadWorklist();
  p.catch((e) => { if (e.message !== "unauthorised") $("error").textContent = "Could not load: " + e.message; });
}

function init() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    $("token").value = "";
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    route();
  });
  $("signout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); releaseUrls(); location.hash = "#/"; showLogin(); });
  $("slice").addEventListener("input", (e) => setSlice(Number(e.target.value)));
  $("opacity").addEventListener("input", (e) => { $("overlay").style.opacity = String(e.target.value / 100); });
  $("show-overlay").addEventListener("change", draw);
  $("window").addEventListener("change", (e) => { state.window = e.target.value.split(",").map(Number); draw(); });
  $("slice-scores").addEventListener("click", (e) => {
    const c = e.currentTarget, n = (state.study.slice_scores || []).length;
    if (n) setSlice(Math.floor((e.offsetX / c.clientWidth) * n));
  });
  const vp = $("viewport");
  vp.addEventListener("wheel", (e) => { if (!state.study) return; e.preventDefault(); setSlice(state.z + (e.deltaY > 0 ? 1 : -1)); }, { passive: false });
  vp.addEventListener("keydown", (e) => {
    if (e.key === "ArrowUp" || e.key === "ArrowRight") { setSlice(state.z + 1); e.preventDefault(); }
    if (e.key === "ArrowDown" || e.key === "ArrowLeft") { setSlice(state.z - 1); e.preventDefault(); }
  });
  window.addEventListener("hashchange", route);
  route();
}

init();
