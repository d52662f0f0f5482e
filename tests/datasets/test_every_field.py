"""Every registered field (but the meta-learned ones) fits as a dataset and comes back from a store."""

import numpy as np
import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.fields import get_config_class, list_fields
from fieldlab.fit.batched import BatchedFitConfig, DatasetFitter, fit_batch
from fieldlab.fit.dataset_job import resolve_dataset_config
from fieldlab.signals import grid_coords
from fieldlab.signals.datasets import Augmented, open_source
from fieldlab.store.field_store import FieldStore, FieldStoreWriter

INDEPENDENT = [name for name in list_fields() if not hasattr(get_config_class(name), "latent_shape")
               and get_config_class(name).batched]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces():
    source = open_source("sample:lfw")
    info = source.info()
    return source, grid_coords(info.domain, info.domain, info.shape), Augmented(source).values([0, 150])


def test_a_field_without_a_batched_path_is_refused(faces, monkeypatch):
    """Every registered field has a batched path today (MINER's unpruned one included); the refusal a field
    grown only by its own trainer gets is checked on a stand-in for one."""
    import dataclasses

    from fieldlab.fit import dataset_job

    @dataclasses.dataclass(frozen=True)
    class Unbatched(get_config_class("siren")):
        batched = False

    monkeypatch.setattr(dataset_job, "get_config_class", lambda name: Unbatched)
    with pytest.raises(UserError, match="no batched path"):
        resolve_dataset_config("grown", {}, faces[0])


@pytest.mark.parametrize("name", INDEPENDENT)
def test_fit_store_and_read_back(name, faces, tmp_path):
    source, coords, values = faces
    config = resolve_dataset_config(name, {}, source)
    assert config.num_params() <= max(1185, 25 * 25) * 12  # sized for a 25² item, not a whole photo
    fit = BatchedFitConfig(device="cpu", steps=8, target_psnr=0)
    result = fit_batch(config, coords, values, [0, 150], fit)
    fitter = DatasetFitter(config, fit)
    writer = FieldStoreWriter.create(tmp_path / "S", config=config, signal=source.info(), num_fields=2,
                                     chunk_fields=2, per_field=fitter.per_field_shapes())
    writer.write_chunk(0, params=result.params, psnr=result.psnr)
    store = FieldStore(tmp_path / "S")
    with torch.no_grad():
        prediction = store.stack([0, 1])(coords.expand(2, -1, -1))
    mse = (prediction.double() - values.double()).square().mean(dim=(1, 2))
    np.testing.assert_allclose(10 * np.log10(4 / mse.numpy()), result.psnr, atol=1e-3)
