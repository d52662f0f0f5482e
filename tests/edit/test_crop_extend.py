"""Crop and extend partitioned fields: kept and old regions render bit for bit as before."""

import re

import numpy as np
import pytest
import torch

from fieldlab import UserError
from fieldlab.edit import render
from fieldlab.edit.crop import crop_field, parse_box, write_cropped
from fieldlab.edit.extend import extend_field
from fieldlab.fields import make_config
from fieldlab.fit import FitConfig, fit
from fieldlab.signals import Signal
from fieldlab.store import StoredField, load_field


def fitted(signal, steps=10, **options):
    options = {"hidden_dim": 4, "global_dim": 8, **options}
    config = make_config("local-global", in_dim=len(signal.shape), out_dim=signal.info.channels,
                         **options).adapt(signal.shape)
    result = fit(signal, config, FitConfig(steps=steps, device="cpu"))
    return StoredField(result.field.eval(), config, signal.info, result.metrics)


def rebuilt(config, state, info):
    module = config.build()
    module.load_state_dict(state)
    return StoredField(module.eval(), config, info, {})


@pytest.fixture(scope="module")
def camera_field(camera32):
    return fitted(camera32, partitions=(4, 4))


def test_keep_box_deletes_a_quarter_and_renders_the_box_exactly(camera_field):
    config, state, info = crop_field(camera_field, keep=((0, 32), (0, 24)))
    cropped = rebuilt(config, state, info)
    assert config.num_parts == 12 and info.shape == (32, 24)
    local = [sum(v.numel() for k, v in s.items() if k.startswith("local_"))
             for s in (camera_field.module.state_dict(), state)]
    assert local[1] * 4 == local[0] * 3  # 75% of the local parameters
    assert torch.equal(render(cropped), render(camera_field, region=[(0, 32), (0, 24)]))


@pytest.mark.parametrize("box", [((5, 27), (3, 20)), ((9, 10), (30, 32))])
def test_uneven_box_rebases_the_signal_and_stays_exact(camera32, box):
    field = fitted(camera32, partitions=(3, 5))  # 32 is divisible by neither
    config, state, info = crop_field(field, keep=box)
    cropped = rebuilt(config, state, info)
    assert config.num_parts < 15
    assert torch.equal(render(cropped), render(field, region=[tuple(map(float, b)) for b in box]))
    # Cropping the crop again: still exact, in the cropped signal's own sample units.
    inner = ((0, 1), (0, 1)) if box[0][1] - box[0][0] == 1 else ((2, 10), (4, 9))
    config2, state2, info2 = crop_field(cropped, keep=inner)
    twice = rebuilt(config2, state2, info2)
    assert torch.equal(render(twice), render(cropped, region=[tuple(map(float, b)) for b in inner]))


def test_remove_parts_zeroes_them_and_keeps_the_rest(camera_field):
    config, state, info = crop_field(camera_field, remove=[0, 5])
    cropped = rebuilt(config, state, info)
    assert config.num_parts == 14 and info.shape == camera_field.signal.shape
    before, after = render(camera_field), render(cropped)
    assert (after[0:8, 0:8] == 0).all() and (after[8:16, 8:16] == 0).all()
    assert torch.equal(after[16:], before[16:]) and torch.equal(after[:8, 8:], before[:8, 8:])


def test_cropped_dir_round_trips(camera_field, tmp_path):
    result = write_cropped(camera_field, tmp_path / "c", keep=((0, 16), (8, 32)))
    stored = load_field(tmp_path / "c")
    assert stored.config == result.config and stored.signal == result.signal
    assert stored.metrics["params"] == sum(p.numel() for p in stored.module.parameters())
    assert torch.equal(render(stored), render(camera_field, region=[(0, 16), (8, 32)]))
    assert (tmp_path / "c" / "reconstruction.png").is_file()


@pytest.mark.parametrize("kwargs, message", [
    ({"keep": ((0, 8), (0, 8)), "remove": [1]}, "exactly one"),
    ({"remove": [16]}, "does not exist"),
    ({"remove": list(range(16))}, "every partition"),
])
def test_bad_crops(camera_field, kwargs, message):
    with pytest.raises(UserError, match=message):
        crop_field(camera_field, **kwargs)


def test_bad_boxes():
    with pytest.raises(UserError, match="leaves the signal"):
        parse_box("0:40,0:8", (32, 32))
    with pytest.raises(UserError, match="needs 2"):
        parse_box("0:8", (32, 32))
    assert parse_box(":,8:", (32, 32)) == ((0, 32), (8, 32))


def test_fields_without_partitions_cannot_be_cropped(camera32):
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=8)
    stored = StoredField(config.build(), config, camera32.info, {})
    with pytest.raises(UserError, match="cannot be cropped"):
        crop_field(stored, keep=((0, 8), (0, 8)))


def wider(camera32, astronaut32):
    """camera32 with 16 columns of the astronaut's red channel appended on the right (32×48)."""
    old = camera32.info.normalization.decode(camera32.values)
    new = camera32.info.normalization.decode(astronaut32.values[:, :16, :1])
    return Signal.from_array(np.concatenate([old, new], axis=1), kind="image")


def test_extend_leaves_the_old_region_and_fits_the_new(camera_field, camera32, astronaut32):
    signal = wider(camera32, astronaut32)
    start = extend_field(camera_field, signal, FitConfig(steps=1, device="cpu"))
    result = extend_field(camera_field, signal, FitConfig(steps=40, device="cpu"))
    field = result.field
    assert field.signal.shape == (32, 48) and field.config.num_parts == 16 + 8  # two new columns of 4
    assert torch.equal(render(field, region=[(0, 32), (0, 32)]), render(camera_field))
    shared = {k: v for k, v in camera_field.module.state_dict().items() if not k.startswith("local_")}
    assert all(torch.equal(field.module.state_dict()[k], v) for k, v in shared.items())
    assert field.metrics["psnr_new_region"] > start.field.metrics["psnr_new_region"] + 0.5
    assert torch.equal(render(field), result.prediction)


def test_extend_a_clip_whose_length_no_count_divides():
    t = np.linspace(0, 1, 1013, dtype=np.float32)
    clip = np.sin(30 * t)[:, None]
    short = Signal.from_array(clip[:701], kind="audio", normalization=None, extra={"sample_rate": 1013})
    field = fitted(short, partitions=(9,), steps=5)
    longer = Signal.from_array(clip, kind="audio", normalization=short.info.normalization, extra={"sample_rate": 1013})
    result = extend_field(field, longer, FitConfig(steps=5, device="cpu"))
    assert result.field.signal.shape == (1013,)
    assert result.field.config.edges[0][-1] == 1013 and result.field.config.num_parts > 9
    assert torch.equal(render(result.field, region=[(0, 701)]), render(field))


def test_extend_refuses_what_is_not_larger(camera_field, camera32, astronaut32):
    with pytest.raises(UserError, match="must be larger"):
        extend_field(camera_field, camera32, FitConfig(steps=1, device="cpu"))
    with pytest.raises(UserError, match="channels"):
        extend_field(camera_field, Signal.from_array(np.zeros((32, 40, 3), np.uint8), kind="image"),
                     FitConfig(steps=1, device="cpu"))


@pytest.fixture(scope="module")
def good_camera_field(camera32):
    """camera32 fitted to about 23 dB (2×2 partitions, 100 steps at lr 1e-2), well enough to tell another
    picture from it; on one thread, which takes 0.3 s where two spend 8 s synchronising."""
    config = make_config("local-global", in_dim=2, out_dim=1, hidden_dim=4, global_dim=8,
                         partitions=(2, 2)).adapt(camera32.shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit(camera32, config, FitConfig(steps=100, lr=1e-2, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    assert result.metrics["psnr"] > 20
    return StoredField(result.field.eval(), config, camera32.info, result.metrics)


def no_fitting(monkeypatch):
    """Fail the test if extend gets as far as building its Fitter."""
    def fitter(*args, **kwargs):
        raise AssertionError("extend started fitting")
    monkeypatch.setattr("fieldlab.edit.extend.Fitter", fitter)


@pytest.mark.parametrize("other", ["astronaut", "camera48"])
def test_extend_refuses_an_input_that_does_not_start_with_the_old_signal(good_camera_field, camera32, astronaut32,
                                                                        monkeypatch, other):
    if other == "astronaut":  # another picture, 32×48
        raw = camera32.info.normalization.decode(astronaut32.values[..., :1])
        signal = Signal.from_array(np.concatenate([raw, raw[:, :16]], axis=1), kind="image")
    else:  # the same camera read at another scale (larger on both axes): its first 32×32 are a corner of it
        from fieldlab.signals import load_signal
        signal = load_signal("sample:camera", max_size=48)
    no_fitting(monkeypatch)
    with pytest.raises(UserError, match="does not hold the field's signal") as error:
        extend_field(good_camera_field, signal, FitConfig(steps=1, device="cpu"))
    measured, recorded = map(float, re.findall(r"PSNR (\d+\.\d) dB, against (\d+\.\d) dB", str(error.value))[0])
    assert recorded == round(good_camera_field.metrics["psnr"], 1) and measured < 15


def test_extend_takes_the_old_signal_and_one_with_a_removed_cell(good_camera_field, camera32, astronaut32):
    """The check passes the right INPUT, and leaves out a cell a crop removed (it renders 0 and is fitted
    again): with that quarter of the picture at 0 the field reads 15.5 dB, below the 22.8 - 6 it must reach."""
    signal = wider(camera32, astronaut32)
    extend_field(good_camera_field, signal, FitConfig(steps=1, device="cpu"))
    config, state, info = crop_field(good_camera_field, remove=[0])
    holed = StoredField(rebuilt(config, state, info).module, config, info,
                        {"psnr_before_crop": good_camera_field.metrics["psnr"]})
    result = extend_field(holed, signal, FitConfig(steps=1, device="cpu"))
    assert result.field.metrics["new_partitions"] == 3  # two to the right, and the removed one
