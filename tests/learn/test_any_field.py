"""Any field in: every network that reads fields at points reads a store of every batched field type, and
`eval` takes a store of another field type of the same signals (issue 20).

Stores are tiny (8 digits at 8×8, 2 fitting steps) and made once per field type through `fit-dataset`.
"""

import json

import pytest
import torch

from fieldlab.cli.main import main
from fieldlab.fields import get_config_class, list_fields
from fieldlab.learn import list_nets, net_config
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.learn.points import PointSampler
from fieldlab.learn.train import input_points, load_split, make_input, segment_logits
from fieldlab.store.field_store import FieldStore

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = [name for name in list_fields() if get_config_class(name).batched]
POINT_READERS = [name for name in list_nets() if net_config(name).takes != "params"
                 and net_config(name).task in ("classify", "segment")]


def run(args) -> int:
    """`fieldlab ARGS` in-process; its exit status."""
    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def fit_store(path, field, *extra):
    meta = hasattr(get_config_class(field), "latent_shape")  # meta-learned: its own few steps
    steps = ["--meta-steps", "2", "--inner-steps", "1", "--meta-batch-size", "4"] if meta else ["--steps", "2"]
    assert run(["fit-dataset", "sample:digits", "--limit", "8", "--field", field, *steps, "--quiet",
                "--out", path, *extra]) == 0
    return path


@pytest.fixture(scope="module")
def store_of(tmp_path_factory):
    """store_of(field) -> a FieldStore of 8 digits as `field` fields, fitted on first use."""
    made = {}

    def get(field):
        if field not in made:
            made[field] = FieldStore(fit_store(tmp_path_factory.mktemp("any") / field, field))
        return made[field]

    return get


def test_every_batched_field_and_point_reader_is_covered():
    assert "local-global" in FIELDS and "miner" in FIELDS  # the two this file was written for
    assert {"dinet", "nuft", "cnn4"} <= set(POINT_READERS)


@pytest.mark.parametrize("net", POINT_READERS)
@pytest.mark.parametrize("field", FIELDS)
def test_every_point_reading_net_reads_every_batched_field_type(field, net, store_of):
    store = store_of(field)
    cfg = net_config(net)
    if hasattr(cfg, "for_points"):
        cfg = cfg.for_points(64, 2)
    model = cfg.build(store.signal.channels, 10, 2).eval()
    split = load_split(store, store.rows()[:4], "cpu")
    points = PointSampler(kind="grid" if cfg.takes == "grid" else "qmc", n=64, dim=2)()
    with torch.no_grad():
        x = make_input(cfg, FieldEvaluator.from_store(store), split.params, input_points(cfg, points))
        out = segment_logits(model, cfg, x, points) if cfg.task == "segment" else model(x)
    assert out.shape[0] == 4 and out.shape[-1] == 10
    assert torch.isfinite(out).all()


def test_local_global_fields_read_at_points_equal_the_stored_fields(store_of):
    """The regression behind the crash: a store holds the partition slots as float32; evaluated through
    FieldEvaluator they must route as the store's own stack does."""
    store = store_of("local-global")
    rows = store.rows()[:3]
    points = PointSampler(kind="random", n=50, dim=2)()
    expected = store.stack(rows)(points.coords.expand(3, -1, -1))
    got = FieldEvaluator.from_store(store)(load_split(store, rows, "cpu").params, points).values
    torch.testing.assert_close(got, expected.float())


def test_miner_fields_fit_as_a_dataset_and_read_at_points_equal_their_single_modules(store_of):
    store = store_of("miner")
    assert store.config.block_size * 2 ** (store.config.scales - 1) >= 8  # one coarsest block covers a digit
    rows = store.rows()[:2]
    stack = store.stack(rows)
    points = PointSampler(kind="random", n=40, dim=2)()
    got = FieldEvaluator.from_store(store)(load_split(store, rows, "cpu").params, points).values
    for i in range(2):
        torch.testing.assert_close(got[i], stack.field(i)(points.coords).float(), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def runs(store_of, tmp_path_factory):
    """A dinet and an mlp run, 2 steps each, on the SIREN store."""
    out = {}
    for net in ("dinet", "mlp"):
        out[net] = tmp_path_factory.mktemp("runs") / net
        assert run(["train", store_of("siren").path, "--net", net, "--steps", "2", "--batch-size", "4",
                    "--num-points", "64", "--out", out[net]]) == 0
    return out


def refused(capsys, args) -> str:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fieldlab: error:")
    return err[0]


def test_a_point_reading_run_evaluates_a_store_of_another_field_type(runs, store_of, capsys):
    assert run(["eval", runs["dinet"], store_of("local-global").path, "--points", "grid", "--resolutions", "8"]) == 0
    assert json.loads((runs["dinet"] / "run.json").read_text())["shape"] == [8, 8]


def test_a_weight_reading_run_refuses_a_store_of_another_field_type(runs, store_of, capsys):
    before = sorted(p.name for p in runs["mlp"].iterdir())
    line = refused(capsys, ["eval", str(runs["mlp"]), str(store_of("fourier").path), "--points", "grid",
                            "--resolutions", "8"])
    assert "reads the stored weights of siren fields" in line
    assert sorted(p.name for p in runs["mlp"].iterdir()) == before


def test_a_store_of_other_signal_shapes_is_refused(runs, make_blob_store, capsys):
    other = make_blob_store("blobs", num_fields=40)  # 16x16 siren fields
    before = sorted(p.name for p in runs["dinet"].iterdir())
    line = refused(capsys, ["eval", str(runs["dinet"]), str(other), "--points", "grid", "--resolutions", "8"])
    assert "trained on 8x8 signals" in line and "16x16" in line
    assert sorted(p.name for p in runs["dinet"].iterdir()) == before
