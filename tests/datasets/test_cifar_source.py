"""CIFAR-10/100's binary version as a fit-dataset source (signals/sources_cifar.py), on files the tests write."""

import numpy as np
import pytest

from _source_files import FIT, cifar_image, interrupted_then_resumed, refused, write_cifar
from fieldlab._errors import UserError
from fieldlab.signals.datasets import open_source

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def cifar10(root, train=4, test=2):
    train_records = write_cifar(root / "data_batch_1.bin", train, seed=0)
    test_records = write_cifar(root / "test_batch.bin", test, seed=1)
    (root / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")  # the real file ends in blank lines
    return train_records, test_records


def test_a_cifar10_folder_reads_its_records_names_and_test_split(tmp_path):
    train, test = cifar10(tmp_path / "cifar-10-batches-bin")
    source = open_source(str(tmp_path))  # the folder that holds the unpacked archive
    assert len(source) == 6 and source.shape == (32, 32) and source.channels == 3
    assert source.label_names == NAMES and source.labels.tolist() == [*train[:, 0], *test[:, 0]]
    assert source.split.tolist() == [False] * 4 + [True] * 2
    assert np.array_equal(source.raw(1), cifar_image(train[1])) and np.array_equal(source.raw(5), cifar_image(test[1]))
    one = open_source(str(tmp_path / "cifar-10-batches-bin" / "test_batch.bin"))
    assert len(one) == 2 and one.split is None and np.array_equal(one.raw(0), cifar_image(test[0]))


def test_cifar100_reads_fine_labels_or_coarse_ones_on_request(tmp_path):
    records = write_cifar(tmp_path / "train.bin", 3, label_bytes=2, classes=20)
    write_cifar(tmp_path / "test.bin", 1, label_bytes=2, classes=20, seed=1)
    fine = open_source(str(tmp_path))
    assert fine.labels[:3].tolist() == records[:, 1].tolist() and len(fine.label_names) == 100
    assert np.array_equal(fine.raw(2), cifar_image(records[2], label_bytes=2))
    coarse = open_source(f"{tmp_path}:label=coarse")
    assert coarse.labels[:3].tolist() == records[:, 0].tolist() and len(coarse.label_names) == 20
    with pytest.raises(UserError, match="fine or coarse, not 'superclass'"):
        open_source(f"{tmp_path}:label=superclass")


def test_fit_dataset_on_cifar_marks_the_test_batch_and_store_info_names_the_source(tmp_path, cli):
    cifar10(tmp_path / "c")
    status, _, err = cli(["fit-dataset", tmp_path / "c", *FIT, "--out", tmp_path / "S"])
    assert status == 0, err
    status, out, _ = cli(["store", "info", tmp_path / "S"])
    assert status == 0 and "splits train 4, test 2" in out
    assert f"source    cifar-10 binary, 6 items, 10 classes, {tmp_path / 'c'}" in out
    refused(cli, tmp_path / "c", "has its own test split; --test-fraction", tmp_path / "T", "--test-fraction", "0.5")


def test_fit_dataset_on_cifar_resumes_after_an_interrupt(tmp_path, cli, monkeypatch):
    cifar10(tmp_path / "c")
    store = interrupted_then_resumed(cli, monkeypatch, tmp_path / "c", tmp_path / "S")
    assert store.column("split").tolist() == [0] * 4 + [1] * 2


def test_a_truncated_cifar_file_is_refused_before_anything_is_written(tmp_path, cli):
    cifar10(tmp_path / "c")
    data = (tmp_path / "c" / "test_batch.bin").read_bytes()
    (tmp_path / "c" / "test_batch.bin").write_bytes(data[:-100])
    refused(cli, tmp_path / "c", "is truncated or not a CIFAR binary file", tmp_path / "S")


def test_the_pickled_python_version_is_refused_naming_the_binary_download(tmp_path, cli):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"\x80\x02}q\x00")  # a pickle's first bytes: never unpickled, only recognised
    refused(cli, tmp_path, "pickled python version, which fieldlab never unpickles; download the binary version "
            "(cifar-10-binary.tar.gz", tmp_path / "S")
    refused(cli, folder / "data_batch_1", "data_batch_1.bin", tmp_path / "S")


def test_a_names_file_that_does_not_match_the_classes_is_refused(tmp_path, cli):
    cifar10(tmp_path / "c")
    (tmp_path / "c" / "batches.meta.txt").write_text("\n".join(NAMES[:9]))
    refused(cli, tmp_path / "c", "batches.meta.txt names 9 classes, but CIFAR-10's labels are 10", tmp_path / "S")


def test_a_label_byte_past_the_classes_is_refused(tmp_path, cli):
    records = write_cifar(tmp_path / "c" / "data_batch_1.bin", 3)
    records[2, 0] = 10
    records.tofile(tmp_path / "c" / "data_batch_1.bin")
    refused(cli, tmp_path / "c", "the label 10 of record 2 is not one of CIFAR-10's 10 classes", tmp_path / "S")
