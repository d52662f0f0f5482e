"""Training networks on a FieldStore: `fieldlab train STORE --net NAME --out RUN`.

The options (`TrainConfig`), the network (`build_net`) and the run files; the steps are the one learn loop's
(`fieldlab.learn.loop.train_loop`: AdamW with linear warm-up and cosine decay, checkpoints, time limit,
progress) over the store's task (`fieldlab.learn.store_tasks`: the batch of rows and points, the fields
evaluated there, augmentation, the loss and the held-out score). Under `torchrun` every rank takes its slice
of the same global batch and DistributedDataParallel averages gradients; DI normalization all-reduces its
moments, so N ranks compute what one process computes.

RUN holds config.json (the resolved options), checkpoint.pt (model, optimizer, step, RNG; tensors only,
read back with weights_only=True; replaced atomically), log.jsonl, and at the end net.safetensors + run.json
(net, channels, data split, metrics)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from fieldlab import distributed
from fieldlab._errors import UserError
from fieldlab._safety import lock_output, replace_file
from fieldlab._validate import check_shape
from fieldlab._validate import bounded_int
from fieldlab._validate import bounded_float, read_json
from fieldlab import _deadline
from fieldlab.learn.abilities import BuiltForStore, SizedByPoints
from fieldlab.learn._run_files import build_bounded, check_run_info, load_weights, read_run_json
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.learn.loop import LoopOptions, run_identity, train_loop
from fieldlab.learn.nets import BASE_LR, NetConfig, flat_size, net_config
from fieldlab.learn.points import PointSampler, _step_seed
from fieldlab.learn.store_tasks import (Split, accuracy, input_points, load_split, make_input, num_classes, score,
                                        segment_logits, segment_scores, split_rows, store_task)
from fieldlab.fit.loop import resolve_device
from fieldlab.fit.schedule import Schedule
from fieldlab.store.field_dir import check_out_dir

__all__ = ["FORMAT", "Split", "TrainConfig", "accuracy", "build_net", "input_points", "load_run", "load_split",
           "make_input", "num_classes", "read_run", "schedule_of", "score", "segment_logits", "segment_scores",
           "split_rows", "train"]

FORMAT = "fieldlab.run"
MAX_JITTER = 4.0
"""The largest `--jitter`, in sample spacings: beyond a few the points no longer say where they are."""
MAX_NOISE = 10.0
"""The largest `--noise`, in the field's value units (values span [-1, 1])."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    net: str = "dinet"
    """Network name."""
    net_options: dict = dataclasses.field(default_factory=dict)
    points: str = "auto"
    """Training point set: grid, qmc, rqmc, random, shrunk, mixed, or auto: the network's own
    (`NetConfig.train_points`): mixed for DI-Net-4 (`dinet`), else rqmc, a scrambled Sobol set
    redrawn every step, so the network never sees one fixed set of points to overfit."""
    num_points: int = 256
    """Points per field per step."""
    sequence: str = "sobol"
    """QMC sequence: sobol or halton."""
    mix: str = "rqmc,grid,random,shrunk"
    """With points mixed: the point sets drawn from, one per step (comma-separated); the first is the
    training cell `eval` measures drops from."""
    resolutions: str = ""
    """Resolution augmentation: grid sides (comma-separated, e.g. "12,16,24"), one drawn per step, each
    giving side^d points; empty: always `num_points`. Supports stay sized for `num_points`."""
    steps: int = 600
    """Optimizer steps."""
    batch_size: int = 64
    """Fields per step (global, over all processes)."""
    lr: float = 0.0
    """Peak AdamW learning rate (warm-up, then cosine); 0: the network's own (`NetConfig.train_lr`: 8e-3 for
    `dinet`'s separable convolutions, else 2e-3; a network translated by --init-from, 2e-3)."""
    weight_decay: float = 1e-3
    """AdamW weight decay."""
    warmup: int = 30
    """Steps of linear learning-rate warm-up."""
    jitter: float = 0.0
    """Standard deviation of the coordinate jitter as a fraction of the store's sample spacing (per axis, the
    domain over its samples; `fit-dataset --jitter` counts in the same unit). The network still sees the
    nominal points: it learns to tolerate a sampling offset and fields that differ between the samples."""
    noise: float = 0.01
    """Standard deviation of additive intensity noise."""
    flip: bool = False
    """Random horizontal flips (not for digits)."""
    init_from: str = ""
    """A finished `train` run of a grid CNN (cnn2, cnn4) whose translation (`fieldlab.learn.translate`) is
    the DI-Net's starting point; empty: a fresh network."""
    seed: int = 0
    """Random seed."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """The training steps' precision, as fit's: fp32; tf32 matmuls; bf16 autocast of the forward pass and
    loss (weights, AdamW and the test scores stay fp32)."""
    checkpoint_every: int = 200
    """Steps between checkpoints (what --resume continues from)."""
    log_every: int = 50
    """Steps between log lines."""
    max_seconds: float = 0.0
    """Time limit for the whole command, in seconds (0: none): training stops early enough to leave time
    for the test scoring and writing the run, and run.json's metrics say the limit stopped it."""

    def resolved(self, dim: int = 2) -> TrainConfig:
        """This config with `points="auto"` replaced by the network's choice (a mix without grids where
        the count is no d-th power) and `lr=0` by the network's rate, as run.json records them."""
        cfg = net_config(self.net, **self.net_options)
        # a translated CNN is a full-kernel twin, whatever --net's own options say
        lr = self.lr or (BASE_LR if self.init_from else cfg.train_lr())
        if self.points != "auto":
            return dataclasses.replace(self, lr=lr)
        kind, mix = cfg.train_points, self.mix
        if kind == "mixed" and "grid" in mix.split(","):
            side = round(self.num_points ** (1 / dim))
            if side ** dim != self.num_points:
                mix = ",".join(k for k in mix.split(",") if k != "grid") or "rqmc"
        return dataclasses.replace(self, points=kind, mix=mix, lr=lr)

    def validate(self) -> None:
        for name in ("num_points", "steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.lr >= 0:
            raise UserError(f"--lr must be positive (or 0: the network's own), got {self.lr}")
        bounded_float(self.jitter, "--jitter", 0, MAX_JITTER)
        bounded_float(self.noise, "--noise", 0, MAX_NOISE)
        from fieldlab.fit.config import MAX_SECONDS

        bounded_float(self.max_seconds or 0.0, "--max-seconds", 0, MAX_SECONDS)
        if self.precision not in ("fp32", "tf32", "bf16"):
            raise UserError(f"--precision must be fp32, tf32 or bf16, got {self.precision!r}")
        net_config(self.net, **self.net_options)
        self.resolved().samplers(2)

    def sampler(self, dim: int) -> PointSampler:
        return PointSampler(kind=self.points, n=self.num_points, dim=dim, sequence=self.sequence, seed=self.seed,
                            mix=tuple(self.mix.split(",")))

    def samplers(self, dim: int) -> list[PointSampler]:
        """One sampler per training resolution (`resolutions`, else just `num_points`)."""
        if not self.resolutions:
            return [self.sampler(dim)]
        sides = [bounded_int(side, "--resolutions", 2, 4096) for side in self.resolutions.split(",")]
        return [dataclasses.replace(self.sampler(dim), n=side ** dim) for side in sides]

    def step_points(self, samplers: list[PointSampler], step: int):
        """The point set of `step`: one resolution drawn per step (seeded), then its sampler's set."""
        pick = _step_seed(self.seed, step, "resolution") % len(samplers) if len(samplers) > 1 else 0
        return samplers[pick](step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_net(cfg: NetConfig, store, classes: int, init: dict | None = None) -> nn.Module:
    if init is not None:  # a translated grid CNN (`train --init-from`): run.json's `init` describes it
        from fieldlab.learn.translate import twin_network

        return twin_network(init, store.signal.channels, classes)
    if isinstance(cfg, BuiltForStore):  # networks that need the field architecture itself (seg_hyper)
        return cfg.build_for_store(store, classes)
    if cfg.takes == "params":
        return cfg.build(flat_size(store.per_field), classes)
    return cfg.build(store.signal.channels, classes, store.signal.in_dim)


# -- the loop ------------------------------------------------------------------------------------------
def schedule_of(config) -> Schedule:
    """A learn loop's learning rates: linear warm-up to `config.lr` over `config.warmup` steps, then a cosine
    decay to 0 at `config.steps`."""
    return Schedule(config.lr, config.steps, "cosine", final=0.0, warmup=config.warmup)


def train(store_path: str | Path, out: str | Path, config: TrainConfig, *, resume: bool = False,
          force: bool = False, progress=print, stop_at: int | None = None, tensorboard: bool = False,
          bar: bool = False) -> dict[str, Any]:
    """Train `config.net` on the store; returns the final metrics (also in RUN/run.json). `progress` takes a
    line every `config.log_every` steps; `bar` also shows a progress bar with ETA and the loss on stderr (as
    train-sdf's: fit's RunLog); `tensorboard` logs the loss and lr at every logged step to RUN/tensorboard.

    `stop_at` ends this process after that step with a checkpoint (as an interruption would), for a
    later `resume=True` to continue exactly where it stopped. RUN is locked while it is written (by rank 0
    under torchrun), so a second `train` into it stops with one line."""
    with lock_output(Path(out)), _deadline.limit(config.max_seconds):  # from the command's start
        return _train(store_path, Path(out), config, resume=resume, force=force, progress=progress, stop_at=stop_at,
                      tensorboard=tensorboard, bar=bar)


def _train(store_path: str | Path, out: Path, config: TrainConfig, *, resume: bool, force: bool, progress,
           stop_at: int | None, tensorboard: bool = False, bar: bool = False) -> dict[str, Any]:
    from fieldlab.store.field_store import FieldStore

    config.validate()
    _check_run_dir(out, resume=resume, force=force, inputs=[store_path])
    store = FieldStore(store_path)
    device = resolve_device(config.device)
    device = distributed.device_for(device)  # this rank's own GPU under torchrun
    distributed.init(device)
    rank, world = distributed.rank(), distributed.world_size()
    if config.batch_size % world:
        raise UserError(f"--batch-size {config.batch_size} must be divisible by the {world} processes")
    train_rows, test_rows, how = split_rows(store)
    if resume and config.lr == 0:  # the rate the run started with, though the network's default has changed since
        config = dataclasses.replace(config, lr=_recorded_lr(out))
    config = config.resolved(store.signal.in_dim)
    cfg = net_config(config.net, **config.net_options)
    if isinstance(cfg, SizedByPoints):
        cfg = cfg.for_points(config.num_points, store.signal.in_dim)
    if cfg.task not in ("classify", "segment"):
        raise UserError(f"train fits classifiers and segmenters on stores; {config.net!r} is a {cfg.task} network")
    segment = cfg.task == "segment"
    sampler = config.sampler(store.signal.in_dim)
    input_points(cfg, sampler(0))  # an FCN's grid must exist before RUN is written
    drawn = sampler.mix if sampler.kind == "mixed" else (sampler.kind,)
    if cfg.takes == "grid" and not segment and any(kind != "grid" for kind in drawn):
        raise UserError(f"a grid CNN ({config.net}) sees only grid point sets; use --points grid")
    classes = num_classes(store, segment)
    data = load_split(store, train_rows, device, masks=segment)
    evaluator = FieldEvaluator.from_store(store)

    init = None
    if config.init_from:  # a trained grid CNN, translated: checked before RUN is written
        from fieldlab.learn.translate import init_record, trained_twin

        twin, init = init_record(config.init_from, config.net, config.net_options, store, classes)
        cfg = net_config(twin, channels=init["net_options"]["channels"])
    torch.manual_seed(config.seed)
    net = (trained_twin(init, store) if init else build_net(cfg, store, classes)).to(device)
    task = store_task(cfg, evaluator, classes, lambda: load_split(store, test_rows, device, masks=segment),
                      config=config, train=data, test_fields=len(test_rows), signal=store.signal)

    def begin() -> None:  # once a checkpoint to resume is read and RUN made (the loop's log_file)
        if rank == 0:
            _write_json(out / "config.json", {"store": str(store_path), **config.to_dict()})

    # a checkpoint resumes only under the options it was saved with (where it says which), on the same store
    identity = run_identity({"store": str(Path(store_path).resolve()), **config.to_dict()},
                            changeable=("device", "max_seconds", "log_every", "checkpoint_every"))
    options = LoopOptions.of(config, print_every=config.log_every, record_every=config.log_every,
                             checkpoint_steps=config.checkpoint_every, identity=identity)
    trained = train_loop(task, net, options, device=device, run=out, resume=resume, progress=progress,
                         log_file=True, tensorboard=tensorboard, bar=bar, stop_at=stop_at, begin=begin)
    metrics: dict[str, Any] = {"steps": trained.steps, "seconds": trained.seconds}
    deadline = _deadline.active()
    if rank == 0 and (trained.steps == config.steps or deadline.cuts):
        metrics.update(task.test_metrics(net))
        metrics["train_fields"], metrics["test_fields"] = len(train_rows), len(test_rows)
        metrics.update(deadline.report())
        _save_run(out, net, cfg, config, store, classes, how, metrics, init=init)
    distributed.barrier()
    return metrics


# -- files -----------------------------------------------------------------------------------------------
def _check_run_dir(out: Path, *, resume: bool, force: bool, inputs=()) -> None:
    check_out_dir(out, force, resume=resume, resumable=True, inputs=inputs)
    if force and not resume and out.is_dir():
        for name in ("checkpoint.pt", "net.safetensors", "run.json"):
            (out / name).unlink(missing_ok=True)


def _recorded_lr(out: Path) -> float:
    """The learning rate RUN/config.json records (0.0 where there is none: `resolved` then picks); a damaged file
    or rate is one line."""
    path = out / "config.json"
    if not path.is_file():
        return 0.0
    return bounded_float(read_json(path).get("lr", 0.0), "lr", 0, where=path)


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, default=str)
    replace_file(path, lambda tmp: tmp.write_text(text))


def _save_run(out: Path, net, cfg: NetConfig, config: TrainConfig, store, classes: int, how: str, metrics,
              init: dict | None = None) -> None:
    from safetensors.torch import save_file

    from fieldlab.store.field_dir import versions

    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    replace_file(out / "net.safetensors", lambda tmp: save_file(state, str(tmp)))
    _write_json(out / "run.json", {
        "format": FORMAT, "net": cfg.name, "net_options": cfg.to_dict(), "classes": classes,
        **({"init": init} if init else {}),
        "label_names": store.label_names, "field": store.config.name, "in_channels": store.signal.channels,
        "dim": store.signal.in_dim, "shape": list(store.signal.shape), "train": config.to_dict(), "split": how,
        "metrics": metrics, "versions": versions(),
    })


def read_run(run: str | Path) -> dict:
    """RUN's run.json (a `train` or a `train-sdf` run; its "format" says which)."""
    return read_run_json(Path(run))


def load_run(run: str | Path, store) -> tuple[nn.Module, NetConfig, dict]:
    """The trained network of RUN (rebuilt from run.json, weights from net.safetensors), in eval mode."""
    run = Path(run)
    info = read_run(run)
    if info.get("format") != FORMAT:
        raise UserError(f"{run}/run.json is not a fieldlab run")
    check_run_info(info, run)
    options = dict(info["net_options"])
    if "support" in options and "quadrature" not in options:  # a DI-Net trained before cell weights existed
        options["quadrature"] = "given"
    if "support" in options and "separable" not in options:  # ... or before separable convolutions
        options["separable"] = False
    cfg = net_config(info["net"], **options)
    _check_same_signals(run, info, cfg, store)
    _check_classes(run, info, store, cfg.task == "segment")
    weights = load_weights(run / "net.safetensors", str(run))

    def fits(shape_only: nn.Module) -> None:  # checked before the network is allocated
        expected = {k: tuple(v.shape) for k, v in shape_only.state_dict().items()}
        if expected != {k: tuple(v.shape) for k, v in weights.items()}:  # a net that reads the weights themselves
            raise UserError(f"{run} does not fit the fields of {store.path}: its {cfg.name} network was built for "
                            f"{info['field']} fields of another size (options {store.config.to_dict()} here)")

    net = build_bounded(lambda: build_net(cfg, store, info["classes"], info.get("init")),
                        f"{run}/run.json's {cfg.name} network", fits)
    net.load_state_dict(weights)
    return net.eval(), cfg, info


def _check_same_signals(run: Path, info: dict, cfg: NetConfig, store) -> None:
    """Refuse a store of other signals (dimensions, channels, grid shape). A network that reads fields at
    points takes fields of any architecture; one that reads the stored tensors needs RUN's field type."""
    if store.signal.channels != info["in_channels"] or store.signal.in_dim != info.get("dim", store.signal.in_dim):
        raise UserError(f"{run} was trained on {info.get('dim', '?')}-D {info['field']} fields with "
                        f"{_count(info['in_channels'], 'channel')}; {store.path} holds {store.signal.in_dim}-D "
                        f"{store.config.name} fields with {_count(store.signal.channels, 'channel')}")
    if "shape" in info:  # runs written before the shape was recorded are not checked for it
        trained = check_shape(info["shape"], "shape", where=f"{run}/run.json", ndim=store.signal.in_dim)
        if trained != tuple(store.signal.shape):
            raise UserError(f"{run} was trained on {'x'.join(map(str, trained))} signals; {store.path} holds "
                            f"{'x'.join(map(str, store.signal.shape))} signals")
    if store.config.name != info["field"] and cfg.takes == "params":
        raise UserError(f"{run}'s {cfg.name} network reads the stored weights of {info['field']} fields, not "
                        f"the {store.config.name} fields of {store.path}; a network that reads fields at points "
                        "(dinet, nuft, cnn4) takes any field type")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _names(names: list) -> str:
    return ", ".join(map(str, names[:6])) + (", …" if len(names) > 6 else "")


def _check_classes(run: Path, info: dict, store, segment: bool) -> None:
    """Refuse a test store whose labels (mask classes) are not the ones RUN was trained to predict."""
    kind = "mask classes" if segment else "labels"
    trained = info.get("label_names") or []
    if trained and store.label_names and list(trained) != list(store.label_names):
        raise UserError(f"{run} was trained on the {kind} {_names(trained)}; {store.path} has "
                        f"{_names(store.label_names)}")
    classes = num_classes(store, segment)
    if classes > info["classes"]:
        raise UserError(f"{run} predicts {_count(info['classes'], 'class')}; {store.path} has {classes} {kind}")
