"""No leftovers after a kill: SIGTERM removes what is half-written, and the next writer of the same output
removes what a harder kill left beside it (temporary folders, partial files, an old copy moved aside)."""

import os
import signal
import subprocess
import sys
import textwrap

from fieldlab._safety import MARKER, leftovers, remove_leftovers

FIT = ["--max-size", "16", "--steps", "2", "--hidden-dim", "8", "--device", "cpu", "--quiet"]

# The real CLI, with the field's final write made slow so the signal lands in the middle of it.
SLOW_WRITE = textwrap.dedent("""
    import sys, time
    from fieldlab.cli.main import main
    from fieldlab.fit import job
    real = job.write_field
    def slow(folder, *args, **kwargs):
        real(folder, *args, **kwargs)
        print("writing", flush=True)
        time.sleep(60)
    job.write_field = slow
    main(sys.argv[1:])
""")


def test_sigterm_during_the_final_write_leaves_nothing_beside_the_output(tmp_path):
    out = tmp_path / "f"
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, "fit", "sample:camera", *FIT, "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert child.stdout.readline() == "writing\n", child.stderr.read()
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # mid-write: the folder is there
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1].startswith("fieldlab: error: interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".f.checkpoint.pt"] or not list(tmp_path.iterdir())


def test_the_next_fit_of_an_output_removes_what_a_kill_left_beside_it(tmp_path, cli):
    left = [tmp_path / ".f.ab12cd_3.tmp", tmp_path / ".f.zz99zz99.old", tmp_path / "..f.checkpoint.a1b2c3d4.partial.pt"]
    left[0].mkdir()
    (left[0] / MARKER).write_text('{"kind": "field", "version": 1}\n')
    left[1].mkdir()
    left[2].write_bytes(b"half")
    others = [tmp_path / ".g.ab12cd_3.tmp", tmp_path / ".f.notours", tmp_path / "..g.checkpoint.a1b2c3d4.partial.pt"]
    for path in others:
        path.write_text("not a leftover of f")
    assert leftovers(tmp_path / "f") == sorted(left)
    status, _, err = cli(["fit", "sample:camera", *FIT, "--out", tmp_path / "f"])
    assert status == 0, err
    assert not any(os.path.lexists(p) for p in left) and all(p.is_file() for p in others)


def test_partial_files_inside_a_folder_of_ours_are_leftovers_and_others_are_not(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text('{"kind": "run", "version": 1}\n')
    partial, kept = run / ".checkpoint.k9k9k9k9.partial.pt", run / "checkpoint.pt"
    partial.write_bytes(b"half")
    kept.write_bytes(b"whole")
    remove_leftovers(run)
    assert not partial.exists() and kept.exists()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / ".x.k9k9k9k9.partial.pt").write_bytes(b"not ours")
    assert leftovers(tmp_path / "theirs") == []  # no marker: fieldlab did not write that folder


def test_an_old_copy_is_put_back_when_a_kill_came_before_the_new_one_was_in(tmp_path):
    old = tmp_path / ".f.q1w2e3r4.old"
    old.mkdir()
    (old / "field.json").write_text("{}")
    remove_leftovers(tmp_path / "f")
    assert (tmp_path / "f" / "field.json").is_file() and not old.exists()
