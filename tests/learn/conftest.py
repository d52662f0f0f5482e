import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldlab.fields import FieldStack, make_config
from fieldlab.learn import grid
from fieldlab.signals import Normalization, SignalInfo


def write_blob_store(path, num_fields=160, seed=0, hidden_dim=16, chunks=None, label_names=("low", "middle", "high")):
    """A labelled store of small SIRENs that need no fitting: random smooth fields, labelled by the
    tercile of their mean value (3 classes, learnable by any network that integrates the field). `chunks`:
    write only that many of its chunks of 40 fields, as an interrupted fit-dataset would leave it."""
    torch.manual_seed(seed)
    from fieldlab.store.field_store import FieldStoreWriter

    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=hidden_dim, num_layers=2, omega0=3.0, first_omega0=3.0)
    stack = FieldStack.from_config(config, num_fields)
    pts = grid((16, 16))
    with torch.no_grad():
        values = stack(pts.coords.expand(num_fields, -1, -1))[..., 0]  # (f, n)
        mean = values.mean(1)
        labels = torch.bucketize(mean, torch.quantile(mean, torch.tensor([1 / 3, 2 / 3])))
    signal = SignalInfo(kind="image", shape=(16, 16), channels=1, normalization=Normalization("uint8", 0, 255),
                        domain=((0.0, 16.0), (0.0, 16.0)), source="test:blobs")
    per_field = {name: tuple(stack.params[name.replace(".", "__")].shape[1:]) for name in stack._names}
    writer = FieldStoreWriter.create(path, config=config, signal=signal, num_fields=num_fields, chunk_fields=40,
                                     per_field=per_field, label_names=list(label_names))
    for chunk in writer.pending_chunks()[:chunks]:
        rows = writer.chunk_rows(chunk)
        params = {name: stack.params[name.replace(".", "__")][rows.start:rows.stop].detach() for name in per_field}
        writer.write_chunk(chunk, params=params, psnr=np.full(len(rows), 40.0), labels=labels[rows.start:rows.stop],
                           source_index=np.arange(rows.start, rows.stop))
    return path


@pytest.fixture(scope="session")
def blob_store(tmp_path_factory):
    return write_blob_store(tmp_path_factory.mktemp("learn") / "store")


@pytest.fixture
def make_blob_store(tmp_path):
    """write_blob_store into tmp_path/NAME, with its options."""
    return lambda name, **options: write_blob_store(tmp_path / name, **options)


@pytest.fixture(scope="module")
def sweep():
    """benchmarks/dinet_sweep.py as a module (it is a script, not part of the package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dinet_sweep.py"
    spec = importlib.util.spec_from_file_location("dinet_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("dinet_speed", None)
