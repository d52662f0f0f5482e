"""Declared abilities: which fields and networks have them, and a field lacking one is refused in one line."""

import pytest

from fieldlab.fields import Croppable, Extendable, Latent, Partitioned, TrainsOnOwnPoints, get_config_class
from fieldlab.learn import BuiltForStore, SizedByPoints, net_config


@pytest.mark.parametrize("name, abilities", [
    ("siren", set()),
    ("local_global", {Croppable, Partitioned, Extendable}),
    ("miner", {Croppable, Partitioned}),
    ("functa", {Latent}),
    ("spatial_functa", {Latent}),
])
def test_fields_declare_their_abilities(name, abilities):
    config = get_config_class(name)()
    assert {a for a in (Croppable, Partitioned, Extendable, Latent) if isinstance(config, a)} == abilities


def test_an_ability_is_the_class_defining_its_members_none_blocks_it():
    class Crops:
        def cropped(self, state, box):
            return self, state

    class Blocked(Crops):
        cropped = None

    class CountOnly:  # Partitioned needs without_parts too
        num_parts = 3

    assert isinstance(Crops(), Croppable) and not isinstance(Blocked(), Croppable)
    assert not isinstance(CountOnly(), Partitioned)
    assert isinstance(get_config_class("local_global")().build(), TrainsOnOwnPoints)
    assert not isinstance(get_config_class("siren")().build(), TrainsOnOwnPoints)


def test_networks_declare_their_abilities():
    assert isinstance(net_config("dinet"), SizedByPoints) and not isinstance(net_config("mlp"), SizedByPoints)
    assert isinstance(net_config("seg_hyper"), BuiltForStore) and not isinstance(net_config("dinet"), BuiltForStore)


@pytest.fixture(scope="module")
def siren_dir(tmp_path_factory):
    from fieldlab.cli.main import main

    out = tmp_path_factory.mktemp("siren") / "S"
    main(["fit", "sample:camera", "--max-size", "16", "--steps", "2", "--hidden-dim", "8", "--device", "cpu",
          "--quiet", "--out", str(out)])
    return out


@pytest.mark.parametrize("args, message", [
    (["crop", "{dir}", "--remove", "0"], "field 'siren' has no partitions to remove"),
    (["crop", "{dir}", "--keep", "0:8,0:8"], "field 'siren' cannot be cropped (it is not partitioned)"),
    (["extend", "{dir}", "sample:camera", "--max-size", "32"], "field 'siren' cannot be extended (it is not partitioned)"),
])
def test_a_field_without_the_ability_is_refused_in_one_line(cli, siren_dir, tmp_path, args, message):
    status, _, err = cli([a.format(dir=siren_dir) for a in args] + ["--out", tmp_path / "B"])
    assert status == 2 and err.strip().splitlines() == [f"fieldlab: error: {message}"]
    assert not (tmp_path / "B").exists()


def test_meta_learning_refuses_a_field_without_a_latent():
    from fieldlab._errors import UserError
    from fieldlab.fit.meta import check_latent_field

    with pytest.raises(UserError, match=r"^field 'siren' has no latent to meta-learn; use functa or spatial_functa$"):
        check_latent_field(get_config_class("siren")())
