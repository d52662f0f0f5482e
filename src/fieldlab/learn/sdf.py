"""The SDF task of DI-Net: a field of a scene of balls in, its signed distance field out, queried anywhere.

Scenes (`fieldlab.signals.balls`): 2–4 balls per scene, centres uniform in [-0.6, 0.6]^d, radii uniform in
[0.15, 0.35] (canonical units, domain [-1, 1]^d).

Input field, one of:
- the exact procedural soft occupancy tanh(-sdf / 0.05) of 3-D scenes (the default), evaluated at the
  network's input point set, so the task tests the network, not a fit;
- neural fields fitted to the scenes (`--store`): a FieldStore of `fieldlab fit-dataset sample:balls`
  (2-D scenes rendered as 32×32 images), read through the batched path (`FieldEvaluator`) at the input
  point set, as DI-Net fed SIRENs of its rendered scenes. The task is then 2-D: the network predicts the
  2-D scene's SDF. The scene of a row is regenerated from its source item (augmented rows are refused:
  a flip or crop would move the geometry);
- or a FieldStore of occupancy fields of a folder of meshes (`fieldlab fit-dataset MESHES`): 3-D, the
  target each mesh's SDF on the store's grid, recomputed from the meshes (`learn/_sdf_store.py`).

Target: the SDF clipped to [-1, 1] (the net's tanh range), at query points drawn independently of the
input points, uniform over the domain. Error: mean absolute SDF error at fresh query points of the held-out
scenes (every 5th scene, or the store's test split), beside the trivial baseline of the training scenes'
mean SDF, a constant.

Training: `SDFTask` (this file) on the one learn loop (`fieldlab.learn.loop.train_loop`: AdamW, warm-up and
cosine, checkpoints, time limit, progress); the input point set is drawn every step by a `PointSampler`
(randomized QMC by default; `--points` as in classification).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn

from fieldlab import _deadline
from fieldlab._errors import UserError
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import net_config
from fieldlab.learn.points import PointSampler, PointSet
from fieldlab.learn.task import Metric, Task
from fieldlab.signals.balls import BALLS_SEED, EDGE, ball_scenes, occupancy, scene_sdf

__all__ = ["EDGE", "SDFConfig", "SDFTask", "Scenes", "ball_scenes", "evaluate_sdf", "occupancy", "scene_sdf", "train_sdf"]

FORMAT = "fieldlab.sdf-run"


@dataclasses.dataclass(frozen=True)
class SDFConfig:
    scenes: int = 200
    """Procedural 3-D scenes (ignored with `store`)."""
    store: str | None = None
    """A FieldStore to read the input from, instead of the exact field: of `sample:balls` or of a folder of meshes."""
    points: str = "rqmc"
    """Input point set: grid, qmc, rqmc, random, shrunk or mixed."""
    mix: str = "grid,qmc,shrunk"
    """With points mixed: the point sets drawn from, one per step (comma-separated)."""
    num_points: int = 512
    """Input points per scene per step."""
    num_queries: int = 512
    """Query points per scene per step (and per test batch)."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 16
    """Scenes per step."""
    lr: float = 1e-2
    """Peak AdamW learning rate (warm-up, then cosine)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup: int = 20
    """Steps of linear learning-rate warm-up."""
    seed: int = 0
    """Random seed (scenes and training)."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """The training steps' precision, as fit's: fp32; tf32 matmuls; bf16 autocast of the forward pass and
    loss (weights, AdamW and the test error stay fp32)."""
    max_seconds: float | None = None
    """Stop training after this many seconds (then score what was learnt); 0 means no time limit; unset:
    none on a GPU, 120 on a CPU (`fit.device_defaults`)."""
    net_options: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        for name in ("scenes", "num_points", "num_queries", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.scenes < 5 and self.store is None:
            raise UserError(f"--scenes must be at least 5 (every 5th scene is held out), got {self.scenes}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.precision not in ("fp32", "tf32", "bf16"):
            raise UserError(f"--precision must be fp32, tf32 or bf16, got {self.precision!r}")
        from fieldlab._validate import bounded_float
        from fieldlab.fit.config import MAX_SECONDS
        from fieldlab.fit.loop import resolve_device

        bounded_float(self.max_seconds or 0.0, "--max-seconds", 0, MAX_SECONDS)
        resolve_device(self.device)

    def sampler(self, dim: int) -> PointSampler:
        return PointSampler(kind=self.points, n=self.num_points, dim=dim, seed=self.seed, mix=tuple(self.mix.split(",")))


class Scenes:
    """The scenes of a run: geometry (centres, radii), train / test indices, and the input field."""

    def __init__(self, centres, radii, train: torch.Tensor, test: torch.Tensor, params=None, evaluator=None,
                 grids: torch.Tensor | None = None):
        self.centres, self.radii, self.train, self.test = centres, radii, train, test
        self.params, self.evaluator = params, evaluator
        self.grids = grids
        """SDF on a grid (scenes, R, R, R) where the scenes are meshes (centres and radii are then None)."""
        self.dim = centres.shape[-1] if grids is None else grids.dim() - 1

    @classmethod
    def procedural(cls, count: int, seed: int) -> Scenes:
        centres, radii = ball_scenes(count, seed)
        held = torch.arange(count) % 5 == 4
        return cls(centres, radii, torch.nonzero(~held)[:, 0], torch.nonzero(held)[:, 0])

    @classmethod
    def from_store(cls, path: str | Path) -> Scenes:
        from fieldlab.learn.field_batch import FieldEvaluator
        from fieldlab.learn.train import split_rows
        from fieldlab.store.field_store import FieldStore

        from fieldlab.learn._sdf_store import is_mesh_store, mesh_store_targets

        store = FieldStore(path)
        spec = str(store.attrs.get("source", {}).get("spec", ""))
        balls = spec.startswith("sample:balls") and store.signal.in_dim == 2 and store.signal.channels == 1
        if not balls and not is_mesh_store(store):
            raise UserError(f"{path} holds fields of {spec or 'an unknown source'}; --store needs a store of shapes "
                            "with an SDF: fit-dataset sample:balls, or fit-dataset of a folder of meshes")
        store.require_complete()
        rows = store.rows()
        if (store.column("augment")[rows] > 0).any():
            raise UserError(f"{path} holds augmented rows; the SDF task needs the scenes as drawn (fit without --augment)")
        train_rows, test_rows, _ = split_rows(store)
        position = {int(r): i for i, r in enumerate(rows)}
        pick = lambda chosen: torch.tensor([position[int(r)] for r in chosen], dtype=torch.long)  # noqa: E731
        fields = (pick(train_rows), pick(test_rows), store.read(rows), FieldEvaluator.from_store(store))
        if not balls:
            return cls(None, None, *fields, grids=mesh_store_targets(store, rows))
        centres, radii = ball_scenes(len(rows), BALLS_SEED, dim=2, index=store.column("source_index")[rows])
        return cls(centres, radii, *fields)

    def to(self, device: torch.device | str) -> Scenes:
        """The scenes with their geometry and stored fields on `device` (indices stay on the CPU)."""
        params = None if self.params is None else {k: v.to(device) for k, v in self.params.items()}
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Scenes(move(self.centres), move(self.radii), self.train, self.test, params, self.evaluator,
                      move(self.grids))

    def inputs(self, index: torch.Tensor, points: PointSet) -> torch.Tensor:
        """The input field (b, n, 1) of scenes `index` at `points`."""
        if self.evaluator is None:
            return occupancy(self.centres[index], self.radii[index], points.coords)
        return self.evaluator({k: v[index] for k, v in self.params.items()}, points).values

    def sdf(self, index: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """The clipped target SDF (b, n)."""
        if self.grids is not None:
            from fieldlab.learn._sdf_store import sdf_at

            return sdf_at(self.grids[index], coords).clamp(-1, 1)
        return scene_sdf(self.centres[index], self.radii[index], coords).clamp(-1, 1)


def open_scenes(config: SDFConfig) -> Scenes:
    return Scenes.procedural(config.scenes, config.seed) if config.store is None else Scenes.from_store(config.store)


@torch.no_grad()
def sdf_mae(net: nn.Module, scenes: Scenes, index: torch.Tensor, points: PointSet, queries: PointSet,
            batch_size: int = 16) -> float:
    """Mean |predicted - true| clipped SDF at `queries`, the inputs sampled at `points`."""
    net.eval()
    total = 0.0
    for start in range(0, len(index), batch_size):
        chunk = index[start:start + batch_size]
        pred = net(Discretized(scenes.inputs(chunk, points), points), queries).values[..., 0]
        total += float((pred - scenes.sdf(chunk, queries.coords)).abs().sum())
    return total / (len(index) * len(queries))


class SDFTask(Task):
    """A scene's field in, its clipped SDF at query points out: mean squared error in training, the mean
    absolute error of the held-out scenes as the score, beside the training scenes' mean SDF as the baseline."""

    metric = Metric("sdf_mae", "test_mae", higher_is_better=False, fraction=False, unit="SDF units",
                    label="mean absolute SDF error of the held-out scenes (lower is better)", short="SDF MAE")

    def __init__(self, scenes: Scenes, config: SDFConfig, device: torch.device, queries: PointSet):
        self.scenes, self.config, self.device = scenes, config, device
        self.queries = queries
        """The held-out scenes' query points (fixed, drawn apart from every training step's)."""
        self.sampler = config.sampler(scenes.dim)
        self.query_sampler = PointSampler(kind="random", n=config.num_queries, dim=scenes.dim, seed=config.seed + 1)
        """A training step's query points (drawn by step)."""

    def loss(self, model: nn.Module, step: int) -> torch.Tensor:
        from fieldlab.fit.points import step_generator, with_replacement

        config, scenes = self.config, self.scenes
        g = step_generator(config.seed, step)
        pick = scenes.train[with_replacement(len(scenes.train), config.batch_size, g)]
        points = self.sampler(step).to(self.device)
        queries = self.query_sampler(step).to(self.device)
        pred = model(Discretized(scenes.inputs(pick, points), points), queries).values[..., 0]
        return nn.functional.mse_loss(pred.float(), scenes.sdf(pick, queries.coords))

    def score(self, net: nn.Module, sampler: PointSampler) -> float:
        return sdf_mae(net, self.scenes, self.scenes.test, sampler(10_000).to(self.device), self.queries)

    def test_sampler(self) -> PointSampler:
        return self.sampler

    def baseline(self) -> dict[str, float]:
        constant = self.scenes.sdf(self.scenes.train, self.queries.coords).mean()
        return {"baseline_mae": float((self.scenes.sdf(self.scenes.test, self.queries.coords) - constant).abs().mean())}

    def test_metrics(self, net: nn.Module) -> dict[str, float]:
        return {**super().test_metrics(net), **self.baseline()}


def test_queries(config: SDFConfig, dim: int, device, seed: int | None = None) -> PointSet:
    """The fixed query points the held-out scenes are scored at (`seed`: eval's, else the run's)."""
    seed = config.seed if seed is None else seed
    return PointSampler(kind="random", n=config.num_queries, dim=dim, seed=seed + 2)(0).to(device)


def train_sdf(config: SDFConfig, out: str | Path | None = None, progress=print, bar: bool = False,
              tensorboard: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train the `sdf` network on ball scenes; metrics {test_mae, baseline_mae, …} (and RUN files if `out`,
    locked against a second writer while this runs). `progress` takes a line every 100 steps; `bar` also
    shows a progress bar with ETA and the loss on stderr; `tensorboard` logs the loss to `out`/tensorboard.
    With `out`, RUN/checkpoint.pt keeps the network, AdamW, step and RNG every `CHECKPOINT_SECONDS` of
    training (as `fit`'s); `resume` continues from it, to the network an uninterrupted run would have."""
    from fieldlab._safety import lock_output

    with lock_output(Path(out)) if out is not None else contextlib.nullcontext():
        return _train_sdf(config, out, progress, bar, tensorboard and out is not None, resume=resume)


def _train_sdf(config: SDFConfig, out: str | Path | None, progress, bar: bool = False,
               tensorboard: bool = False, resume: bool = False) -> dict[str, Any]:
    from fieldlab.fit.device_defaults import resolve_max_seconds
    from fieldlab.fit.loop import resolve_device
    from fieldlab.learn.loop import LoopOptions, train_loop

    config.validate()
    device = resolve_device(config.device)
    scenes = open_scenes(config).to(device)
    dim = scenes.dim
    cfg = net_config("sdf", **config.net_options).for_points(config.num_points, dim)
    torch.manual_seed(config.seed)
    net = cfg.build(1, 1, dim).to(device)
    # Said after the options and scenes are checked, so that a user error stays one line.
    config = dataclasses.replace(config, max_seconds=resolve_max_seconds(config.max_seconds, device, say=bar))
    began = time.time()
    task = SDFTask(scenes, config, device, test_queries(config, dim, device))
    options = LoopOptions.of(config, print_every=100, record_every=BAR_EVERY, loss_format=".5f",
                             identity=_identity(config))
    run = Path(out) if out is not None else None
    # The whole command's deadline, from its start, made the active one so the bar's ETA follows it too.
    with _deadline.limit(config.max_seconds) as deadline:
        # `_save_state` is looked up at each save, so that a test may wrap it.
        steps = train_loop(task, net, options, device=device, run=run, resume=resume, progress=progress,
                           tensorboard=tensorboard, bar=bar, save=lambda *state: _save_state(*state)).steps
    metrics = {**task.test_metrics(net), "test_scenes": len(scenes.test), "train_scenes": len(scenes.train),
               "seconds": round(time.time() - began, 2), "steps": steps, "device": str(device),
               **deadline.report()}
    if run is not None:
        _save_run(run, net, cfg.to_dict(), dim, config, metrics)
    return metrics


def _save_run(out: Path, net: nn.Module, net_options: dict, dim: int, config: SDFConfig, metrics: dict) -> None:
    """RUN/net.safetensors and RUN/run.json; a finished run's checkpoint is removed (nothing is left to
    resume), one the time limit cut is kept."""
    from safetensors.torch import save_file

    from fieldlab._safety import replace_file, write_marker
    from fieldlab.learn.train import _write_json

    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "run")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    replace_file(out / "net.safetensors", lambda tmp: save_file(state, str(tmp)))
    train = dataclasses.asdict(config)
    if config.store is not None:
        train["store"] = str(Path(config.store).resolve())
    _write_json(out / "run.json", {"format": FORMAT, "net": "sdf", "net_options": net_options, "dim": dim,
                                   "input": "exact" if config.store is None else "store",
                                   "train": train, "metrics": metrics})
    if metrics["steps"] == config.steps:
        (out / "checkpoint.pt").unlink(missing_ok=True)


BAR_EVERY = 10
"""Steps between updates of train-sdf's bar (each reads the loss back from the device)."""


def _identity(config: SDFConfig) -> str:
    """What a checkpoint of this run must have been saved by: its options, less those a resumed run may change."""
    from fieldlab.learn.loop import run_identity

    return run_identity(dataclasses.asdict(config))


def _save_state(run: Path, net: nn.Module, optimizer: torch.optim.Optimizer, step: int, identity: str) -> None:
    """RUN/checkpoint.pt: the loop's checkpoint (`fieldlab.learn.loop.save_state`)."""
    from fieldlab.learn.loop import save_state

    save_state(run, net, optimizer, step, identity)


def evaluate_sdf(info: dict, run: Path, store_path: str | Path | None, *, points: Sequence[str],
                 resolutions: Sequence[int] | None, device: torch.device | str = "cpu", seed: int = 1,
                 draws: int = 1) -> list[dict]:
    """Rows {train, test, resolution, points, accuracy: the SDF MAE, metric: "sdf_mae"} of an SDF run on its
    held-out scenes (or on the test split of `store_path`, for a run trained on stored fields). `points` and
    `resolutions` (and `device`) are checked by `fieldlab.learn.evaluate.evaluate`, the one caller, whose
    randomized point sets are averaged over `draws` draws here too."""
    from fieldlab.learn._run_files import build_bounded, load_weights
    from fieldlab.learn.evaluate import scoring_samplers

    train = dict(info["train"])
    if store_path is not None:
        if train.get("store") is None:
            raise UserError(f"{run} was trained on the exact procedural field; eval it without a STORE")
        train["store"] = str(store_path)
    config = SDFConfig(**{k: v for k, v in train.items() if k in {f.name for f in dataclasses.fields(SDFConfig)}})
    scenes = open_scenes(config).to(device)
    dim = scenes.dim
    weights = load_weights(run / "net.safetensors", str(run))

    def fits(shape_only) -> None:  # checked before the network is allocated
        expected = {k: tuple(t.shape) for k, t in shape_only.state_dict().items()}
        if expected != {k: tuple(t.shape) for k, t in weights.items()}:
            raise UserError(f"{run}/net.safetensors does not match the network run.json describes")

    net = build_bounded(lambda: net_config("sdf", **info["net_options"]).build(1, 1, dim),
                        f"{run}/run.json's SDF network", fits)
    net.load_state_dict(weights)
    net.to(device)
    if not resolutions:
        resolutions = [round(config.num_points ** (1 / dim))]
    task = SDFTask(scenes, config, device, test_queries(config, dim, device, seed=seed))
    rows = []
    for side in resolutions:
        for kind in points:
            samplers = scoring_samplers(kind, side ** dim, dim, seed=seed, draws=draws)
            errors = [task.score(net, s) for s in samplers]
            error = sum(errors) / len(errors)
            rows.append({"train": f"{config.points}@{config.num_points}", "test": kind, "resolution": side,
                         "points": side ** dim, "accuracy": error, "metric": task.metric.name,
                         "draws": len(samplers)})
    return rows
