"""The deep-zoom viewer: two canvases (the field blended with the original by a slider; the absolute error)
that pan and zoom together and draw tiles of the level that matches the zoom, fetched from /fieldlab/tile.
It runs as a gr.HTML component's js_on_load; the component's value is the tile source's name, and a new
value (a store row clicked) restarts the viewer on it."""

ZOOM_HTML = """
<div class="fl-zoom" data-src="${value}">
  <div class="fl-bar">
    <button class="fl-in" title="zoom in">+</button><button class="fl-out" title="zoom out">&minus;</button>
    <button class="fl-fit" title="fit">fit</button>
    <label>original <input class="fl-blend" type="range" min="0" max="1" step="0.05" value="0"></label>
    <select class="fl-overlay" style="display: none"><option value="">no overlay</option></select>
    <span class="fl-status"></span>
  </div>
  <div class="fl-panes">
    <figure><canvas class="fl-main" width="400" height="400"></canvas><figcaption class="fl-cap-main">field</figcaption></figure>
    <figure><canvas class="fl-err" width="400" height="400"></canvas><figcaption class="fl-cap-err">abs error</figcaption></figure>
  </div>
</div>
"""

ZOOM_CSS = """
.fl-zoom .fl-bar { display: flex; gap: 6px; align-items: center; margin-bottom: 6px; }
.fl-zoom .fl-bar button { min-width: 2.2em; }
.fl-zoom .fl-panes { display: flex; gap: 8px; flex-wrap: wrap; }
.fl-zoom figure { margin: 0; }
.fl-zoom canvas { background: #222; cursor: grab; image-rendering: pixelated; }
.fl-zoom figcaption { font-size: 12px; text-align: center; }
"""

ZOOM_JS = r"""
const box = element;
let overlay = null, pointer = null;
let mainCanvas = null, errCanvas = null, src = null, info = null, scale = 1, cy = 0, cx = 0;
const images = new Map();

function tileImage(layer, z, x, y) {
  const url = `/fieldlab/tile?src=${encodeURIComponent(src)}&layer=${layer}&z=${z}&x=${x}&y=${y}`;
  let img = images.get(url);
  if (!img) {
    img = new Image();
    img.onload = draw;
    img.onerror = () => { img.failed = true; };
    img.src = url;
    images.set(url, img);
  }
  return img;
}

function level() {
  const z = info.native + Math.ceil(Math.log2(scale) - 1e-9);
  return Math.max(0, Math.min(info.max, z));
}

function drawLayer(ctx, layer, alpha) {
  const z = level(), unit = info.tile / Math.pow(2, z - info.native);
  const w = ctx.canvas.width, h = ctx.canvas.height;
  const top = cy - h / 2 / scale, left = cx - w / 2 / scale;
  const y0 = Math.max(0, Math.floor(top / unit)), x0 = Math.max(0, Math.floor(left / unit));
  const y1 = Math.min(Math.ceil(info.height / unit), Math.ceil((top + h / scale) / unit));
  const x1 = Math.min(Math.ceil(info.width / unit), Math.ceil((left + w / scale) / unit));
  ctx.globalAlpha = alpha;
  for (let ty = y0; ty < y1; ty++) for (let tx = x0; tx < x1; tx++) {
    const img = tileImage(layer, z, tx, ty);
    if (!img.complete || img.failed) continue;
    const rows = Math.min(unit, info.height - ty * unit), cols = Math.min(unit, info.width - tx * unit);
    ctx.drawImage(img, (tx * unit - left) * scale, (ty * unit - top) * scale, cols * scale, rows * scale);
  }
  ctx.globalAlpha = 1;
}

function draw() {
  if (!info) return;
  const blend = parseFloat(box.querySelector('.fl-blend').value);
  for (const [canvas, layers] of [[mainCanvas, ['field', 'original']], [errCanvas, ['error']]]) {
    const ctx = canvas.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (layers[0] === 'error' && !info.original) continue;
    if (blend < 1 || !info.original) drawLayer(ctx, layers[0], 1);
    if (layers.length > 1 && info.original && blend > 0) drawLayer(ctx, layers[1], blend);
  }
  if (overlay) for (const canvas of [mainCanvas, errCanvas]) drawOverlay(canvas.getContext('2d'));
  const status = box.querySelector('.fl-status');
  status.textContent = blockText() + `level ${level()} of ${info.max}, ${scale >= 1 ? scale.toFixed(2) + ' px per sample' : (1 / scale).toFixed(2) + ' samples per px'}`;
  (box.querySelector('.fl-zoom') || box).dataset.level = level();
}

function psnrColour(db, alpha) {
  // red at 15 dB and below, green at 45 dB and above
  const t = Math.max(0, Math.min(1, (db - 15) / 30));
  return `rgba(${Math.round(255 * (1 - t))}, ${Math.round(200 * t)}, 60, ${alpha})`;
}

function drawOverlay(ctx) {
  const w = ctx.canvas.width, h = ctx.canvas.height;
  const top = cy - h / 2 / scale, left = cx - w / 2 / scale;
  overlay.boxes.forEach(([r0, r1, c0, c1], k) => {
    const x = (c0 - left) * scale, y = (r0 - top) * scale, bw = (c1 - c0) * scale, bh = (r1 - r0) * scale;
    if (x > w || y > h || x + bw < 0 || y + bh < 0) return;
    const db = overlay.psnr[k];
    if (db !== null) { ctx.fillStyle = psnrColour(db, 0.3); ctx.fillRect(x, y, bw, bh); }
    ctx.setLineDash(overlay.active[k] ? [] : [4, 4]);  // dashed: a pruned block, without a network
    ctx.strokeStyle = overlay.active[k] ? 'rgba(255,255,255,0.9)' : 'rgba(160,160,160,0.9)';
    ctx.strokeRect(x + 0.5, y + 0.5, bw - 1, bh - 1);
  });
  ctx.setLineDash([]);
}

function blockText() {
  if (!overlay || !pointer) return '';
  const row = cy + (pointer[1] - mainCanvas.height / 2) / scale, col = cx + (pointer[0] - mainCanvas.width / 2) / scale;
  const k = overlay.boxes.findIndex(([r0, r1, c0, c1]) => row >= r0 && row < r1 && col >= c0 && col < c1);
  if (k < 0) return '';
  const db = overlay.psnr[k];
  return `block ${k}${overlay.active[k] ? '' : ' (pruned)'}${db === null ? '' : ': ' + db.toFixed(2) + ' dB'} · `;
}

async function showOverlay(name) {
  overlay = null;
  if (name) {
    const reply = await fetch(`/fieldlab/overlay?src=${encodeURIComponent(src)}&name=${encodeURIComponent(name)}`);
    if (reply.ok) overlay = await reply.json();
  }
  (box.querySelector('.fl-zoom') || box).dataset.overlay = overlay ? overlay.boxes.length : 0;
  draw();
}

function fit() {
  scale = Math.min(mainCanvas.width / info.width, mainCanvas.height / info.height);
  cy = info.height / 2; cx = info.width / 2; draw();
}

function zoomAt(factor, px, py) {
  const most = Math.pow(2, info.max - info.native), least = Math.pow(2, -info.native) / 2;
  const next = Math.max(least, Math.min(most, scale * factor));
  const w = mainCanvas.width, h = mainCanvas.height;
  // keep the sample under the cursor where it is
  cx += (px - w / 2) / scale - (px - w / 2) / next; cy += (py - h / 2) / scale - (py - h / 2) / next;
  scale = next; draw();
}

async function start(name) {
  src = name; info = null; images.clear();
  if (!src) return;
  const reply = await fetch(`/fieldlab/info?src=${encodeURIComponent(src)}`);
  if (!reply.ok) { box.querySelector('.fl-status').textContent = await reply.text(); return; }
  info = await reply.json();
  box.querySelector('.fl-cap-err').textContent = `|field - original| x${info.error_gain}`;
  errCanvas.parentElement.style.display = info.original ? '' : 'none';  // a store row has no original here
  const select = box.querySelector('.fl-overlay');
  select.innerHTML = '<option value="">no overlay</option>' + (info.overlays || []).map((n) => `<option value="${n}">${n}</option>`).join('');
  select.style.display = (info.overlays || []).length ? '' : 'none';
  overlay = null;
  fit();
}

function bind() {
  mainCanvas = box.querySelector('.fl-main'); errCanvas = box.querySelector('.fl-err');
  for (const canvas of [mainCanvas, errCanvas]) {
    canvas.addEventListener('wheel', (e) => { e.preventDefault(); if (info) zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.offsetX, e.offsetY); }, {passive: false});
    let drag = null;
    canvas.addEventListener('pointerdown', (e) => { drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener('pointermove', (e) => {
      if (!drag || !info) return;
      cx -= (e.clientX - drag[0]) / scale; cy -= (e.clientY - drag[1]) / scale; drag = [e.clientX, e.clientY]; draw();
    });
    canvas.addEventListener('pointerup', () => { drag = null; });
  }
  box.querySelector('.fl-in').addEventListener('click', () => info && zoomAt(2, mainCanvas.width / 2, mainCanvas.height / 2));
  box.querySelector('.fl-out').addEventListener('click', () => info && zoomAt(0.5, mainCanvas.width / 2, mainCanvas.height / 2));
  box.querySelector('.fl-fit').addEventListener('click', () => info && fit());
  box.querySelector('.fl-blend').addEventListener('input', draw);
  box.querySelector('.fl-overlay').addEventListener('change', (e) => showOverlay(e.target.value));
  for (const canvas of [mainCanvas, errCanvas]) {
    canvas.addEventListener('mousemove', (e) => { pointer = [e.offsetX, e.offsetY]; if (overlay) draw(); });
  }
}

// The value (the tile source) changes when a store row is clicked: the template re-renders, so poll it.
setInterval(() => {
  const holder = box.querySelector('.fl-zoom') || box;
  const name = holder.dataset ? holder.dataset.src : null;
  const rebound = box.querySelector('.fl-main') !== mainCanvas;
  if (rebound) bind();
  if (name !== undefined && (name !== src || rebound)) start(name);
}, 250);
"""
