"""Never destroy what is not ours: --force, inputs, the current folder, temp files, locks, SIGTERM, full disks."""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fieldlab import _safety
from fieldlab._errors import UserError


def _image(path):
    import imageio.v3 as iio

    iio.imwrite(path, (np.arange(16 * 16 * 3) % 251).reshape(16, 16, 3).astype(np.uint8))
    return path


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(result, *words):
    status, _, stderr = result
    assert status == 2, stderr
    # A note logged, or a progress bar drawn, before the failure may precede its one line.
    lines = [line.split("\r")[-1] for line in stderr.strip().split("\n")]
    assert lines[-1].startswith("fieldlab: error:") and all(line.startswith("fieldlab: ") for line in lines), stderr
    assert sum(line.startswith("fieldlab: error:") for line in lines) == 1, stderr
    assert all(w in lines[-1] for w in words), stderr


def _fit(cli, source, out, *extra):
    return cli(["fit", source, "--max-size", "16", "--steps", "5", "--out", out, "--device", "cpu", "--quiet", *extra])


def test_force_never_replaces_a_folder_fieldlab_did_not_write_nor_its_own_input(tmp_path, cli):
    data = tmp_path / "data"
    data.mkdir()
    _image(data / "img.png")
    (data / "notes.txt").write_text("mine")
    before = _snapshot(data)
    _one_line(_fit(cli, data / "img.png", data, "--force"), "holds the input")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine too")
    _one_line(_fit(cli, data / "img.png", tmp_path / "other", "--force"), "fieldlab did not write")
    assert _snapshot(data) == before and (tmp_path / "other" / "notes.txt").read_text() == "mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "other"]


@pytest.mark.parametrize("args", [
    ["fit-dataset", "sample:digits", "--limit", "2"], ["train", "STORE"], ["train-sdf"],
    ["crop", "FIELD", "--keep", "0:4,0:4"], ["extend", "FIELD", "sample:camera"]])
def test_every_force_refuses_a_folder_fieldlab_did_not_write(tmp_path, cli, args):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    args = [str(tmp_path / a) if a.isupper() else a for a in args]
    _one_line(cli([*args, "--out", victim, "--force"]), "fieldlab did not write")
    assert [p.name for p in victim.iterdir()] == ["thesis.tex"]


def test_force_refuses_the_current_folder_and_the_folders_above_it(tmp_path, cli, monkeypatch):
    _image(tmp_path / "in.png")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "keep.txt").write_text("keep")
    monkeypatch.chdir(sub)
    _one_line(_fit(cli, "../in.png", ".", "--force"), "current folder")
    _one_line(_fit(cli, "../in.png", "..", "--force"), "holds the current folder")
    assert (sub / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "sub"]


def test_force_replaces_fieldlab_folders_marked_or_written_by_an_older_fieldlab(tmp_path, cli):
    _image(tmp_path / "in.png")
    out = tmp_path / "field"
    assert _fit(cli, tmp_path / "in.png", out)[0] == 0
    assert json.loads((out / ".fieldlab").read_text()) == {"kind": "field", "version": 1}
    (out / ".fieldlab").unlink()  # as an older fieldlab left it: field.json alone says it is ours
    status, _, stderr = _fit(cli, tmp_path / "in.png", out, "--force")
    assert status == 0, stderr
    _one_line(_fit(cli, out / "reconstruction.png", out, "--force"), "holds the input")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field", "in.png"]  # no temp folder, no lock left
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "zarr.json").write_text(json.dumps({"attributes": {"format": "fieldlab.fieldstore"}}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"format": "fieldlab.run"}))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "field.json").write_text("[1, 2]")
    kinds = [_safety.owner_kind(tmp_path / n) for n in ("store", "run", "fake", "field")]
    assert kinds == ["store", "run", None, "field"]


def test_render_refuses_a_folder_or_its_own_field_and_follows_no_planted_link(tmp_path, cli):
    _image(tmp_path / "in.png")
    field = tmp_path / "field"
    assert _fit(cli, tmp_path / "in.png", field)[0] == 0
    weights = (field / "field.safetensors").read_bytes()
    _one_line(cli(["render", field, "--out", field / "field.safetensors", "--force"]), "input")
    _one_line(cli(["render", field, "--out", tmp_path, "--force"]), "is a folder")
    assert (field / "field.safetensors").read_bytes() == weights
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"not yours")
    (tmp_path / ".out.partial.png").symlink_to(victim)  # the name the old writer used
    assert cli(["render", field, "--out", tmp_path / "out.png"])[0] == 0
    assert victim.read_bytes() == b"not yours" and (tmp_path / "out.png").stat().st_size > 0
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name and not p.is_symlink()]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_checkpoint_follows_no_link_planted_beside_it(tmp_path):
    import torch

    from fieldlab.store.field_dir import save_checkpoint

    victim = tmp_path / "victim"
    victim.write_text("not yours")
    (tmp_path / "ckpt.pt.partial").symlink_to(victim)
    save_checkpoint({"step": 3}, tmp_path / "ckpt.pt")
    assert victim.read_text() == "not yours"
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True) == {"step": 3}


@pytest.mark.parametrize("args", [["fit", "sample:camera", "--max-size", "16", "--steps", "5", "--quiet"],
                                  ["fit-dataset", "sample:digits", "--limit", "2", "--quiet"], ["train", "STORE"]])
def test_a_second_writer_of_a_locked_output_stops_with_one_line(tmp_path, cli, args):
    out = tmp_path / "out"
    args = [str(tmp_path / a) if a.isupper() else a for a in args]
    lock = tmp_path / ".out.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # what process 4242, writing `out`, holds
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242")
    try:
        _one_line(cli([*args, "--out", out, "--device", "cpu"]), "being written by another", "process 4242")
    finally:
        os.close(fd)
        lock.unlink()
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    with _safety.OutputLock(out) as held:  # a lock is removed with its release: nothing is left behind
        assert held.path == lock and lock.exists()
    assert not lock.exists()


def test_resuming_a_store_with_a_link_inside_is_refused(tmp_path):
    from fieldlab.store.field_store import FieldStoreWriter

    store = tmp_path / "store"
    (store / "params").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store / "params" / "w").symlink_to(elsewhere)
    with pytest.raises(UserError, match="symbolic link, params/w"):
        FieldStoreWriter.open(store)
    assert list(elsewhere.iterdir()) == []


def test_a_full_disk_or_a_read_only_target_is_one_line_and_leaves_nothing(tmp_path, cli, monkeypatch):
    import fieldlab.fit.job  # noqa: F401 (the package's `fit` function hides the module's name)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    _image(tmp_path / "in.png")
    monkeypatch.setattr(sys.modules["fieldlab.fit.job"], "write_field", full)
    _one_line(_fit(cli, tmp_path / "in.png", tmp_path / "field"), "cannot write", "No space left")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    assert _fit(cli, tmp_path / "in.png", tmp_path / "field")[0] == 0
    monkeypatch.setattr(sys.modules["fieldlab.signals.image"], "write_image", full)  # what the image modality calls
    _one_line(cli(["render", tmp_path / "field", "--out", tmp_path / "r.png"]), "r.png", "No space left")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field", "in.png"]


def test_a_read_only_parent_is_one_line(tmp_path, cli, monkeypatch):
    _image(tmp_path / "in.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: the refusal a user gets is the kernel's EACCES
        real_open = os.open

        def refuse_in_locked(path, *args, **kwargs):
            if str(path).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse_in_locked)
    try:
        _one_line(_fit(cli, tmp_path / "in.png", locked / "field"), str(locked))
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_sigterm_is_handled_like_sigint(tmp_path):
    """A real process: SIGTERM mid-fit removes the temporary folder, says so in one line and exits 143."""
    out = tmp_path / "X"
    process = subprocess.Popen([sys.executable, "-m", "fieldlab", "fit", "sample:camera", "--max-size", "32",
                                "--steps", "100000", "--device", "cpu", "--out", out],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120  # a busy CI machine may take long to import torch
    while not list(tmp_path.glob(".X.*.tmp")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert list(tmp_path.glob(".X.*.tmp")), "the fit never started"
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "fieldlab: error: interrupted;" in stderr and "Traceback" not in stderr
    assert not list(tmp_path.glob(".X.*.tmp")) and not out.exists()


def test_an_out_whose_folder_is_missing_says_so_for_every_writer(tmp_path, cli):
    _image(tmp_path / "in.png")
    for args in (["fit", tmp_path / "in.png", "--max-size", "16", "--steps", "2"],
                 ["fit-dataset", "sample:digits", "--limit", "2", "--steps", "1"]):
        _one_line(cli([*args, "--out", tmp_path / "missing" / "out"]), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
