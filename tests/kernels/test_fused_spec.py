"""Each field config answers its own `fused_spec()`; the kernel asks it and applies only its own limits."""

from __future__ import annotations

import dataclasses

import pytest

from fieldlab.fields import FieldConfig, SirenConfig, list_fields, make_config
from fieldlab.kernels import FusedSpec, fused_spec
from fieldlab.kernels.fused import MAX_WIDTH

EXPECTED = {  # what the kernel's per-name table said before the configs answered for themselves
    "siren": FusedSpec(2, 256, 3, 4, "sine", 30.0, 30.0),
    "gauss": FusedSpec(2, 256, 3, 4, "gauss", 20.0, 20.0),
    "fourier": FusedSpec(2, 256, 3, 4, "relu", 1.0, 1.0, encoding="gaussian", frequencies=256, prefix="mlp."),
}


@pytest.mark.parametrize("name", list_fields())
def test_every_field_answers_its_own_fused_spec(name):
    config = make_config(name, in_dim=2, out_dim=3)
    assert config.fused_spec() == EXPECTED.get(name)


def test_a_positional_fourier_field_counts_its_octaves_per_coordinate():
    config = make_config("fourier", in_dim=3, out_dim=1, hidden_dim=32, encoding="positional", num_frequencies=6)
    assert config.fused_spec().frequencies == 18 and config.fused_spec().encoded_dim == 3 + 36


def test_the_kernel_asks_the_config_and_turns_away_specs_past_its_limits():
    widest = make_config("siren", hidden_dim=MAX_WIDTH)
    assert fused_spec(widest) == widest.fused_spec()
    assert fused_spec(make_config("siren", hidden_dim=MAX_WIDTH + 1)) is None  # the config still describes itself
    assert make_config("siren", hidden_dim=MAX_WIDTH + 1).fused_spec() is not None
    assert fused_spec(make_config("wire")) is None and FieldConfig().fused_spec() is None


def test_a_new_mlp_config_is_fused_without_the_kernel_knowing_its_name():
    @dataclasses.dataclass(frozen=True)
    class Narrow(SirenConfig):  # not registered: the kernel must not look names up
        name = "narrow-siren-for-a-test"

    assert fused_spec(Narrow(hidden_dim=16, num_layers=2)) == FusedSpec(2, 16, 3, 2, "sine", 30.0, 30.0)
