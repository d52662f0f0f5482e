"""Synthetic stand-ins for real files (a music clip, a scanned mesh, a rendered video), made in the tests so
that the suite runs from a clone with nothing beside it. Each is small enough to make in well under a second.
The session fixtures in conftest.py write them once into a temporary folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

CHORD_RATE = 44100
CHORD_SECONDS = 1.0


def write_chord_wav(path: Path) -> Path:
    """A 1 s mono 16-bit WAV at 44.1 kHz: an A-major triad whose notes fade at different rates, over a
    rising chirp, so that every 0.1 s span differs from the next (like music, unlike a steady tone)."""
    import soundfile as sf

    t = np.arange(round(CHORD_RATE * CHORD_SECONDS)) / CHORD_RATE
    notes = [(220.0, 0.30, 1.5), (277.18, 0.22, 3.0), (329.63, 0.18, 5.0)]  # (Hz, amplitude, decay per s)
    chord = sum(a * np.exp(-d * t) * np.sin(2 * np.pi * f * t) for f, a, d in notes)
    chirp = 0.08 * np.sin(2 * np.pi * (100 * t + 200 * t**2))  # 100 Hz rising to 500 Hz
    samples = np.rint((chord + chirp) * 2**15).astype(np.int16)
    sf.write(path, samples, CHORD_RATE, subtype="PCM_16")
    return path


@dataclasses.dataclass(frozen=True)
class BumpyMesh:
    """An off-centre, stretched, bumpy (so not convex) sphere with a small hole in its bottom, like a scan."""

    path: Path
    """The open mesh as an OBJ file."""
    vertices: np.ndarray
    """(v, 3) float64, as written."""
    faces: np.ndarray
    """(f, 3) int64: the open mesh's faces, as written."""
    hole: np.ndarray
    """(h, 3, 3) float64: the triangles cut out of the closed surface, which together with the file's close it."""


def write_bumpy_mesh(path: Path, *, hole_faces: int = 12) -> BumpyMesh:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    unit = sphere.vertices
    bumps = 1 + 0.15 * np.sin(3 * unit[:, 0]) * np.cos(4 * unit[:, 1]) + 0.1 * unit[:, 2] ** 2
    vertices = unit * bumps[:, None] * [1.0, 0.8, 0.6] + [2.0, -1.0, 0.5]
    faces = np.asarray(sphere.faces, dtype=np.int64)
    # The faces lowest in z make one patch around the bottom pole: a hole of about 1 % of the surface.
    lowest = np.argsort(vertices[faces].mean(axis=1)[:, 2])[:hole_faces]
    keep = np.ones(len(faces), dtype=bool)
    keep[lowest] = False
    open_mesh = trimesh.Trimesh(vertices, faces[keep], process=False)
    open_mesh.remove_unreferenced_vertices()  # the bottom pole's vertex went with its faces
    open_mesh.export(path)
    return BumpyMesh(path, np.asarray(open_mesh.vertices), np.asarray(open_mesh.faces, np.int64),
                     vertices[faces[lowest]])


TURNTABLE_FRAMES = 60
TURNTABLE_FPS = 60.0
TURNTABLE_SIZE = 128


def turntable_frames() -> np.ndarray:
    """(t, h, w, 3) uint8: a textured disc turning on a gradient, with detail down to a 2-pixel period so
    that shrinking it without anti-aliasing would alias."""
    n = TURNTABLE_SIZE
    y, x = (np.mgrid[:n, :n] + 0.5) / n * 2 - 1
    radius, angle = np.hypot(x, y), np.arctan2(y, x)
    frames = []
    for t in range(TURNTABLE_FRAMES):
        turned = angle + 2 * np.pi * t / TURNTABLE_FRAMES
        spokes = 0.5 + 0.5 * np.sign(np.sin(24 * turned))  # sharp edges, finer towards the centre
        disc = (radius < 0.8) * spokes
        fine = (np.arange(n)[None, :] + np.arange(n)[:, None] + t) % 2  # a one-pixel checkerboard
        rgb = np.stack([60 + 150 * disc + 40 * fine, 40 + 120 * disc + 60 * (y + 1) / 2, 90 + 100 * disc], -1)
        frames.append(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_turntable_mp4(path: Path) -> Path:
    """`turntable_frames` as an H.264 MP4 at 60 fps, through fieldlab's own writer."""
    from fieldlab.signals import Normalization, SignalInfo
    from fieldlab.signals.video import write_video

    info = SignalInfo(kind="video", shape=(), channels=3, normalization=Normalization("uint8", 0.0, 255.0),
                      domain=(), extra={"fps": TURNTABLE_FPS})
    write_video(path, turntable_frames(), info)
    return path

