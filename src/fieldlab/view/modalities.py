"""The parts of a field's page for the signals that are not images: audio (players, waveform and
spectrogram of the field against the original), video (a frame scrubber rendered on demand, the
reconstruction to play), volumes (a slice on each of three axes) and meshes (an orbitable surface extracted
at a chosen resolution). Each renders only what is shown, through `fieldlab render`'s path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError
from fieldlab.store import StoredField

AUDIO_SECONDS = 60
"""At most this much of a clip is rendered for the players and plots."""
SLICE = 320
"""A slice's or a frame's longer side on screen, in pixels."""


def _render(stored: StoredField, size, region, device: str) -> np.ndarray:
    from fieldlab.edit import render

    return render(stored, size=list(size), region=list(region), device=device).numpy()


def _display(values: np.ndarray) -> np.ndarray:
    """Field values (field range [-1, 1]) as 8-bit pixels; one channel grey, three or four as colour."""
    pixels = np.clip(np.rint((values + 1) / 2 * 255), 0, 255).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] in (1, 2) else pixels[..., :3]


def _screen(shape) -> list[int]:
    """A slice's size on screen: its longer side SLICE pixels, the field rendered between its samples when
    the signal is smaller."""
    scale = SLICE / max(shape)
    return [max(1, round(n * scale)) for n in shape]


def _original(stored: StoredField):
    """The signal the field was fitted to, or None when its source cannot be read as the field's grid."""
    from fieldlab.signals import load_signal

    source = stored.signal.source
    if not (source.startswith("sample:") or Path(source).is_file()):
        return None
    try:
        signal = load_signal(source)
    except (UserError, OSError, ValueError):
        return None
    return signal if tuple(signal.shape) == tuple(stored.signal.shape) else None


def audio_part(gr, stored: StoredField, device: str) -> None:
    info = stored.signal
    rate = int(info.extra["sample_rate"])
    n = min(info.shape[0], AUDIO_SECONDS * rate)
    field = _render(stored, [n], [(0.0, float(n))], device)
    original = _original(stored)
    with gr.Row():
        gr.Audio((rate, info.normalization.decode(field)), label="field", elem_id="audio-field")
        if original is not None:
            gr.Audio((rate, info.normalization.decode(original.values[:n])), label="original",
                     elem_id="audio-original")
    gr.Plot(_audio_figure(field, None if original is None else original.values[:n].numpy(), rate),
            label="waveform and spectrogram", elem_id="spectrogram")


def _audio_figure(field: np.ndarray, original: np.ndarray | None, rate: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("field", field)] + ([("original", original)] if original is not None else [])
    figure, axes = plt.subplots(len(rows), 2, figsize=(10, 2.2 * len(rows)), layout="constrained", squeeze=False)
    seconds = np.arange(len(field)) / rate
    for (name, values), (wave, spec) in zip(rows, axes):
        wave.plot(seconds, values[:, 0], linewidth=0.4)
        wave.set_title(f"{name}: waveform", fontsize=9)
        wave.set_xlabel("s")
        spec.specgram(values[:, 0], Fs=rate, NFFT=512, noverlap=256, cmap="magma")
        spec.set_title(f"{name}: spectrogram", fontsize=9)
        spec.set_xlabel("s")
        spec.set_ylabel("Hz")
    plt.close(figure)
    return figure


def video_part(gr, stored: StoredField, reconstruction: Path, device: str) -> None:
    frames, height, width = stored.signal.shape
    size = [1, *_screen((height, width))]

    def frame(index):
        i = int(index)
        values = _render(stored, size, [(i, i + 1.0), (0.0, float(height)), (0.0, float(width))], device)
        return _display(values[0])

    with gr.Row():
        scrubber = gr.Slider(0, frames - 1, value=0, step=1, label="frame", elem_id="frame")
    with gr.Row():
        image = gr.Image(frame(0), label="field, rendered at this frame", elem_id="video-frame")
        if reconstruction.is_file():
            gr.Video(str(reconstruction), label="reconstruction (play)", elem_id="video")
    scrubber.change(frame, scrubber, image)


def volume_part(gr, stored: StoredField, device: str) -> None:
    shape = stored.signal.shape
    names = ("depth", "row", "column")

    def slice_of(axis: int, index) -> np.ndarray:
        i = int(index)
        region = [(0.0, float(n)) for n in shape]
        region[axis] = (float(i), i + 1.0)
        others = [n for k, n in enumerate(shape) if k != axis]
        size = _screen(others)
        size.insert(axis, 1)
        return _display(np.take(_render(stored, size, region, device), 0, axis=axis))

    with gr.Row():
        for axis, name in enumerate(names):
            with gr.Column():
                slider = gr.Slider(0, shape[axis] - 1, value=shape[axis] // 2, step=1, label=f"{name} slice",
                                   elem_id=f"slice-{name}")
                image = gr.Image(slice_of(axis, shape[axis] // 2), label=f"across {name}s", height=SLICE,
                                 elem_id=f"volume-{name}")
                slider.change(lambda i, axis=axis: slice_of(axis, i), slider, image)


def mesh_part(gr, stored: StoredField, device: str) -> None:
    from fieldlab.signals.mesh_export import render_mesh, write_mesh

    folder = Path(tempfile.mkdtemp(prefix="fieldlab-view-"))

    def surface(resolution) -> str:
        r = int(resolution)
        vertices, faces = render_mesh(stored, size=[r, r, r], device=device)
        if len(faces) == 0:
            raise gr.Error(f"the field has no surface at {r}^3 (its zero level set is empty)")
        path = folder / f"surface-{r}.glb"
        write_mesh(path, vertices, faces)
        return str(path)

    with gr.Row():
        resolution = gr.Slider(16, 256, value=64, step=16, label="marching cubes resolution",
                               elem_id="mesh-resolution")
        extract = gr.Button("extract the surface", elem_id="extract")
    try:
        first = surface(64)
    except Exception:  # an empty level set: the page still opens, and says so on the next extraction
        first = None
    model = gr.Model3D(first, label="surface (drag to orbit)", elem_id="model3d", clear_color=(1, 1, 1, 1))
    extract.click(surface, resolution, model)
