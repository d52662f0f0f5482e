"""Segmentation baselines on the shapes store: grid FCNs and the SIREN-weight hypernetwork."""

import csv
import json

import pytest
import torch

from fieldlab.learn import points as P
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import net_config
from fieldlab.learn.segment import confusion, miou


@pytest.fixture(scope="module")
def shapes_store(tmp_path_factory):
    from fieldlab.cli.main import main

    store = tmp_path_factory.mktemp("seg") / "store"
    main(["fit-dataset", "sample:shapes:60", "--field", "siren", "--out", str(store), "--steps", "150",
          "--hidden-dim", "32", "--num-layers", "3"])
    return store


def background_miou(store) -> float:
    """mIoU of calling every point background, on the test scenes train/eval use."""
    from fieldlab.learn.segment import store_masks
    from fieldlab.learn.train import split_rows
    from fieldlab.store.field_store import FieldStore

    _, test_rows, _ = split_rows(FieldStore(store))
    truth = store_masks(FieldStore(store), test_rows)
    return miou(confusion(torch.zeros_like(truth), truth, 4))


def test_fcn_logits_are_the_pixels_on_its_grid_and_interpolate_between():
    torch.manual_seed(0)
    net = net_config("fcn5", channels=4).build(1, 3).eval()
    pts = P.grid((6, 6))
    x = Discretized(torch.randn(2, 36, 1), pts)
    from fieldlab.learn.nets import grid_image

    image = net.logits(grid_image(x))  # (2, 3, 6, 6)
    out = net(x).values  # at the grid's own points, in its coarse-to-fine order
    rows, cols = (pts.raster // 6), (pts.raster % 6)
    assert torch.allclose(out, image[:, :, rows, cols].transpose(1, 2), atol=1e-6)
    midway = torch.tensor([[(-1 + 3 / 6 + -1 + 5 / 6) / 2, -1 + 1 / 6]])  # halfway between pixels (1,0) and (2,0)
    between = net(x, P.PointSet(midway, torch.ones(1) * 4)).values[:, 0]
    assert torch.allclose(between, (image[:, :, 1, 0] + image[:, :, 2, 0]) / 2, atol=1e-6)


def test_train_fcn3_on_shapes_and_eval_at_every_point_set(cli, shapes_store, tmp_path):
    run = tmp_path / "run"
    status, out, err = cli(["train", shapes_store, "--net", "fcn3", "--out", run, "--num-points", 256, "--steps", 100,
                            "--batch-size", 32, "--lr", 3e-3, "--channels", 16])
    assert status == 0, err
    baseline = background_miou(shapes_store)
    metrics = json.loads((run / "run.json").read_text())["metrics"]
    assert metrics["test_miou"] > baseline + 0.1, (metrics, baseline)
    status, out, err = cli(["eval", run, shapes_store, "--points", "grid,qmc,shrunk", "--resolutions", "16,24"])
    assert status == 0, err
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert len(rows) == 6 and all(r["accuracy"] and float(r["accuracy"]) > baseline for r in rows), (rows, baseline)


def test_fcn_needs_a_square_point_count(cli, shapes_store, tmp_path):
    status, out, err = cli(["train", shapes_store, "--net", "fcn3", "--out", tmp_path / "r", "--num-points", 200,
                            "--steps", 2])
    assert status == 2 and "not square" in err, err
    assert not (tmp_path / "r").exists()


def test_seg_hyper_field_is_the_stored_field_before_any_edit(shapes_store):
    """With the stored output layer copied into every class row, the hypernetwork's segmentation field at
    initialisation (zero edit) is the stored field itself, at any points."""
    from fieldlab.learn.field_batch import FieldEvaluator
    from fieldlab.learn.hyper import output_layer
    from fieldlab.store.field_store import FieldStore

    store = FieldStore(shapes_store)
    net = net_config("seg_hyper").build_for_store(store, 3).eval()
    params = store.read(slice(0, 5))
    heads = output_layer(store.config, store.per_field)
    assert heads == ["layers.3.bias", "layers.3.weight"], heads  # 3 sine layers, then the linear output
    with torch.no_grad():
        for k in heads:
            net.base_head[k.replace(".", "__")].copy_(params[k][0].expand_as(net.base_head[k.replace(".", "__")]))
        params = {k: v.clone() for k, v in params.items()}
        for k in heads:
            params[k] = params[k][:1].expand_as(params[k]).clone()  # one output layer for all five fields
    pts = P.qmc(100, 2, scramble=True, seed=4)
    stored = FieldEvaluator.from_store(store)(params, pts).values  # (5, 100, 1)
    logits = net(params, pts).values
    assert logits.shape == (5, 100, 3)
    assert torch.allclose(logits, stored.expand(-1, -1, 3), atol=1e-5)


def test_train_seg_hyper_on_shapes(cli, shapes_store, tmp_path):
    run = tmp_path / "run"
    status, out, err = cli(["train", shapes_store, "--net", "seg_hyper", "--out", run, "--num-points", 256,
                            "--steps", 80, "--batch-size", 16, "--lr", 3e-3, "--hidden", 64])
    assert status == 0, err
    baseline = background_miou(shapes_store)
    assert json.loads((run / "run.json").read_text())["metrics"]["test_miou"] > baseline + 0.1
    status, out, err = cli(["eval", run, shapes_store, "--points", "grid,random", "--resolutions", "16"])
    assert status == 0, err
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert len(rows) == 2 and all(float(r["accuracy"]) > baseline for r in rows), (rows, baseline)


def test_seg_hyper_refuses_fields_with_a_shared_output_layer():
    from fieldlab._errors import UserError
    from fieldlab.fields import make_config
    from fieldlab.learn.hyper import output_layer

    config = make_config("functa", in_dim=2, out_dim=1)
    with pytest.raises(UserError, match="output layer"):
        output_layer(config, {"latent": (64,)})


def test_seg_hyper_reads_per_field_buffers_of_a_fourier_store():
    """A Fourier store keeps each field's random frequencies (a buffer) per field: the hypernetwork reads
    them as stored (they are not edited), so at initialisation its field is the stored field."""
    from fieldlab.fields import make_config
    from fieldlab.learn.field_batch import FieldEvaluator
    from fieldlab.learn.hyper import output_layer

    torch.manual_seed(0)
    config = make_config("fourier", in_dim=2, out_dim=1, hidden_dim=8, num_layers=2)
    fields = [config.build() for _ in range(3)]
    params = {k: torch.stack([dict([*f.named_parameters(), *f.named_buffers()])[k].detach() for f in fields])
              for k in dict([*fields[0].named_parameters(), *fields[0].named_buffers()])}
    per_field = {k: tuple(v.shape[1:]) for k, v in params.items()}
    assert "encoding.frequencies" in per_field
    assert not torch.equal(params["encoding.frequencies"][0], params["encoding.frequencies"][1])
    net = net_config("seg_hyper").build_for_fields(config, per_field, None, 2).eval()
    assert "encoding.frequencies" not in net.edit_names
    heads = output_layer(config, per_field)
    with torch.no_grad():
        for k in heads:
            net.base_head[k.replace(".", "__")].copy_(params[k][0].expand_as(net.base_head[k.replace(".", "__")]))
            params[k] = params[k][:1].expand_as(params[k]).clone()
    pts = P.qmc(40, 2, scramble=True, seed=1)
    stored = FieldEvaluator(config)(params, pts).values  # (3, 40, 1), each field with its own frequencies
    logits = net(params, pts).values
    assert logits.shape == (3, 40, 2)
    assert torch.allclose(logits, stored.expand(-1, -1, 2), atol=1e-5)
    logits.sum().backward()  # the generated weights stay differentiable through the batched path
    assert net.mlp[-1].weight.grad is not None and net.mlp[-1].weight.grad.abs().sum() > 0
