"""Engines and dataset fitters registered in fit/ by config class (fields/ never names fit/)."""

import dataclasses

import pytest

from fieldlab._errors import UserError
from fieldlab.fields import FunctaConfig, MinerConfig, SirenConfig, SpatialFunctaConfig, make_config
from fieldlab.fit.batched import BatchedFitConfig, DatasetFitter, dataset_fitter
from fieldlab.fit.own_engines import ByConfigClass, OwnEngine, engine_for, register_engine
from fieldlab.fit.loop import fit, own_trainer
from fieldlab.fit.meta import MetaDatasetFitter


def test_miner_registers_its_engine_and_other_fields_take_the_standard_loop():
    from fieldlab.fit import miner, miner_mesh

    engine = engine_for(make_config("miner"))
    assert engine == OwnEngine(fit=miner.fit, fit_mesh=miner_mesh.fit_mesh, options=miner.MinerTrainConfig)
    assert engine_for(make_config("siren")) is None and engine_for(make_config("local_global")) is None
    assert own_trainer(make_config("siren"), "fit", fit) is fit


def test_a_registry_by_config_class_refuses_duplicates_and_serves_subclasses():
    registry = ByConfigClass("thing")
    registry.register(SirenConfig, 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(SirenConfig, 2)

    @dataclasses.dataclass(frozen=True)
    class Tuned(SirenConfig):
        pass

    assert registry.get(Tuned()) == 1 and registry.get(MinerConfig()) is None


def test_an_engine_without_a_mesh_fit_refuses_meshes_in_one_line():
    @dataclasses.dataclass(frozen=True)
    class StandIn(SirenConfig):
        pass

    register_engine(StandIn, OwnEngine(fit=lambda *a, **k: None))
    with pytest.raises(UserError, match=r"^field 'siren' cannot be fitted to this kind of input \(its trainer has "
                                        r"no fit_mesh\)$"):
        own_trainer(StandIn(), "fit_mesh", None)


def test_a_field_with_its_own_engine_resumes_only_from_its_checkpoint(cli, tmp_path):
    """MINER keeps its own checkpoint (tests/test_matrix.py resumes it); without one, --resume is one line."""
    status, _, err = cli(["fit", "sample:camera", "--field", "miner", "--max-size", "16", "--device", "cpu",
                          "--quiet", "--resume", "--out", tmp_path / "M"])
    assert status == 2  # (a log line on the sizing may come first)
    assert err.strip().splitlines()[-1].startswith("fieldlab: error: --resume: no checkpoint of an interrupted fit")
    assert not (tmp_path / "M").exists()


def test_dataset_fitters_are_found_by_config_class():
    fit = BatchedFitConfig()
    assert type(dataset_fitter(make_config("siren", hidden_dim=8), fit)) is DatasetFitter
    for cls in (FunctaConfig, SpatialFunctaConfig):
        assert type(dataset_fitter(cls(), fit)) is MetaDatasetFitter
