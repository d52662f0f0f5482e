"""Meta-learning of functa and spatial functa: acceptance on real digits, the gradients, stability, DDP."""

import pytest
import torch

from fieldlab import UserError
from fieldlab.fields import make_config
from fieldlab.fit.meta import MetaConfig, MetaLearner
from fieldlab.signals._signal import grid_coords

GRID8 = grid_coords([(0, 8), (0, 8)], [(0, 8), (0, 8)], (8, 8))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 1,797 real 8×8 digits as values (N, 64, 1) in [-1, 1]."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float()
    return (images / 16 * 2 - 1).reshape(len(images), 64, 1)


SMALL = {
    "functa": dict(hidden_dim=32, num_layers=3, latent_dim=32),
    "spatial_functa": dict(hidden_dim=32, num_layers=3, grid_size=2, latent_channels=8),
}


def _config(name, **options):
    return make_config(name, in_dim=2, out_dim=1, **{**SMALL[name], **options}).adapt((8, 8))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_meta_learning_beats_an_untrained_network_on_digits(name, digits):
    train, test = digits[:1500], digits[1500:]
    learner = MetaLearner(_config(name), GRID8, MetaConfig(steps=200, batch_size=16, lr=1e-3, warmup=20,
                                                           device="cpu"))
    _, before = learner.fit_latents(test)  # the same 3-step inner loop through the untrained network
    history = learner.train(train)
    latents, after = learner.fit_latents(test)
    assert latents.shape == (len(test), *learner.latent_shape) and after.shape == (len(test),)
    message = f"{name}: held-out PSNR {before.mean():.2f} dB untrained, {after.mean():.2f} dB meta-learned"
    assert after.mean() > before.mean() + 10 and after.mean() > 19, message
    assert sum(history[-20:]) / 20 > sum(history[:20]) / 20 + 8, message
    assert learner.skipped == 0


def test_the_stack_of_fitted_latents_reproduces_their_psnr(digits):
    learner = MetaLearner(_config("spatial_functa", readout="bilinear"), GRID8, MetaConfig(device="cpu"))
    learner.train(digits[:100], steps=3)
    latents, psnr = learner.fit_latents(digits[:6], batch_size=4)
    stack = learner.stack(latents)
    error = (stack(GRID8.expand(6, -1, -1)) - digits[:6]).square().mean(dim=(1, 2))
    assert torch.allclose(10 * torch.log10(4 / error), psnr.float(), atol=1e-3)
    # Batched fitting equals fitting one datum at a time.
    alone, _ = learner.fit_latents(digits[:6], batch_size=1)
    assert torch.allclose(alone, latents, atol=1e-5)


def _outer_loss(learner, values):
    latents = learner.adapt(values, create_graph=not learner.meta.first_order)
    return learner.field_errors(latents, values).mean()


@pytest.mark.parametrize("first_order", [False, True])
def test_outer_gradient_is_second_order_unless_asked(first_order, digits):
    """In float64 the second-order gradient of one shared weight matches a central finite difference of
    the whole inner-loop-then-loss function; the first-order one does not."""
    learner = MetaLearner(_config("functa", hidden_dim=8, num_layers=2, latent_dim=4), GRID8.double(),
                          MetaConfig(device="cpu", first_order=first_order, rate_init=(0.5, 0.9)))
    learner.fields.double()
    learner.rates.data = learner.rates.data.double()
    learner.coords = learner.coords.double()
    values = digits[:4].double()
    weight = learner.fields.shared_params()["siren.layers.1.weight"]
    _outer_loss(learner, values).backward()
    analytic = weight.grad[0, 0].item()
    h = 1e-6
    with torch.no_grad():
        weight[0, 0] += h
    up = _outer_loss(learner, values).item()
    with torch.no_grad():
        weight[0, 0] -= 2 * h
    down = _outer_loss(learner, values).item()
    numeric = (up - down) / (2 * h)
    close = abs(analytic - numeric) <= 1e-5 * max(1.0, abs(numeric))
    assert close != first_order, (analytic, numeric)
    assert learner.rates.grad is not None and learner.rates.grad.abs().sum() > 0  # Meta-SGD rates learn


def test_a_non_finite_gradient_is_skipped(digits):
    learner = MetaLearner(_config("functa"), GRID8, MetaConfig(device="cpu", batch_size=4))
    before = [p.detach().clone() for p in learner.parameters]
    bad = digits[:4].clone()
    bad[0, 0, 0] = float("nan")
    learner.step(bad)
    assert learner.skipped == 1
    assert all(torch.equal(a, p) for a, p in zip(before, learner.parameters))
    learner.step(digits[:4])
    assert learner.skipped == 1 and not torch.equal(before[0], learner.parameters[0])


def test_warmup_ramps_the_outer_learning_rate():
    learner = MetaLearner(_config("functa"), GRID8, MetaConfig(device="cpu", steps=100, warmup=10, lr=1e-3))
    rates = [learner.schedule.factor(s) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.1, abs=0.01) and max(rates) == pytest.approx(1.0)


def test_shared_state_round_trips_and_mismatches_are_refused(digits):
    config = _config("functa")
    learner = MetaLearner(config, GRID8, MetaConfig(device="cpu", batch_size=4))
    learner.train(digits[:20], steps=2)
    other = MetaLearner(config, GRID8, MetaConfig(device="cpu", seed=5))
    other.load_state_dict(learner.state_dict())
    assert torch.equal(other.fit_latents(digits[:5])[0], learner.fit_latents(digits[:5])[0])
    wrong = MetaLearner(_config("functa", latent_dim=7), GRID8, MetaConfig(device="cpu"))
    with pytest.raises(UserError, match="shape"):
        wrong.load_state_dict(learner.state_dict())


def test_only_latent_fields_can_be_meta_learned():
    with pytest.raises(UserError, match="no latent"):
        MetaLearner(make_config("siren", hidden_dim=8), GRID8)
    with pytest.raises(UserError, match="--inner-steps must be positive"):
        MetaConfig(inner_steps=0).validate()


def _ddp_worker(rank, rendezvous, world, values, result_path):
    import torch.distributed as dist

    torch.set_num_threads(1)
    # A file rendezvous: no port chosen in advance that another process could take in between.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        learner = MetaLearner(_config("functa"), GRID8, MetaConfig(device="cpu", batch_size=8))
        learner.train(values, steps=2)  # each rank steps on its half of the same global batches
        states = [None] * world
        dist.all_gather_object(states, learner.state_dict())
        if rank == 0:
            same = all(torch.equal(states[0][k], s[k]) for s in states for k in states[0])
            torch.save({**states[0], "ranks_agree": torch.tensor(same)}, result_path)
        dist.barrier()  # rank 1 must not tear the group down while rank 0 still writes (gloo aborts rank 0)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_train_as_one_process(tmp_path, digits):
    """Two ranks, each on half of every batch, with all-reduced gradients, equal one process on whole batches."""
    import torch.multiprocessing as mp

    values = digits[:40].clone()
    mp.spawn(_ddp_worker, args=(tmp_path / "rendezvous", 2, values, tmp_path / "rank0.pt"), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert distributed.pop("ranks_agree")  # every rank holds the same weights
    single = MetaLearner(_config("functa"), GRID8, MetaConfig(device="cpu", batch_size=8))
    single.train(values, steps=2)
    for name, value in single.state_dict().items():
        assert torch.allclose(distributed[name], value, atol=1e-5), name
    assert not torch.allclose(distributed["meta_rates"],
                              MetaLearner(_config("functa"), GRID8, MetaConfig(device="cpu")).rates.detach())


def test_fit_dataset_meta_learns_and_resumes(cli, tmp_path):
    import numpy as np
    import zarr

    from fieldlab.store.field_store import FieldStore

    store = tmp_path / "S"
    args = ["fit-dataset", "sample:digits", "--field", "spatial_functa", "--limit", "40", "--chunk-fields", "16",
            "--hidden-dim", "16", "--num-layers", "2", "--grid-size", "2", "--latent-channels", "4",
            "--meta-steps", "30", "--meta-batch-size", "8", "--meta-lr", "1e-3", "--warmup", "5",
            "--test-fraction", "0.25", "--device", "cpu", "--quiet", "--out", store]
    status, out, err = cli(args)
    assert status == 0, err
    fields = FieldStore(store)
    assert fields.summary()["complete"] == 40 and fields.per_field == {"latent": (4, 2, 2)}
    assert "meta_rates" in fields.shared()
    latents = fields.read(slice(0, 40))["latent"]
    # The stored shared network and latents reproduce the stored PSNR.
    from sklearn.datasets import load_digits

    values = torch.from_numpy(load_digits().images[:40]).float().div(16).mul(2).sub(1).reshape(40, 64, 1)
    prediction = fields.stack(np.arange(40))(GRID8.expand(40, -1, -1))
    psnr = 10 * torch.log10(4 / (prediction - values).square().mean(dim=(1, 2)))
    assert torch.allclose(psnr, torch.from_numpy(fields.column("psnr")), atol=1e-3)
    # Lose the last chunk as a killed run would: --resume refits it (with the stored network) to the same latents.
    group = zarr.open_group(str(store), mode="r+")
    group["done"][32:] = False
    group["params/latent"][32:] = 0
    status, _, err = cli(args + ["--resume"])
    assert status == 0, err
    again = FieldStore(store)
    assert again.summary()["complete"] == 40
    assert torch.allclose(again.read(slice(0, 40))["latent"], latents, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--field", "functa", "--steps", "10"], "--steps does not apply to functa"),
    (["--field", "functa", "--target-accuracy", "0.9"], "--target-accuracy does not apply to functa"),
    (["--field", "siren", "--meta-steps", "10"], "--meta-steps applies to functa and spatial_functa only"),
    (["--field", "functa", "--inner-steps", "0"], "--inner-steps must be positive"),
])
def test_fit_dataset_refuses_meta_options_that_do_not_apply(cli, tmp_path, args, message):
    status, _, err = cli(["fit-dataset", "sample:digits", "--limit", "4", "--device", "cpu", "--quiet", *args,
                          "--out", tmp_path / "S"])
    assert status == 2 and message in err, err
    assert not (tmp_path / "S").exists()


def test_a_saved_training_state_goes_on_as_if_never_stopped(digits, tmp_path):
    from fieldlab.store.field_dir import save_checkpoint

    meta = MetaConfig(steps=6, batch_size=8, lr=1e-3, warmup=2, device="cpu")  # jittered points: both generators
    whole = MetaLearner(_config("functa"), GRID8, meta)
    for _ in range(6):
        whole.step(whole.sample(digits))
    first = MetaLearner(_config("functa"), GRID8, meta)
    for _ in range(3):
        first.step(first.sample(digits))
    save_checkpoint(first.training_state(), tmp_path / "state.pt")
    second = MetaLearner(_config("functa"), GRID8, meta)
    second.load_training_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert second.step_count == 3
    for _ in range(3):
        second.step(second.sample(digits))
    assert not torch.equal(first.state_dict()["meta_rates"], whole.state_dict()["meta_rates"])
    for name, value in whole.state_dict().items():
        assert torch.equal(second.state_dict()[name], value), name


def test_fit_dataset_keeps_meta_learning_across_an_interrupt_and_the_time_limit(cli, tmp_path, monkeypatch):
    from fieldlab import _deadline
    from fieldlab.fit import loop
    from fieldlab.fit.job import checkpoint_path
    from fieldlab.store.field_store import FieldStore

    args = ["fit-dataset", "sample:digits", "--field", "functa", "--limit", "16", "--chunk-fields", "16",
            "--hidden-dim", "16", "--num-layers", "2", "--latent-dim", "8", "--meta-steps", "6",
            "--meta-batch-size", "4", "--warmup", "2", "--device", "cpu", "--quiet"]
    status, _, err = cli(args + ["--out", tmp_path / "whole"])
    assert status == 0, err
    expected = FieldStore(tmp_path / "whole").shared()
    monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every meta-step
    step = MetaLearner.step

    def killed_at_step_4(self, values):
        if self.step_count == 3:
            raise KeyboardInterrupt
        return step(self, values)

    cut = tmp_path / "cut"
    monkeypatch.setattr(MetaLearner, "step", killed_at_step_4)
    status, _, err = cli(args + ["--out", cut])
    assert status == 130 and "meta-learning" in err, err
    assert checkpoint_path(cut).is_file() and not cut.exists()
    monkeypatch.setattr(MetaLearner, "step", step)
    # a resume with other options does not take the checkpoint
    status, _, err = cli(args + ["--meta-lr", "1e-3", "--out", cut, "--resume"])
    assert status == 2 and "other options" in err, err
    # then the time limit stops it again two steps on, saved; and a last --resume finishes as one run would
    asked = []

    def out_of_time(self, keep=0.0):
        asked.append(keep)
        return len(asked) > 2

    with monkeypatch.context() as patch:
        patch.setattr(_deadline.Deadline, "out_of_time", out_of_time)
        status, out, err = cli(args + ["--out", cut, "--resume", "--max-seconds", "1000"])
    assert status == 0 and "meta-learning stopped after step 5 of 6" in err, err
    assert checkpoint_path(cut).is_file() and not cut.exists()
    status, _, err = cli(args + ["--out", cut, "--resume"])
    assert status == 0, err
    assert not checkpoint_path(cut).exists() and FieldStore(cut).summary()["complete"] == 16
    shared = FieldStore(cut).shared()
    for name, value in expected.items():
        assert torch.equal(shared[name], value), name
