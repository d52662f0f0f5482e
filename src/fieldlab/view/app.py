"""The page `fieldlab view` serves: a gradio app for a field DIR, a store or a run, mounted on a FastAPI app
that also answers /fieldlab/info and /fieldlab/tile (deep-zoom tiles rendered on demand)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError
from fieldlab.view._target import Target, find_evals, read_log, read_metrics
from fieldlab.view._zoom_js import ZOOM_CSS, ZOOM_HTML, ZOOM_JS
from fieldlab.view.sources import Sources, thumbnails

PAGE = 24
"""Thumbnails per page of a store's grid."""
SORTS = ("row", "PSNR, best first", "PSNR, worst first")


def build_app(target: Target, device: str = "cpu"):
    """(FastAPI app, Sources) for `target`; the gradio page is mounted at /."""
    import gradio as gr
    from fastapi import FastAPI

    api = FastAPI()
    if target.kind == "field":
        from fieldlab.store import load_field

        stored = load_field(target.path, device=device)
        sources = Sources(field=stored, device=device)
        blocks = _field_page(gr, target.path, stored, device)
    elif target.kind == "store":
        from fieldlab.store import FieldStore

        store = FieldStore(target.path)
        sources = Sources(store=store, device=device)
        blocks = _store_page(gr, store, sources)
    else:
        sources = Sources(device=device)
        blocks = _run_page(gr, target.path)
    _add_routes(api, sources)
    theme = gr.themes.Default(font=["sans-serif"], font_mono=["monospace"])  # no web fonts: nothing leaves the machine
    app = gr.mount_gradio_app(api, blocks, path="/", theme=theme, css=ZOOM_CSS, ssr_mode=False,
                              footer_links=[])
    return app, sources


def _add_routes(api, sources: Sources) -> None:
    from fastapi import Query
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    @api.get("/fieldlab/info")
    def info(src: str = Query(...)):
        try:
            return JSONResponse(sources.get(src).levels)
        except UserError as error:
            return PlainTextResponse(str(error), status_code=404)

    @api.get("/fieldlab/overlay")
    def overlay(src: str = Query(...), name: str = Query(...)):
        try:
            return JSONResponse(sources.get(src).overlay(name))
        except UserError as error:
            return PlainTextResponse(str(error), status_code=404)

    @api.get("/fieldlab/tile")
    def tile(src: str = Query(...), layer: str = "field", z: str = "0", x: str = "0", y: str = "0"):
        try:
            png = sources.get(src).tile(layer, z, x, y)
        except UserError as error:
            return PlainTextResponse(str(error), status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def _zoom(gr, src: str):
    return gr.HTML(src, html_template=ZOOM_HTML, js_on_load=ZOOM_JS, elem_id="zoom")


def _curve_frame(records: list[dict], keys: tuple[str, ...]):
    import pandas as pd

    rows = [{"step": r["step"], "metric": k, "value": float(r[k])} for r in records for k in keys
            if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
    return pd.DataFrame(rows, columns=["step", "metric", "value"])


def _metrics_table(metrics: dict):
    return [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in metrics.items()]


def _field_page(gr, path: Path, stored, device: str):
    s = stored.signal
    params = sum(p.numel() for p in stored.module.parameters())
    metrics = read_metrics(path / "metrics.json") or stored.metrics
    records = read_log(path / "log.jsonl")
    with gr.Blocks(title=f"fieldlab view {path.name}", analytics_enabled=False) as blocks:
        gr.Markdown(f"## {path.name}: {stored.config.name}, {params:,} parameters, "
                    f"{s.kind} {'x'.join(map(str, s.shape))}x{s.channels}")
        _signal_part(gr, path, stored, device)
        with gr.Row():
            gr.Dataframe(_metrics_table(metrics), headers=["metric", "value"], label="metrics", elem_id="metrics")
            if records:
                keys = tuple(k for k in ("psnr", "iou") if k in records[-1]) or ("loss",)
                gr.LinePlot(_curve_frame(records, keys), x="step", y="value", color="metric",
                            label="training curve", elem_id="curve")
    return blocks


def _signal_part(gr, path: Path, stored, device: str) -> None:
    """What the field's signal looks like, by kind."""
    from fieldlab.signals import reconstruction_name
    from fieldlab.view import modalities

    kind = stored.signal.kind
    if kind == "image":
        _zoom(gr, "field")
    elif kind == "audio":
        modalities.audio_part(gr, stored, device)
    elif kind == "video":
        modalities.video_part(gr, stored, path / reconstruction_name(stored.signal), device)
    elif kind == "volume":
        modalities.volume_part(gr, stored, device)
    elif kind == "mesh":
        modalities.mesh_part(gr, stored, device)
    else:
        _reconstruction(gr, path / reconstruction_name(stored.signal), kind)


def _reconstruction(gr, file: Path, kind: str) -> None:
    """The field's own reconstruction file, in the component made for its kind."""
    if not file.is_file():
        gr.Markdown(f"no {file.name} in this field DIR: render one with `fieldlab render`")
    elif kind == "audio":
        gr.Audio(str(file), label="field (reconstruction)", elem_id="audio")
    elif kind == "video":
        gr.Video(str(file), label="field (reconstruction)", elem_id="video")
    elif file.suffix in (".obj", ".glb", ".gltf", ".stl"):
        gr.Model3D(str(file), label="surface (reconstruction)", elem_id="model3d")
    else:
        gr.Image(str(file), label="field (reconstruction)", elem_id="reconstruction")


def _store_page(gr, store, sources: Sources):
    psnr = store.column("psnr")
    labels = store.column("labels")
    done = store.done
    names = store.label_names
    label_choices = ["all"] + (names or sorted({str(int(v)) for v in labels[done] if v >= 0}))

    def label_of(row: int) -> str:
        value = int(labels[row])
        return names[value] if 0 <= value < len(names) else (str(value) if value >= 0 else "unlabelled")

    def ordered(sort: str, label: str) -> list[int]:
        rows = np.flatnonzero(done)
        if label != "all":
            rows = np.array([r for r in rows if label_of(int(r)) == label], dtype=np.int64)
        if sort != "row":
            key = np.nan_to_num(psnr[rows], nan=-np.inf)
            rows = rows[np.argsort(-key if sort.startswith("PSNR, best") else key, kind="stable")]
        return [int(r) for r in rows]

    def page(sort: str, label: str, number):
        rows = ordered(sort, label)
        pages = max(1, math.ceil(len(rows) / PAGE))
        number = min(max(1, int(number or 1)), pages)
        shown = rows[(number - 1) * PAGE: number * PAGE]
        images = thumbnails(store, shown, sources.device) if shown else []
        gallery = [(im[..., 0] if im.shape[-1] == 1 else im, f"row {r} · {psnr[r]:.2f} dB · {label_of(r)}")
                   for r, im in zip(shown, images)]
        return gallery, number, f"page {number} of {pages} ({len(rows):,} fields)", shown

    def pick(shown: list[int], event: gr.SelectData):
        row = shown[event.index]
        return f"row-{row}", f"### row {row}: PSNR {psnr[row]:.2f} dB, label {label_of(row)}"

    pick.__annotations__["event"] = gr.SelectData  # gradio finds the event by its class, not by a string

    finite = psnr[done][np.isfinite(psnr[done])]
    summary = store.summary()
    with gr.Blocks(title=f"fieldlab view {store.path.name}", analytics_enabled=False) as blocks:
        gr.Markdown(f"## {store.path.name}: {summary['complete']:,} of {store.num_fields:,} {store.config.name} "
                    f"fields of {store.signal.kind}s {'x'.join(map(str, store.signal.shape))}")
        with gr.Row():
            sort = gr.Dropdown(list(SORTS), value="row", label="sort", elem_id="sort")
            label = gr.Dropdown(label_choices, value="all", label="label", elem_id="label")
            number = gr.Number(1, label="page", precision=0, minimum=1, elem_id="page")
            back, forward = gr.Button("previous", elem_id="previous"), gr.Button("next", elem_id="next")
        status = gr.Markdown(elem_id="page-status")
        shown = gr.State([])
        gallery = gr.Gallery(label="fields", columns=8, height="auto", allow_preview=False, elem_id="grid")
        gr.Plot(_histogram(finite), label="PSNR histogram", elem_id="histogram")
        chosen = gr.Markdown("click a field to see it", elem_id="chosen")
        zoom = _zoom(gr, "")
        outputs = [gallery, number, status, shown]
        for trigger in (sort.change, label.change):  # a new order starts at its first page
            trigger(lambda s, lab: page(s, lab, 1), [sort, label], outputs)
        for trigger in (number.submit, blocks.load):
            trigger(page, [sort, label, number], outputs)
        back.click(lambda s, lab, n: page(s, lab, (n or 1) - 1), [sort, label, number], outputs)
        forward.click(lambda s, lab, n: page(s, lab, (n or 1) + 1), [sort, label, number], outputs)
        gallery.select(pick, [shown], [zoom, chosen])
    return blocks


def _histogram(values: np.ndarray):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 2.2), layout="constrained")
    axes.hist(values, bins=min(40, max(5, len(values) // 10)), color="#4c72b0")
    axes.set_xlabel("PSNR (dB)")
    axes.set_ylabel("fields")
    plt.close(figure)
    return figure


def _run_page(gr, path: Path):
    from fieldlab._validate import check_keys, read_json

    info = check_keys(read_json(path / "run.json", f"{path}/run.json"), {"format": str}, f"{path}/run.json",
                      optional={"metrics": dict})
    records = read_log(path / "log.jsonl")
    evals = find_evals(path)
    with gr.Blocks(title=f"fieldlab view {path.name}", analytics_enabled=False) as blocks:
        gr.Markdown(f"## {path.name}: {info.get('net', '?')} trained on {info.get('field', '?')} fields")
        with gr.Row():
            gr.Dataframe(_metrics_table(info.get("metrics", {})), headers=["metric", "value"], label="run",
                         elem_id="metrics")
            if records:
                gr.LinePlot(_curve_frame(records, ("loss", "accuracy")), x="step", y="value",
                            color="metric", label="training curve", elem_id="curve")
            else:
                gr.Markdown("no log.jsonl in this run: its curve was not recorded")
        for file in evals:
            _eval_view(gr, file)
        if not evals:
            gr.Markdown(f"no eval.json in this run: `fieldlab eval {path} STORE --out {path}/eval` makes one")
    return blocks


def _eval_view(gr, file: Path) -> None:
    from fieldlab._validate import read_json

    data = read_json(file, str(file))
    cells = [c for c in data.get("cells", []) if isinstance(c, dict)]
    metric = str(data.get("metric", "accuracy"))
    gr.Markdown(f"### {file.parent.name}/{file.name}: {metric} by point set and resolution")
    gr.Plot(_heat_map(cells, metric), label="point set x resolution", elem_id="heatmap")
    columns = ["store", "test", "resolution", "points", metric, "drop"]
    gr.Dataframe([[c.get(k, "") for k in columns] for c in cells], headers=columns, label="eval table")


def _heat_map(cells: list[dict], metric: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({str(c.get("test")) for c in cells})
    sides = sorted({c.get("resolution") for c in cells if isinstance(c.get("resolution"), (int, float))})
    grid = np.full((len(sets), len(sides)), np.nan)
    for c in cells:  # a point set and resolution of several stores: their mean
        if str(c.get("test")) in sets and c.get("resolution") in sides and isinstance(c.get(metric), (int, float)):
            i, j = sets.index(str(c["test"])), sides.index(c["resolution"])
            grid[i, j] = np.nanmean([grid[i, j], c[metric]])
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * max(1, len(sides)), 0.8 + 0.5 * max(1, len(sets))),
                                layout="constrained")
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(sides)), [str(s) for s in sides])
    axes.set_yticks(range(len(sets)), sets)
    axes.set_xlabel("resolution")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            axes.text(j, i, f"{value:.3g}", ha="center", va="center", color="w", fontsize=8)
    figure.colorbar(image, ax=axes, label=metric)
    plt.close(figure)
    return figure
