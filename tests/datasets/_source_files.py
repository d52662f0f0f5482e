"""Tiny dataset files in the formats people have, written by the tests (CIFAR binary, Hugging Face parquet and
arrow, image + mask folders), and the fit-dataset checks every source gets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from fieldlab.store.field_store import FieldStore, FieldStoreWriter

FIT = ["--field", "siren", "--steps", "5", "--hidden-dim", "8", "--chunk-fields", "2", "--device", "cpu", "--quiet"]
"""Tiny fields: a source's tests check what is read, not how well it fits."""


def write_cifar(path: Path, count: int, label_bytes: int = 1, classes: int = 10, seed: int = 0) -> np.ndarray:
    """`count` random CIFAR records (labels, then the 3,072 bytes of the red, green and blue planes)."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (count, label_bytes + 3072), dtype=np.uint8)
    records[:, :label_bytes] = rng.integers(0, classes, (count, label_bytes))
    path.parent.mkdir(parents=True, exist_ok=True)
    records.tofile(path)
    return records


def cifar_image(record: np.ndarray, label_bytes: int = 1) -> np.ndarray:
    return record[label_bytes:].reshape(3, 32, 32).transpose(1, 2, 0)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def images(count: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


HF_FEATURES = {"image": {"_type": "Image"}, "label": {"names": ["cat", "dog", "emu"], "_type": "ClassLabel"}}


def hf_table(pictures: np.ndarray, labels, image="image", label="label", features=HF_FEATURES):
    """A pyarrow table as `datasets` writes one: Image cells are structs of bytes and path, and the schema's
    metadata holds the features (ClassLabel names)."""
    import pyarrow as pa

    cells = [{"bytes": png_bytes(p), "path": None} for p in pictures]
    cell_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({image: pa.array(cells, type=cell_type), label: pa.array(labels, type=pa.int64())})
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})


def write_parquet(path: Path, table, row_group_size: int = 2) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_saved_dataset(folder: Path, table) -> Path:
    """A folder as `Dataset.save_to_disk` leaves it: an arrow IPC stream, state.json and dataset_info.json."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                   "_split": None}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": HF_FEATURES}))
    return folder


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_segmentation(root: Path, names=("a", "b", "c", "d"), size: int = 8, classes: int = 3, seed: int = 0):
    """ROOT/images/<name>.png (RGB) and ROOT/masks/<name>.png (class ids, a corner of 255 = ignore)."""
    rng = np.random.default_rng(seed)
    masks = {}
    for name in names:
        write_png(root / "images" / f"{name}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        mask = rng.integers(0, classes, (size, size), dtype=np.uint8)
        mask[:2, :2] = 255
        write_png(root / "masks" / f"{name}.png", mask)
        masks[name] = mask
    return masks


def refused(cli, source, message: str, out: Path, *extra) -> None:
    """fit-dataset SOURCE prints one line holding `message`, exits 2 and writes nothing."""
    status, _, err = cli(["fit-dataset", source, *FIT, "--out", out, *extra])
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("fieldlab: error:") and message in err, err
    assert not out.exists()


def interrupted_then_resumed(cli, monkeypatch, source, out: Path, *extra) -> FieldStore:
    """fit-dataset SOURCE stopped by Ctrl-C after its first chunk, then --resume: the store ends complete and
    equal to an uninterrupted run's."""
    write_chunk = FieldStoreWriter.write_chunk

    def write_then_interrupt(self, chunk, **columns):
        write_chunk(self, chunk, **columns)
        raise KeyboardInterrupt

    monkeypatch.setattr(FieldStoreWriter, "write_chunk", write_then_interrupt)
    status, _, err = cli(["fit-dataset", source, *FIT, "--out", out, *extra])
    assert status == 130 and "--resume" in err, err
    monkeypatch.setattr(FieldStoreWriter, "write_chunk", write_chunk)
    store = FieldStore(out)
    assert 0 < len(store.rows()) < store.num_fields
    status, _, err = cli(["fit-dataset", source, *FIT, "--out", out, "--resume", *extra])
    assert status == 0, err
    clean = out.parent / (out.name + "-clean")
    assert cli(["fit-dataset", source, *FIT, "--out", clean, *extra])[0] == 0
    resumed, whole = FieldStore(out), FieldStore(clean)
    assert len(resumed.rows()) == resumed.num_fields
    n = resumed.num_fields
    for name, tensor in resumed.read(slice(0, n)).items():
        assert np.array_equal(tensor.numpy(), whole.read(slice(0, n))[name].numpy()), name
    for column in ("labels", "split", "source_index"):
        assert np.array_equal(resumed.column(column), whole.column(column)), column
    return resumed
