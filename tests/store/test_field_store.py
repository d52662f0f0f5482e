"""FieldStore: chunked writes with a completion mask, reads by rows, the lazy Dataset and sampler."""

import math

import numpy as np
import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.fields import FieldStack, make_config
from fieldlab.signals import Normalization, SignalInfo
from fieldlab.store import _integrity
from fieldlab.store.field_store import ChunkSampler, FieldStore, FieldStoreDataset, FieldStoreWriter

CONFIG = make_config("siren", in_dim=2, out_dim=1, hidden_dim=6, num_layers=2)
SIGNAL = SignalInfo("image", (4, 4), 1, Normalization("uint8", 0.0, 255.0), ((0.0, 4.0), (0.0, 4.0)))


@pytest.fixture
def stack():
    return FieldStack.from_config(CONFIG, 10)


def params_of(stack, rows):
    return {k: v.detach()[rows] for k, v in stack.state()[0].items()}


def new_store(path, stack, **options):
    per_field = {k: tuple(v.shape[1:]) for k, v in stack.state()[0].items()}
    return FieldStoreWriter.create(path, config=CONFIG, signal=SIGNAL, num_fields=10, chunk_fields=4,
                                   per_field=per_field, label_names=["a", "b"], attrs={"seed": 3}, **options)


def write(writer, stack, chunk):
    rows = np.asarray(writer.chunk_rows(chunk))
    writer.write_chunk(chunk, params=params_of(stack, rows), psnr=30 + rows, labels=rows % 2, source_index=rows,
                       augment=np.zeros(len(rows)), steps=np.full(len(rows), 7))


def test_round_trip_and_completion_mask(tmp_path, stack):
    writer = new_store(tmp_path / "S", stack)
    assert writer.num_chunks == 3 and writer.pending_chunks() == [0, 1, 2]
    write(writer, stack, 2)
    write(writer, stack, 0)
    assert writer.pending_chunks() == [1]
    store = FieldStore(tmp_path / "S")
    assert store.rows().tolist() == [0, 1, 2, 3, 8, 9]  # chunk 1's zero rows are never listed
    assert store.config == CONFIG and store.signal == SIGNAL and store.label_names == ["a", "b"]
    read = store.read([1, 8, 9])
    for name, tensor in params_of(stack, [1, 8, 9]).items():
        assert torch.equal(read[name], tensor)
    x = torch.rand(3, 5, 2) * 2 - 1
    expected = stack(torch.zeros(10, 5, 2).index_copy(0, torch.tensor([1, 8, 9]), x))[[1, 8, 9]]
    torch.testing.assert_close(store.stack([1, 8, 9])(x), expected)
    summary = store.summary()
    assert summary["complete"] == 6 and summary["missing"] == 4 and summary["num_labels"] == 2
    assert summary["psnr"]["min"] == 30 and summary["psnr"]["max"] == 39 and summary["seed"] == 3


def test_params_are_stored_uncompressed_and_a_compressed_store_reads_back_the_same(tmp_path, stack, monkeypatch):
    import fieldlab.store.field_store as field_store

    written = {}
    for name, codecs in (("plain", None), ("zstd", {})):  # {}: zarr's default codecs, as stores were written before
        if codecs is not None:
            monkeypatch.setattr(field_store, "_uncompressed", lambda zarr: codecs)
        writer = new_store(tmp_path / name, stack)
        for chunk in range(writer.num_chunks):
            write(writer, stack, chunk)
        written[name] = FieldStore(tmp_path / name)
    plain, zstd = written["plain"], written["zstd"]
    # Fitted weights barely compress: no zstd on the writing thread. Read off the chunk files themselves (zarr 2
    # and 3 name them and their metadata differently): plain chunks hold exactly their values' bytes.
    array = plain.group["params/layers.0.weight"]
    raw = math.prod(array.chunks) * array.dtype.itemsize
    for store, plain_bytes in ((plain, True), (zstd, False)):
        sizes = [f.stat().st_size for f in (store.path / "params" / "layers.0.weight").rglob("*")
                 if f.is_file() and not f.name.startswith(".z") and f.name != "zarr.json"]
        assert len(sizes) == math.ceil(array.shape[0] / array.chunks[0])  # one file per chunk of rows
        assert all(size == raw for size in sizes) == plain_bytes, (store.path.name, sizes, raw)
    rows = np.arange(10)
    for name, tensor in plain.read(rows).items():
        assert torch.equal(tensor, zstd.read(rows)[name]) and torch.equal(tensor, params_of(stack, rows)[name])
    for column in ("labels", "split", "augment", "source_index", "psnr", "steps"):
        assert np.array_equal(plain.column(column), zstd.column(column))
    assert plain.damaged_chunks(range(plain.num_chunks)) == zstd.damaged_chunks(range(zstd.num_chunks)) == []


def test_a_forced_create_replaces_the_store_and_deletes_the_old_one_behind(tmp_path, stack):
    from fieldlab.store.field_store import finish_removals

    write(new_store(tmp_path / "S", stack), stack, 0)
    writer = new_store(tmp_path / "S", stack, force=True)
    assert writer.pending_chunks() == [0, 1, 2]  # a new, empty store at once
    finish_removals()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S"]  # the old one, set aside, is gone


def test_shared_tensors_are_stored_once(tmp_path, stack):
    shared = {"net.weight": torch.randn(3, 5), "scale": torch.tensor(2.5)}
    writer = new_store(tmp_path / "S", stack, shared=shared)
    writer.write_shared({"extra": torch.ones(2)})
    stored = FieldStore(tmp_path / "S").shared()
    assert set(stored) == {"net.weight", "scale", "extra"} and torch.equal(stored["net.weight"], shared["net.weight"])
    assert float(stored["scale"]) == 2.5 and FieldStore(tmp_path / "S").summary()["shared_params"] == 18


def test_a_damaged_mask_chunk_is_refitted_not_trusted(tmp_path, stack):
    writer = new_store(tmp_path / "S", stack)
    for chunk in range(3):
        write(writer, stack, chunk)
    assert writer.pending_chunks() == []
    mask_chunk = _integrity.chunk_file(tmp_path / "S", writer.group, "done", 1)
    mask_chunk.write_bytes(b"\x00garbage")
    assert FieldStoreWriter.open(tmp_path / "S").pending_chunks() == [1]
    assert FieldStore(tmp_path / "S").rows().tolist() == [0, 1, 2, 3, 8, 9]


def test_open_checks_identity_and_paths(tmp_path, stack):
    new_store(tmp_path / "S", stack)
    FieldStoreWriter.open(tmp_path / "S", expect={"seed": 3})
    with pytest.raises(UserError, match="different seed"):
        FieldStoreWriter.open(tmp_path / "S", expect={"seed": 4})
    with pytest.raises(UserError, match="not empty"):
        new_store(tmp_path / "S", stack)
    new_store(tmp_path / "S", stack, force=True)
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a field store"):
        FieldStore(tmp_path / "plain")
    with pytest.raises(UserError, match="no field store"):
        FieldStore(tmp_path / "missing")


def test_dataset_and_chunk_sampler(tmp_path, stack):
    writer = new_store(tmp_path / "S", stack)
    for chunk in (0, 2):
        write(writer, stack, chunk)
    dataset = FieldStoreDataset(tmp_path / "S")
    assert len(dataset) == 6
    item = dataset[4]
    assert item["row"] == 8 and item["label"] == 0
    assert torch.equal(item["params"]["layers.1.weight"], stack.state()[0]["layers.1.weight"][8].detach())
    sampler = ChunkSampler(dataset, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(6))
    chunks = [dataset.chunk_of(i) for i in order]
    assert chunks == sorted(chunks) or chunks == sorted(chunks, reverse=True)  # one run per chunk
    epochs = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        epochs.add(tuple(sampler))
    assert len(epochs) > 1
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3, sampler=ChunkSampler(dataset, shuffle=False))))
    assert batch["params"]["layers.0.weight"].shape == (3, 6, 2) and batch["row"].tolist() == [0, 1, 2]


def test_integer_buffers_a_float32_store_cannot_hold_come_back_from_the_config():
    """A store keeps per-field tensors as float32: a hash grid's primes (about 2.6e9) come back wrong from
    that copy and the hashing with them, so they are taken from the config; small integers (a Local-Global
    field's partition slots) come back from the store, in their own dtype."""
    from fieldlab.fields import get_config_class, restore_buffer

    grid = get_config_class("hashgrid").from_options({"in_dim": 2, "out_dim": 1, "table_size": 64, "num_levels": 4,
                                                      "base_resolution": 2, "max_resolution": 32, "hidden_dim": 8})
    primes = dict(grid.build().named_buffers())["encoding.primes"]
    assert primes.abs().max() >= 2**24 and not primes.is_floating_point()
    stored = primes.float().expand(3, *primes.shape)
    assert not torch.equal(stored[0].long(), primes)  # what a plain cast would give back
    assert torch.equal(restore_buffer(stored, primes), primes.expand(3, *primes.shape))
    slots = torch.arange(6).reshape(2, 3)
    back = restore_buffer(slots.float().expand(2, 2, 3), slots)
    assert back.dtype == slots.dtype and torch.equal(back[1], slots)
