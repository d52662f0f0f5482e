"""Fixtures of the view tests: a small image field, store and run, a server on a free loopback port, and a
headless Chromium (Debian's, driven by Playwright). Without the browser these tests fail, as CI installs it;
a developer without it deselects them with `-m "not browser"`."""

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]  # WebGL in software, for the 3-D view
# Babylon.js (gradio's Model3D) first asks for WebGPU, which a headless browser without a GPU has not, logs
# this as an error and goes on with WebGL: the one console error that is the browser's, not the page's.
BROWSER_ONLY = "A fatal error occurred during WebGPU creation/initialization"


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives a headless Chromium (apt-get install chromium)")


def run_cli(args) -> None:
    """fieldlab ARGS in-process, which must succeed."""
    from fieldlab.cli.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        assert exit_.code in (0, None), exit_.code


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def image_field(tmp_path_factory):
    out = tmp_path_factory.mktemp("view") / "camera"
    run_cli(["fit", "sample:camera", "--max-size", "40", "--steps", "20", "--device", "cpu", "--quiet", "--out", out])
    return out


@pytest.fixture(scope="session")
def image_store(tmp_path_factory):
    """30 small image SIRENs with PSNRs 20..49 dB in a shuffled order and two labels."""
    from fieldlab.fields import FieldStack, make_config
    from fieldlab.signals import Normalization, SignalInfo
    from fieldlab.store.field_store import FieldStoreWriter

    torch.manual_seed(0)
    path, n = tmp_path_factory.mktemp("view") / "store", 30
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=8, num_layers=2)
    stack = FieldStack.from_config(config, n)
    signal = SignalInfo(kind="image", shape=(12, 16), channels=1, normalization=Normalization("uint8", 0, 255),
                        domain=((0.0, 12.0), (0.0, 16.0)), source="test:view")
    per_field = {name: tuple(stack.params[name.replace(".", "__")].shape[1:]) for name in stack._names}
    writer = FieldStoreWriter.create(path, config=config, signal=signal, num_fields=n, chunk_fields=10,
                                     per_field=per_field, label_names=["cat", "dog"])
    psnr = 20.0 + np.random.default_rng(0).permutation(n)
    for chunk in writer.pending_chunks():
        rows = writer.chunk_rows(chunk)
        params = {k: stack.params[k.replace(".", "__")][rows.start:rows.stop].detach() for k in per_field}
        writer.write_chunk(chunk, params=params, psnr=psnr[rows.start:rows.stop],
                           labels=torch.tensor([r % 2 for r in rows]), source_index=np.arange(rows.start, rows.stop))
    return path


@pytest.fixture(scope="session")
def learn_run(tmp_path_factory):
    """A run folder as train and eval leave it: run.json, log.jsonl and eval/eval.json (no network is read)."""
    run = tmp_path_factory.mktemp("view") / "run"
    (run / "eval").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"format": "fieldlab.run", "net": "cnn4", "field": "siren",
                                              "metrics": {"steps": 30, "test_accuracy": 0.69}}))
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3}) + "\n"
                                           for s in range(5, 35, 5)))
    cells = [{"store": "store", "test": points, "resolution": side, "points": side * side,
              "accuracy": 0.5 + side / 100, "drop": 0.0} for points in ("grid", "qmc") for side in (8, 16)]
    (run / "eval" / "eval.json").write_text(json.dumps({"cells": cells, "metric": "accuracy"}))
    return run


@pytest.fixture
def serve():
    """serve(path) -> a started fieldlab.view.server.Server on a free loopback port; closed after the test."""
    from fieldlab.view.server import Server

    started = []

    def start(path):
        started.append(Server(path, port=free_port(), device="cpu").start())
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or deselect with -m 'not browser')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A page whose console errors and uncaught exceptions are collected in page.errors."""
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: m.type == "error" and BROWSER_ONLY not in m.text and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def write_untrained_field(folder: Path, signal, out_dim: int) -> Path:
    """A field DIR of an untrained SIREN for `signal` (a SignalInfo): what the view shows of a modality does
    not depend on the weights, and no fit is needed."""
    from fieldlab.fields import make_config
    from fieldlab.store.field_dir import write_field

    torch.manual_seed(0)
    config = make_config("siren", in_dim=len(signal.shape), out_dim=out_dim, hidden_dim=16, num_layers=2,
                         first_omega0=5.0)
    folder.mkdir(parents=True)
    write_field(folder, config.build(), config, signal, {"psnr": 10.0, "params": config.num_params(), "steps": 0,
                                                          "seconds": 0.0})
    return folder


@pytest.fixture(scope="session")
def modality_fields(tmp_path_factory, chord_wav):
    """Field DIRs of an audio clip (its original: the chord WAV), a video, a volume and a mesh."""
    from fieldlab.signals import Normalization, SignalInfo, load_signal

    root = tmp_path_factory.mktemp("modalities")
    audio = load_signal(chord_wav).info

    def info(kind, shape, channels, normalization, **extra):
        return SignalInfo(kind=kind, shape=shape, channels=channels, normalization=normalization,
                          domain=tuple((0.0, float(n)) for n in shape), extra=extra)

    return {
        "audio": write_untrained_field(root / "audio", audio, audio.channels),
        "video": write_untrained_field(root / "video", info("video", (6, 24, 32), 3, Normalization("uint8", 0, 255),
                                                            fps=6.0), 3),
        "volume": write_untrained_field(root / "volume", info("volume", (10, 12, 16), 1,
                                                              Normalization("float32", 0.0, 1.0)), 1),
        "mesh": write_untrained_field(root / "mesh", info("mesh", (32, 32, 32), 1, Normalization("bool", 0.0, 1.0)), 1),
    }


@pytest.fixture(scope="session")
def local_global_field(tmp_path_factory):
    out = tmp_path_factory.mktemp("view") / "local_global"
    run_cli(["fit", "sample:camera", "--max-size", "32", "--field", "local_global", "--partitions", "2",
             "--steps", "5", "--device", "cpu", "--quiet", "--out", out])
    return out
