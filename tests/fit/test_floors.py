"""Every registered field reaches a documented PSNR floor on a small real image.

scikit-image's camera at 48×48, about 12,000 parameters, 300 full-batch steps on the CPU, seed 0.
The floors sit about 3 dB under what each architecture reached when they were set (README's table), to
absorb differences between CPUs' arithmetic; a field that regresses (a broken init, a wrong activation,
a bad default lr) falls through them.
"""

import pytest

from fieldlab.fields import list_fields, make_config
from fieldlab.fit import FitConfig, fit
from fieldlab.signals import load_signal

FLOORS = {"siren": 68.0, "finer": 70.0, "gauss": 42.0, "wire": 25.0, "fourier": 57.0, "hashgrid": 44.0,
          # functa spends most of 12k parameters on the latent map: a single fit is not its use.
          "functa": 31.0, "spatial_functa": 32.0,
          # one partition at 48² (partitions keep ≥ 32 samples per axis by default): 82.8 dB when set
          "local-global": 79.0,
          # MINER's own coarse-to-fine trainer (fit() hands it over); 34.8 dB when set, blocks pruned early
          "miner": 31.0}


def test_every_registered_field_has_a_floor():
    assert set(FLOORS) == set(list_fields())


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_field_reaches_its_floor(name):
    signal = load_signal("sample:camera", max_size=48)
    config = make_config(name, in_dim=2, out_dim=1).adapt(signal.shape).with_params(12_000)
    # max_seconds=0: all 300 steps whatever the machine's load (a CPU's default 120 s budget cut WIRE, the
    # slowest, to about 100 steps under a loaded CI machine)
    result = fit(signal, config, FitConfig(steps=300, device="cpu", seed=0, max_seconds=0))
    assert result.metrics["steps"] == 300
    assert result.metrics["psnr"] >= FLOORS[name], f"{name}: {result.metrics['psnr']:.2f} dB"
    assert result.prediction.shape == signal.values.shape
