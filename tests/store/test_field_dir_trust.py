"""A field DIR that is damaged, foreign or crafted is refused in one line before anything is built from it
(issue 19): field.json and metrics.json are schema-checked and declared sizes bounded by LIMITS."""

import json

import numpy as np
import pytest
import torch

from fieldlab.cli.main import main
from fieldlab.fields import make_config
from fieldlab.signals import Signal
from fieldlab.store import FieldDirWriter, write_field


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    """A tiny SIREN field of an 8x8 gray image, written as `fit` writes it (no fit: the weights are its init)."""
    signal = Signal.from_array(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), kind="image", channel_axis=False)
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=4, num_layers=1)
    out = tmp_path_factory.mktemp("field") / "f"
    with FieldDirWriter(out) as folder:
        write_field(folder, config.build(), config, signal.info, {"psnr": 20.0, "params": config.num_params()})
    return out


def copy_of(field_dir, tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    for name in ("field.json", "metrics.json", "field.safetensors"):
        (folder / name).write_bytes((field_dir / name).read_bytes())
    return folder


def edit(folder, change, name="field.json"):
    data = json.loads((folder / name).read_text())
    change(data)
    (folder / name).write_text(json.dumps(data))


def refused(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("fieldlab: error:") and err.count("\n") == 1, err
    return err


def test_an_intact_field_dir_is_read(field_dir, capsys):
    main(["info", str(field_dir)])
    assert "siren" in capsys.readouterr().out


DECLARED = {
    "a million layers": (lambda d: d["field"]["config"].update(num_layers=10**6), "--num-layers must be at most"),
    "a hidden size of 10**9": (lambda d: d["field"]["config"].update(hidden_dim=10**9), "--hidden-dim must be at most"),
    "a hidden size of 30,000": (lambda d: d["field"]["config"].update(hidden_dim=30_000, num_layers=4), "parameters (at most"),
    "an omega0 of 1e30": (lambda d: d["field"]["config"].update(omega0=1e30), "--omega0 must be at most"),
}


@pytest.mark.parametrize("case", DECLARED)
def test_info_on_a_field_json_declaring_huge_sizes_is_refused_before_building(field_dir, tmp_path, capsys, case):
    change, message = DECLARED[case]
    folder = copy_of(field_dir, tmp_path)
    edit(folder, change)
    assert message in refused(capsys, "info", folder)


def _set_signal(key, value):
    return lambda d: d["signal"].update({key: value})


DAMAGE = {
    "a list": (lambda f: (f / "field.json").write_text("[1, 2]"), "holds a list"),
    "binary": (lambda f: (f / "field.json").write_bytes(b"\x00\xff\xfe\x89PNG"), "not UTF-8"),
    "truncated": (lambda f: (f / "field.json").write_text('{"format": "fieldlab.fie'), "not valid JSON"),
    "no field key": (lambda f: edit(f, lambda d: d.pop("field")), "'field' is missing"),
    "a foreign format": (lambda f: edit(f, lambda d: d.update(format="other")), "not a fieldlab field"),
    "an unknown field": (lambda f: edit(f, lambda d: d["field"].update(name="nope")), "unknown field"),
    "a config that is a list": (lambda f: edit(f, lambda d: d["field"].update(config=[1])), "'config' must be"),
    "a string width": (lambda f: edit(f, lambda d: d["field"]["config"].update(hidden_dim="wide")), "--hidden-dim"),
    "an unknown kind": (lambda f: edit(f, _set_signal("kind", "smell")), "signal kind 'smell'"),
    "an empty shape": (lambda f: edit(f, _set_signal("shape", [])), "non-empty list"),
    "a negative shape": (lambda f: edit(f, _set_signal("shape", [8, -8])), "at least 1"),
    "a shape of three axes": (lambda f: edit(f, _set_signal("shape", [8, 8, 8])), "must have 2 axes"),
    "a huge shape": (lambda f: edit(f, _set_signal("shape", [10**9, 10**9])), "too large"),
    "a shape that is a string": (lambda f: edit(f, _set_signal("shape", "8x8")), "'shape' must be"),
    "a wrong dtype": (lambda f: edit(f, lambda d: d["signal"]["normalization"].update(dtype="pickle")), "dtype"),
    "a zero scale": (lambda f: edit(f, lambda d: d["signal"]["normalization"].update(scale=0)), "scale"),
    "a NaN offset": (lambda f: edit(f, lambda d: d["signal"]["normalization"].update(offset=float("nan"))),
                     "finite"),
    "a domain per axis missing": (lambda f: edit(f, _set_signal("domain", [[0, 8]])), "domain"),
    "channels that disagree with the config": (lambda f: edit(f, _set_signal("channels", 3)), "3 channels"),
    "an audio kind without a sample rate": (
        lambda f: edit(f, lambda d: d["signal"].update(kind="audio", shape=[64], domain=[[0, 64]])),
        "sample rate"),
    "metrics that are a list": (lambda f: (f / "metrics.json").write_text("[]"), "metrics.json is damaged"),
    "metrics that are invalid": (lambda f: (f / "metrics.json").write_text("{psnr: 3"), "metrics.json is damaged"),
    "weights of another size": (lambda f: edit(f, lambda d: d["field"]["config"].update(hidden_dim=5)),
                                "holds layers.0.bias of shape [4], field.json declares [5]"),
    "garbage weights": (lambda f: (f / "field.safetensors").write_bytes(b"garbage"), "cannot read the weights"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_field_dir_is_one_line_on_info_and_render(field_dir, tmp_path, capsys, case):
    damage, message = DAMAGE[case]
    folder = copy_of(field_dir, tmp_path)
    damage(folder)
    assert message in refused(capsys, "info", folder)
    assert message in refused(capsys, "render", folder, "--out", tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_weights_holding_nan_are_refused_with_their_name(field_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    folder = copy_of(field_dir, tmp_path)
    state = load_file(folder / "field.safetensors")
    state["layers.0.weight"][1, 0] = torch.nan
    save_file(state, folder / "field.safetensors")
    assert "layers.0.weight" in refused(capsys, "info", folder)


def test_a_field_with_nan_weights_is_never_written(tmp_path):
    from fieldlab import UserError

    signal = Signal.from_array(np.zeros((4, 4), np.float32), kind="image", channel_axis=False)
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=4, num_layers=1)
    module = config.build()
    with torch.no_grad():
        module.layers[0].bias[0] = torch.inf
    with pytest.raises(UserError, match="infinite"):
        with FieldDirWriter(tmp_path / "f") as folder:
            write_field(folder, module, config, signal.info, {})
    assert list(tmp_path.iterdir()) == []
