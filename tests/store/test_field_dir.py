import json

import pytest
import torch

from fieldlab import UserError
from fieldlab.fields import list_fields, make_config
from fieldlab.fit import FitConfig, fit
from fieldlab.store import FieldDirWriter, load_field, write_field


@pytest.mark.parametrize("name", list_fields())
def test_field_round_trips_through_its_dir(tmp_path, name, camera32):
    config = make_config(name, in_dim=2, out_dim=1).adapt(camera32.shape).with_params(8000)
    result = fit(camera32, config, FitConfig(steps=5, device="cpu"))
    with FieldDirWriter(tmp_path / "f") as folder:
        write_field(folder, result.field, config, camera32.info, result.metrics)
    stored = load_field(tmp_path / "f")
    assert stored.config == config
    assert stored.signal == camera32.info
    # The metadata describes the rebuilt module.
    assert stored.metrics["params"] == sum(p.numel() for p in stored.module.parameters())
    description = json.loads((tmp_path / "f" / "field.json").read_text())
    assert description["field"]["name"] == name and "torch" in description["versions"]
    coords = camera32.coords()
    assert torch.equal(stored.module(coords), result.field.eval()(coords))


def test_safetensors_holds_no_pickle(tmp_path, camera32):
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=8)
    result = fit(camera32, config, FitConfig(steps=1, device="cpu"))
    with FieldDirWriter(tmp_path / "f") as folder:
        write_field(folder, result.field, config, camera32.info, result.metrics)
    header = (tmp_path / "f" / "field.safetensors").read_bytes()[:4096]
    assert b"\x80\x04" not in header[:2]  # a pickle would start with its protocol opcode
    assert b'"dtype"' in header


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with FieldDirWriter(tmp_path / "f") as folder:
            (folder / "partial").write_text("x")
            raise RuntimeError("boom")
    assert not (tmp_path / "f").exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_non_empty_dir_without_force(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        FieldDirWriter(tmp_path / "f")
    assert (tmp_path / "f" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["no_json", "bad_json", "bad_weights", "wrong_shape"])
def test_damaged_dirs_are_user_errors(tmp_path, camera32, damage):
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=8)
    result = fit(camera32, config, FitConfig(steps=1, device="cpu"))
    with FieldDirWriter(tmp_path / "f") as folder:
        write_field(folder, result.field, config, camera32.info, result.metrics)
    folder = tmp_path / "f"
    if damage == "no_json":
        (folder / "field.json").unlink()
    elif damage == "bad_json":
        (folder / "field.json").write_text("{")
    elif damage == "bad_weights":
        (folder / "field.safetensors").write_bytes(b"garbage")
    else:
        description = json.loads((folder / "field.json").read_text())
        description["field"]["config"]["hidden_dim"] = 9
        (folder / "field.json").write_text(json.dumps(description))
    with pytest.raises(UserError):
        load_field(folder)
