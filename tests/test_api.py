"""The Python API's edges: what a researcher passes by hand is checked where the CLI would check it."""

from pathlib import Path

import pytest
import torch

import fieldlab
from fieldlab._errors import UserError
from fieldlab.edit import render
from fieldlab.fit import FitConfig
from fieldlab.store import FieldDirWriter, load_field, write_field


def test_a_fit_from_python_checks_dims_and_types_and_round_trips_through_a_folder(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "g.png", (torch.rand(12, 12) * 255).byte().numpy())
    signal = fieldlab.load_signal(tmp_path / "g.png")  # a Path, not only a str
    with pytest.raises(UserError, match="out_dim 1"):
        fieldlab.fit(signal, fieldlab.make_config("siren", in_dim=2, out_dim=3), FitConfig(steps=2))
    with pytest.raises(UserError, match="--steps must be a whole number"):
        fieldlab.fit(signal, fieldlab.make_config("siren", in_dim=2, out_dim=1), FitConfig(steps=2.5))
    result = fieldlab.fit(signal, fieldlab.make_config("siren", in_dim=2, out_dim=1, hidden_dim=8), FitConfig(steps=5))
    with FieldDirWriter(tmp_path / "f", False) as folder:
        write_field(folder, result.field, result.config, signal.info, result.metrics)
    stored = load_field(Path(tmp_path / "f"))
    assert torch.equal(render(stored), result.prediction.float())
    assert render(stored, size=6).shape == (6, 6, 1)  # one number for every axis
    with pytest.raises(UserError, match="increasing START:STOP"):
        render(stored, region=[(12, 0), (0, 12)])


def test_a_store_refuses_rows_it_does_not_have(tmp_path):
    from fieldlab.cli import main

    try:
        main(["fit-dataset", "sample:digits", "--limit", "6", "--steps", "2", "--out", str(tmp_path / "S"), "--quiet"])
    except SystemExit as exit_:
        assert not exit_.code
    store = fieldlab.store.FieldStore(tmp_path / "S")
    assert len(next(iter(store.read([5]).values()))) == 1
    for rows in ([6], [-1], [2, 9]):
        with pytest.raises(IndexError, match="outside"):
            store.read(rows)


def test_importing_fieldlab_asks_torch_for_huge_pages_unless_told_otherwise():
    import os
    import subprocess
    import sys

    # the variable as it is when fieldlab's import first imports torch (torch reads it at its first allocation)
    probe = ("import os, sys\n"
             "seen = []\n"
             "class Spy:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'torch' and not seen:\n"
             "            seen.append(os.environ.get('THP_MEM_ALLOC_ENABLE'))\n"
             "sys.meta_path.insert(0, Spy())\n"
             "import fieldlab\n"
             "print(seen[0])\n")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    for given, expected in ((None, "1"), ("0", "0")):
        run_env = env if given is None else {**env, "THP_MEM_ALLOC_ENABLE": given}
        out = subprocess.run([sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, check=True)
        assert out.stdout.split()[0] == expected, out
