"""Pictures written beside what fieldlab writes, for a person to look at: optional (matplotlib).

    DIR/training.png        loss and PSNR (or IoU) against step, seconds on the top axis (`fit`)
    DIR/error.png           |field − original| of an image with a colour bar, the PSNR in the title;
                            for audio, the spectrogram difference in dB (`fit`)
    DIR/preview.png         the extracted surface of a mesh fit from two angles (`fit`); `render` of a
    OUT.preview.png         mesh field writes one beside OUT
    DIR/blocks.png          MINER's blocks per scale with a legend (scale → colour, blocks active)

Every writer returns False and writes nothing when matplotlib is missing (one note in the log says so);
the data files never depend on these pictures.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger("fieldlab")

ERROR_MAP_KINDS = ("image", "audio")
"""The signal kinds that get an error.png (`write_error_map`)."""
MIN_SPECTROGRAM_SAMPLES = 4  # a window of 4 with a hop of 1: a shorter clip has no error map
MAX_PREVIEW_FACES = 6000  # a preview's triangles: enough to read the shape, drawn in well under a second
_noted: set[str] = set()


def pyplot(what: str):
    """matplotlib.pyplot on the file-only backend, or None (with one note naming `what`) when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _noted:  # one note a process, not one per picture
            _noted.add(what)
            log.info("no %s: install matplotlib (pip install 'fieldlab[all]') for fieldlab's pictures", what)
        return None
    return plt


def ready(what: str) -> bool:
    """Whether pictures can be drawn here: pyplot imported in this process (waiting for `preload`'s import
    to finish), so that a child forked now (`_pipeline.Forked`) draws without importing anything; else the
    one note, naming `what`."""
    return pyplot(what) is not None


def preload() -> None:
    """Import matplotlib's pyplot on a daemon thread, for pictures drawn later in the command: while a GPU
    fits, the interpreter mostly waits on the device, and the import (0.3-0.6 s) is off the command's path.
    Not on a CPU, where it would compete with the fitting for the cores. A missing matplotlib is left for
    `pyplot` to say. Only the import: a warm-up drawing here (fonts, mathtext; 0.3 s of the interpreter) took
    0.08 s off the forked pictures but added 0.2 s to a hash grid's steps on an H200 (BENCHMARKS.md)."""
    import threading

    def load() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except Exception:  # noqa: BLE001 -- `pyplot` imports it again where it is needed and says why not
            pass

    threading.Thread(target=load, name="fieldlab-plots-preload", daemon=True).start()


PNG = {"compress_level": 1}
"""PIL's PNG options for the pictures: zlib's fastest level. A 512² error map saves 0.05 s faster than at
PIL's default level 6, and its file came out smaller (noise compresses no better at 6); line plots grow a
little. The pictures are for looking at, written while a command waits."""


def save(fig, plt, path: Path) -> None:
    """`fig` to `path` as a PNG (temporary name, then renamed; `PNG`'s level) and closed."""
    from fieldlab._safety import replace_file

    replace_file(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, pil_kwargs=PNG))
    plt.close(fig)


# -- training.png ----------------------------------------------------------------------------------------
def read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl (a damaged line, as a kill may leave at the end, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def write_training_plot(log_path: Path, path: Path) -> bool:
    """training.png from log.jsonl: the loss (log scale) and the quality measure against step, with the
    seconds of fitting on the top axis; False when there is nothing to draw or no matplotlib."""
    records = read_log(log_path) if Path(log_path).is_file() else []
    if not records:
        return False
    plt = pyplot("training.png")
    if plt is None:
        return False
    steps = np.array([r["step"] for r in records], dtype=float)
    measures = [k for k in ("psnr", "iou") if any(isinstance(r.get(k), (int, float)) for r in records)]
    fig, axes = plt.subplots(1 + len(measures[:1]), 1, figsize=(6, 5 if measures else 3), sharex=True, squeeze=False)
    axes = axes[:, 0]
    # A mesh's occupancy fit logs its loss as bce (binary cross-entropy), the others as loss.
    loss = next((k for k in ("loss", "bce") if any(isinstance(r.get(k), (int, float)) for r in records)), "loss")
    _curve(axes[0], steps, records, loss, log_scale=True)
    for ax, key in zip(axes[1:], measures):
        _curve(ax, steps, records, key, label={"psnr": "PSNR (dB)", "iou": "IoU"}[key])
    axes[-1].set_xlabel("step")
    if len(steps) == 1:  # one logged step: a range around it (matplotlib warns on an empty one)
        axes[-1].set_xlim(steps[0] - 1, steps[0] + 1)
    seconds = np.array([r.get("seconds", np.nan) for r in records], dtype=float)
    if len(steps) > 1 and np.all(np.isfinite(seconds)) and np.all(np.diff(seconds) > 0) and np.all(np.diff(steps) > 0):
        # extended by the end segments' slopes: clamped, the margins beyond the first and last logged steps
        # mapped to one time, and the axis piled its ticks onto the edges
        ends_s, ends_t = _extended(steps, seconds)
        top = axes[0].secondary_xaxis("top", functions=(lambda s: np.interp(s, ends_s, ends_t),
                                                        lambda t: np.interp(t, ends_t, ends_s)))
        top.set_xlabel("seconds")
    last = records[-1]
    shown = ", ".join(f"{k.upper()} {last[k]:.2f}" for k in measures if isinstance(last.get(k), (int, float)))
    fig.suptitle(f"{int(last['step']):,} steps in {last.get('seconds', 0):.1f} s" + (f": {shown}" if shown else ""),
                 fontsize=10)
    fig.tight_layout()
    save(fig, plt, path)
    return True


def _extended(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Increasing x and y with one more point beyond each end (ten spans out, past any axis margin) on the end
    segments' lines, so that np.interp extrapolates them linearly instead of holding the end values."""
    reach = 10 * (x[-1] - x[0])
    before = x[0] - reach, y[0] - reach * (y[1] - y[0]) / (x[1] - x[0])
    after = x[-1] + reach, y[-1] + reach * (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.concatenate([[before[0]], x, [after[0]]]), np.concatenate([[before[1]], y, [after[1]]])


def _curve(ax, steps: np.ndarray, records: list[dict], key: str, *, log_scale: bool = False, label: str = "") -> None:
    values = np.array([r.get(key, np.nan) if isinstance(r.get(key), (int, float)) else np.nan for r in records],
                      dtype=float)
    ax.plot(steps, values, lw=1.2)
    if log_scale and np.any(values > 0):
        ax.set_yscale("log")
    ax.set_ylabel(label or key)
    ax.grid(alpha=0.3)


# -- error.png -------------------------------------------------------------------------------------------
def write_error_map(original: torch.Tensor, reconstruction: torch.Tensor, kind: str, path: Path, *,
                    metrics: dict | None = None, sample_rate: float | None = None) -> bool:
    """error.png for an image (h, w, c) or audio (n, c), both in the field range [-1, 1]: the absolute
    error as a fraction of the signal's range, or the spectrogram difference (`metrics`' PSNR and SNR in
    the title); False for other kinds."""
    if kind not in ERROR_MAP_KINDS:
        return False
    plt = pyplot("error.png")
    if plt is None:
        return False
    title = "".join(f", {key.upper()} {metrics[key]:.2f} dB" for key in ("psnr", "snr")
                    if isinstance((metrics or {}).get(key), (int, float)) and math.isfinite(metrics[key]))
    if kind == "image":
        error = ((reconstruction.float() - original.float()).abs() / 2).mean(-1).cpu().numpy()
        h, w = error.shape
        fig, ax = plt.subplots(figsize=(min(8.0, 2 + 5 * w / max(h, w)), min(8.0, 1 + 5 * h / max(h, w))))
        image = ax.imshow(error, cmap="magma", vmin=0, interpolation="nearest")
        ax.set_axis_off()
        fig.colorbar(image, ax=ax, label="|field − original| / range")
        ax.set_title(f"error{title}", fontsize=10)
    else:
        if original.shape[0] < MIN_SPECTROGRAM_SAMPLES:
            return False
        difference, seconds, top = _spectrogram_difference(original, reconstruction, sample_rate or 1.0)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        image = ax.imshow(difference, cmap="RdBu_r", vmin=-20, vmax=20, aspect="auto", origin="lower",
                          extent=(0, seconds, 0, top))
        ax.set_xlabel("seconds")
        ax.set_ylabel("Hz")
        fig.colorbar(image, ax=ax, label="field − original (dB)")
        ax.set_title(f"spectrogram difference{title}", fontsize=10)
    fig.tight_layout()
    save(fig, plt, path)
    return True


def _spectrogram_difference(original: torch.Tensor, reconstruction: torch.Tensor,
                            sample_rate: float) -> tuple[np.ndarray, float, float]:
    """(frequencies, frames) dB difference of the channel-mean magnitude spectrograms, the duration and
    the top frequency."""
    n = original.shape[0]
    # STFT's reflect padding needs window / 2 < n: short clips take a shorter window
    window = int(min(1024, 2 ** math.floor(math.log2(max(16, n // 8))), 2 ** math.floor(math.log2(n))))

    def decibels(wave: torch.Tensor) -> torch.Tensor:
        mono = wave.float().mean(-1).cpu()
        spectrum = torch.stft(mono, window, hop_length=window // 4, window=torch.hann_window(window),
                              return_complex=True).abs()
        return 20 * torch.log10(spectrum + 1e-4)

    difference = (decibels(reconstruction) - decibels(original)).numpy()
    return difference, n / sample_rate, sample_rate / 2


# -- preview.png -----------------------------------------------------------------------------------------
def write_mesh_preview(vertices: np.ndarray, faces: np.ndarray, path: Path, *, title: str = "") -> bool:
    """A preview of a triangle mesh from two angles (at most MAX_PREVIEW_FACES triangles, drawn evenly
    from all of them); False for an empty mesh or no matplotlib."""
    vertices, faces = np.asarray(vertices, dtype=float), np.asarray(faces, dtype=np.int64)
    if len(faces) == 0 or len(vertices) == 0:
        return False
    plt = pyplot("the mesh preview")
    if plt is None:
        return False
    shown = title
    if len(faces) > MAX_PREVIEW_FACES:
        faces = faces[np.linspace(0, len(faces) - 1, MAX_PREVIEW_FACES).astype(np.int64)]
        shown = f"{len(faces):,} drawn of {title}" if title else ""
    low, high = vertices.min(0), vertices.max(0)
    centre, half = (low + high) / 2, max((high - low).max() / 2, 1e-9)
    fig = plt.figure(figsize=(8, 4))
    for i, (elevation, azimuth) in enumerate(((20, 35), (20, 215))):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        ax.plot_trisurf(vertices[:, 0], vertices[:, 1], vertices[:, 2], triangles=faces, color="0.75",
                        linewidth=0, antialiased=False, shade=True)
        for axis, c in zip("xyz", centre):
            getattr(ax, f"set_{axis}lim")(c - half, c + half)
        ax.view_init(elevation, azimuth)
        ax.set_box_aspect((1, 1, 1), zoom=1.4)  # the default leaves the surface small in a wide margin
        ax.set_axis_off()
    fig.suptitle(shown, fontsize=9)
    fig.subplots_adjust(0, 0, 1, 0.93, 0, 0)
    save(fig, plt, path)
    return True


# -- blocks.png ------------------------------------------------------------------------------------------
def write_blocks_figure(picture: np.ndarray, colours: Sequence[Sequence[int]], kept: Sequence[tuple[int, int]],
                        path: Path, *, title: str) -> bool:
    """MINER's block picture (one panel per scale, coarsest left) with a legend (scale → colour, blocks
    active of all) and a title; False when matplotlib is missing."""
    plt = pyplot("the legend on blocks.png")
    if plt is None:
        return False
    from matplotlib.patches import Patch

    h, w = picture.shape[:2]
    width = min(14.0, max(5.0, 4 * w / h))
    fig, ax = plt.subplots(figsize=(width, width * h / w + 1.2))
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(color=np.asarray(colours[s % len(colours)]) / 255,
                     label=f"scale {s}{' (coarsest)' if s == 0 else ''}: {active:,} of {total:,} blocks active")
               for s, (active, total) in enumerate(kept)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(4, len(handles)),
              fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save(fig, plt, path)
    return True
