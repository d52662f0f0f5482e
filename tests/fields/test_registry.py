import dataclasses

import pytest
import torch

from fieldlab import UserError
from fieldlab.fields import (FieldConfig, SirenConfig, create_field, get_config_class, list_fields, make_config,
                             register_field)


def test_zoo_is_registered():
    assert {"siren", "fourier", "gauss", "wire", "finer", "hashgrid"} <= set(list_fields())


def test_duplicate_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_field("siren")(dataclasses.make_dataclass("Again", [], bases=(FieldConfig,), frozen=True))


def test_unknown_field_is_a_user_error():
    with pytest.raises(UserError, match="unknown field 'nope'.*siren"):
        get_config_class("nope")


def test_option_the_field_does_not_take_is_named():
    with pytest.raises(UserError, match="does not take --scales"):
        make_config("siren", scales=3)


def test_options_are_coerced_from_strings():
    config = make_config("siren", hidden_dim="32", omega0="20.5")
    assert config.hidden_dim == 32 and config.omega0 == 20.5
    assert make_config("fourier", encoding="positional").encoding == "positional"
    with pytest.raises(UserError, match="--encoding must be one of"):
        make_config("fourier", encoding="wavelet")
    with pytest.raises(UserError, match="--hidden-dim expects int"):
        make_config("siren", hidden_dim="wide")


@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_sizes_are_refused(value):
    with pytest.raises(UserError, match="--hidden-dim must be positive"):
        make_config("siren", hidden_dim=value)


def test_config_round_trips_through_a_dict():
    config = SirenConfig(in_dim=3, out_dim=1, hidden_dim=17, omega0=12.0)
    assert SirenConfig.from_dict(config.to_dict()) == config


def test_create_field_builds_the_module():
    field = create_field("siren", in_dim=2, out_dim=3, hidden_dim=8)
    assert field(torch.zeros(5, 2)).shape == (5, 3)
