import os
import signal

import numpy as np
import pytest
import torch

from fieldlab.cli import main
from fieldlab.signals import load_signal

import _fixtures

if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n N`: N processes share the cores, one intra-op thread each
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def camera32():
    """A tiny real image: scikit-image's camera, anti-aliased down to 32×32."""
    return load_signal("sample:camera", max_size=32)


@pytest.fixture(scope="session")
def astronaut32():
    return load_signal("sample:astronaut", max_size=32)


@pytest.fixture(scope="session")
def chord_wav(tmp_path_factory):
    """A 1 s mono 16-bit WAV at 44.1 kHz standing in for a music clip (tests/_fixtures.py)."""
    return _fixtures.write_chord_wav(tmp_path_factory.mktemp("audio") / "chord.wav")


@pytest.fixture(scope="session")
def bumpy_mesh(tmp_path_factory):
    """An open bumpy-sphere OBJ standing in for a scanned mesh, with the triangles its hole lacks."""
    return _fixtures.write_bumpy_mesh(tmp_path_factory.mktemp("mesh") / "bumpy.obj")


@pytest.fixture(scope="session")
def turntable_mp4(tmp_path_factory):
    """A 60-frame 128×128 H.264 MP4 at 60 fps standing in for a rendered turntable video."""
    return _fixtures.write_turntable_mp4(tmp_path_factory.mktemp("video") / "turntable.mp4")


@pytest.fixture
def cli(capsys):
    """`cli(args)` runs `fieldlab ARGS` in-process and returns (exit status, stdout, stderr)."""

    def run(args):
        try:
            main([str(a) for a in args])
            status = 0
        except SystemExit as exit_:
            status = exit_.code or 0
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny fits spend more time synchronising two threads than computing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt():
    """Tests that send this process a real SIGINT expect Python's own handler, which turns it into the
    KeyboardInterrupt the CLI turns into exit 130. After the whole suite ran in one process (CI), such tests
    saw exit 0 where they pass alone (tests/test_matrix.py's SIGINT cells, then test_modal_sources' resume):
    an earlier test's library had left a handler of its own. Set here for every test, so a SIGINT is what a
    user's Ctrl-C is, whatever an earlier test left behind."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
