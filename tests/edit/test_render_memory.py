"""A render the machine cannot hold is refused in one line before anything is allocated, from a per-value
cost (`Modality.render_bytes`, measured by benchmarks/render_memory.py)."""

import re

import pytest

import fieldlab._validate
from fieldlab import UserError
from fieldlab.edit import render_grid
from fieldlab.fields import make_config
from fieldlab.signals import get_modality, modality_names
from fieldlab.store import StoredField

def tiny_field(kind: str) -> StoredField:
    """A field of the modality's example signal (a sample rate, a normalization) that costs nothing to run."""
    _, info = get_modality(kind).example()
    config = make_config("siren", in_dim=len(info.shape), out_dim=info.channels, hidden_dim=2, num_layers=1)
    return StoredField(config.build().eval(), config, info, {})


def test_every_modality_has_a_render_cost():
    assert all(get_modality(kind).render_bytes > 0 for kind in modality_names())


def test_a_render_larger_than_free_memory_is_refused_with_the_numbers(monkeypatch):
    monkeypatch.setattr(fieldlab._validate, "available_memory", lambda: 500 * 2**20)
    field = tiny_field("audio")
    # 2·10⁷ stereo samples: 4·10⁷ values, about 1.7 GB at 46 bytes a value (the old guess, 12, said 0.45 GB)
    with pytest.raises(UserError) as error:
        render_grid(field, size=[2 * 10**7])
    message = str(error.value)
    assert "rendering 20000000 samples of 2 channel(s)" in message and "1.7 GB" in message
    assert "500.0 MB free" in message and "a smaller --size or --region" in message
    assert render_grid(field, size=[10**6])[0] == [10**6]  # 46 MB: never asked


def test_the_forward_pass_counts_only_on_the_cpu(monkeypatch):
    """A 4096-wide field's chunk of 2**18 points holds about 4 tensors of 4 GB each on the CPU."""
    monkeypatch.setattr(fieldlab._validate, "available_memory", lambda: 2**30)
    _, info = get_modality("image").example()
    config = make_config("siren", in_dim=2, out_dim=3, hidden_dim=4096, num_layers=1)
    field = StoredField(config.build().eval(), config, info, {})
    with pytest.raises(UserError, match="smaller --size"):
        render_grid(field, size=[512, 512])  # where the field's weights are
    render_grid(field, size=[512, 512], device="cuda")  # on an accelerator: only the output's 35 MB, never asked


def test_cli_render_refuses_before_writing(cli, tmp_path, monkeypatch):
    status, _, err = cli(["fit", "sample:camera", "--max-size", 12, "--steps", 2, "--hidden-dim", 4, "--device", "cpu",
                          "--quiet", "--out", tmp_path / "f"])
    assert status == 0, err
    monkeypatch.setattr(fieldlab._validate, "available_memory", lambda: 2**27)
    # 4·10⁶ grey pixels: 168 MB at 44 bytes a value and the forward pass's 17, 46 MB (never checked) at the old 12
    status, out, err = cli(["render", tmp_path / "f", "--size", 2000, 2000, "--out", tmp_path / "big.png"])
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(r"needs 1[78]\d\.\d MB of memory; this machine has 128.0 MB free", err) and "--region" in err
    assert not (tmp_path / "big.png").exists() and not list(tmp_path.glob("big.png*"))
