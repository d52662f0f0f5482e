"""Hugging Face datasets (parquet, save_to_disk arrow folders) as fit-dataset sources (signals/sources_hf.py),
written with pyarrow alone."""

import json
import sys

import numpy as np
import pytest

from _source_files import (FIT, hf_table, images, interrupted_then_resumed, refused, write_parquet,
                           write_saved_dataset)
from fieldlab._errors import UserError
from fieldlab.signals.datasets import open_source

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.usefixtures("one_thread")


def hub_folder(root):
    """A Hub-style parquet folder: data/train-*.parquet (4 rows) and data/test-*.parquet (2 rows)."""
    pictures = images(6)
    write_parquet(root / "data" / "train-00000-of-00001.parquet", hf_table(pictures[:4], [0, 2, 1, 0]))
    write_parquet(root / "data" / "test-00000-of-00001.parquet", hf_table(pictures[4:], [1, None]))
    return pictures


def test_a_parquet_folder_reads_images_class_names_and_its_test_split(tmp_path):
    pictures = hub_folder(tmp_path)
    source = open_source(str(tmp_path))
    assert len(source) == 6 and source.shape == (8, 8) and source.channels == 3
    assert source.label_names == ["cat", "dog", "emu"] and source.labels.tolist() == [0, 2, 1, 0, 1, -1]
    assert source.split.tolist() == [False] * 4 + [True] * 2
    assert all(np.array_equal(source.raw(i), pictures[i]) for i in (0, 3, 4, 5))  # across row groups and files


def test_save_to_disk_folders_of_one_dataset_or_of_splits(tmp_path):
    pictures = images(4)
    write_saved_dataset(tmp_path / "one", hf_table(pictures, [2, 1, 0, 1]).replace_schema_metadata(None))
    one = open_source(str(tmp_path / "one"))
    assert one.label_names == ["cat", "dog", "emu"]  # from dataset_info.json when the schema has no metadata
    assert one.split is None and np.array_equal(one.raw(3), pictures[3]) and one.labels.tolist() == [2, 1, 0, 1]
    write_saved_dataset(tmp_path / "dict" / "train", hf_table(pictures[:3], [0, 1, 2]))
    write_saved_dataset(tmp_path / "dict" / "test", hf_table(pictures[3:], [1]))
    (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["test", "train"]}))
    both = open_source(str(tmp_path / "dict"))
    assert both.split.tolist() == [False] * 3 + [True] and np.array_equal(both.raw(3), pictures[3])


def test_columns_are_found_by_their_usual_names_or_named_in_the_spec(tmp_path):
    pictures = images(3)
    features = {"img": {"_type": "Image"}, "fine_label": {"names": ["a", "b"], "_type": "ClassLabel"}}
    write_parquet(tmp_path / "c.parquet", hf_table(pictures, [1, 0, 1], "img", "fine_label", features))
    assert open_source(str(tmp_path / "c.parquet")).labels.tolist() == [1, 0, 1]
    write_parquet(tmp_path / "odd.parquet", hf_table(pictures, [5, 6, 5], "picture", "kind", {}))
    named = open_source(f"{tmp_path / 'odd.parquet'}:image=picture,label=kind")
    assert named.label_names == [str(k) for k in range(7)] and np.array_equal(named.raw(2), pictures[2])
    assert (open_source(f"{tmp_path / 'odd.parquet'}:image=picture,label=none").labels == -1).all()
    with pytest.raises(UserError, match="no column 'kinds'"):
        open_source(f"{tmp_path / 'odd.parquet'}:image=picture,label=kinds")


def test_fit_dataset_on_parquet_and_store_info_names_the_source(tmp_path, cli):
    hub_folder(tmp_path / "hf")
    status, _, err = cli(["fit-dataset", tmp_path / "hf", *FIT, "--out", tmp_path / "S"])
    assert status == 0, err
    status, out, _ = cli(["store", "info", tmp_path / "S"])
    assert status == 0 and "splits train 4, test 2" in out
    assert f"source    hugging face parquet, 6 items, 3 classes, {tmp_path / 'hf'}" in out


def test_fit_dataset_on_an_arrow_folder_resumes_after_an_interrupt(tmp_path, cli, monkeypatch):
    write_saved_dataset(tmp_path / "hf", hf_table(images(4), [0, 1, 2, 1]))
    store = interrupted_then_resumed(cli, monkeypatch, tmp_path / "hf", tmp_path / "S")
    assert store.column("labels").tolist() == [0, 1, 2, 1]


def test_parquet_without_an_image_column_is_refused_naming_its_columns(tmp_path, cli):
    write_parquet(tmp_path / "p.parquet", hf_table(images(2), [0, 1], "picture", "label"))
    refused(cli, tmp_path / "p.parquet", "has no image column image or img (its columns: picture, label)",
            tmp_path / "S")


def test_a_column_that_holds_no_encoded_images_is_refused(tmp_path, cli):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [1.0, 2.0], "label": [0, 1]}), tmp_path / "n.parquet")
    refused(cli, tmp_path / "n.parquet", "the column 'image' holds double, not encoded images", tmp_path / "S")


def test_a_label_past_its_class_label_names_is_refused(tmp_path, cli):
    write_parquet(tmp_path / "l.parquet", hf_table(images(2), [0, 3]))
    refused(cli, tmp_path / "l.parquet", "the label 3 of row 1 is not one of the 3 classes", tmp_path / "S")


def test_a_truncated_parquet_file_is_refused(tmp_path, cli):
    data = write_parquet(tmp_path / "t.parquet", hf_table(images(2), [0, 1])).read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    refused(cli, tmp_path / "t.parquet", f"cannot read {tmp_path / 't.parquet'} as parquet", tmp_path / "S")


def test_an_image_cell_that_does_not_decode_is_refused_naming_its_row(tmp_path, cli):
    table = hf_table(images(2), [0, 1])
    import pyarrow as pa

    cells = pa.array([{"bytes": b"not a png", "path": None}] * 2, type=table.schema.field("image").type)
    write_parquet(tmp_path / "b.parquet", table.set_column(0, "image", cells))
    refused(cli, tmp_path / "b.parquet", "row 0: cannot decode its image", tmp_path / "S")


def test_without_pyarrow_the_hf_extra_is_named(tmp_path, cli, monkeypatch):
    write_parquet(tmp_path / "p.parquet", hf_table(images(2), [0, 1]))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # its import fails, as when not installed
    refused(cli, tmp_path / "p.parquet", "pip install 'fieldlab[hf]'", tmp_path / "S")

