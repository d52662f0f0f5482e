"""A whole `fit-dataset` job: source → batches of fields → FieldStore, resumable and sharded over ranks.

The unit of work is one store chunk: chunk k holds rows [k·C, (k+1)·C) and is fitted as one batch, so a
row's field depends only on (seed, row, C) and not on how many processes share the job; under torchrun
each rank fits every world_size-th pending chunk and writes it itself (ranks never write the same chunk).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fieldlab import _deadline, _json
from fieldlab import distributed as dist
from fieldlab._errors import UserError
from fieldlab._pipeline import WriteBehind, read_ahead
from fieldlab._progress import in_pieces, phase
from fieldlab.fields import FieldConfig, Latent, get_config_class
from fieldlab.fit.batched import BatchedFitConfig
from fieldlab.fit.device_defaults import dataset_sample_fraction, say_precision
from fieldlab.fit.loop import resolve_device, warm_device
from fieldlab.fit.job import checkpoint_path
from fieldlab.fit.meta import PrepareCheckpoint, make_dataset_fitter
from fieldlab.signals import grid_coords
from fieldlab.signals.datasets import Augmented, ImageSource
from fieldlab.signals.modal_sources import open_dataset

log = logging.getLogger("fieldlab")
MIN_DATASET_PARAMS = 1024


@dataclasses.dataclass(frozen=True)
class DatasetJob:
    """Everything `fieldlab fit-dataset` needs."""

    source: str
    field: str = "siren"
    field_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    fit: BatchedFitConfig = BatchedFitConfig()
    limit: int | None = None
    """Fit only the first `limit` items of the source."""
    copies: int = 1
    """Fitted copies of each item (copy 0 as is, the others augmented)."""
    chunk_fields: int | None = None
    """Fields per store chunk and per fitting batch; None: 4,096 on a GPU, 256 on the CPU."""
    test_fraction: float = 0.0
    """Fraction of the items (seeded choice) whose rows are marked split `test`."""
    image_size: int | None = None
    """Resize a folder's images to this square size."""
    rgb: bool = False
    """Convert a folder's images to RGB: grey ones replicated, alpha dropped (else mixed channel counts are refused)."""
    clip_seconds: float | None = None
    """Length of every item of a folder of audio clips, in seconds (longer clips are cut, shorter ones end in
    silence); None: the shortest clip's."""
    mono: bool = False
    """Mix every clip of a folder of audio clips down to one channel (else mixed channel counts are refused)."""
    mesh_resolution: int | None = None
    """Samples per axis of the grid a folder's meshes are labelled inside/outside on (None: 32)."""
    meta_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Meta-learning options of functa and spatial functa (`fieldlab.fit.meta.META_OPTIONS`)."""

    def identity(self, config: FieldConfig, source: ImageSource, num_fields: int) -> dict[str, Any]:
        """What a resumed run must share with the store it continues."""
        fit = dataclasses.asdict(self.fit)
        for key in ("device", "compile", "kernel", "max_seconds"):  # how, not what
            fit.pop(key)
        return {"field": {"name": config.name, "config": config.to_dict()}, "fit": fit, "seed": self.fit.seed,
                "source": {**source.identity, "limit": self.limit, "copies": self.copies,
                           "test_fraction": self.test_fraction}, "num_fields": num_fields,
                **({"meta": self.meta_options} if self.meta_options else {})}


def resolve_dataset_config(name: str, options: dict[str, Any], source: ImageSource) -> FieldConfig:
    derived = sorted(set(options) & {"in_dim", "out_dim"})
    if derived:
        raise UserError(f"--{derived[0].replace('_', '-')} is set from the dataset and cannot be given")
    cls = get_config_class(name)
    if not cls.batched:
        raise UserError(f"field {name!r} is grown by its own trainer for one large signal and has no batched "
                        "path; pick another field for a dataset")
    asked = cls.from_options({"in_dim": len(source.shape), "out_dim": source.channels, **options})
    given = set(options).union(*(group for group in cls.linked if set(group) & set(options)))
    presets = {k: v for k, v in asked.item_defaults(source.shape).items() if k not in given}
    config = asked.replace(**presets).adapt(source.shape)
    if config.size_knob not in {**presets, **options} and \
            not isinstance(config, Latent):
        # Unasked, a field of a dataset gets about as many parameters as one item has values (at least
        # MIN_DATASET_PARAMS): a whole-image default of 200k parameters per 32² item would be absurd.
        budget = max(MIN_DATASET_PARAMS, math.prod(source.shape) * source.channels)
        if config.num_params() > budget:
            config = config.with_params(budget)
    return config


def test_items(count: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean (count,) marking a seeded choice of round(fraction · count) items as test."""
    chosen = np.zeros(count, dtype=bool)
    chosen[np.random.default_rng([seed, 7]).permutation(count)[:round(fraction * count)]] = True
    return chosen


def source_test_items(source: ImageSource, fraction: float, seed: int) -> np.ndarray:
    """The items of the source's own test split (e.g. ROOT/test/ of an ImageFolder), else `test_items`."""
    if source.split is None:
        return test_items(len(source), fraction, seed)
    if fraction:
        raise UserError(f"{source.spec} has its own test split; --test-fraction cannot be given with it")
    return source.split


def run_dataset_job(job: DatasetJob, out: Path, *, resume: bool = False, force: bool = False,
                    progress: bool = True, tensorboard: bool = False) -> dict[str, Any] | None:
    """Fit the job's fields into the store `out`; returns the store's summary on rank 0 (None elsewhere).
    Rank 0 locks `out` for the whole job, so a second job writing it stops with one line. `tensorboard`
    logs each of rank 0's chunks (its mean PSNR, mean steps and fields/s, at the chunk's number) to
    `out`/tensorboard through fit's RunLog."""
    from fieldlab._safety import lock_output

    from fieldlab.store.field_store import finish_removals

    with lock_output(out):
        try:
            return _run_dataset_job(job, out, resume=resume, force=force, progress=progress,
                                    tensorboard=tensorboard)
        finally:
            finish_removals()  # the store --force replaced, deleted meanwhile on a thread


def _run_dataset_job(job: DatasetJob, out: Path, *, resume: bool, force: bool, progress: bool,
                     tensorboard: bool = False) -> dict[str, Any] | None:
    from fieldlab.fit.loop import RunLog
    from fieldlab.store.field_store import (FieldStore, FieldStoreWriter, abandon_new, check_store_path, is_store,
                                            require_zarr)

    job.fit.validate()
    if tensorboard:
        _require_tensorboard()  # before the store is made
    if resume and force:
        raise UserError("--resume and --force contradict each other: give one")
    if not 0 <= job.test_fraction < 1:
        raise UserError(f"--test-fraction must be in [0, 1), got {job.test_fraction}")
    if job.limit is not None and job.limit < 1:
        raise UserError(f"--limit must be positive, got {job.limit}")
    if job.chunk_fields is not None and job.chunk_fields < 1:
        raise UserError(f"--chunk-fields must be positive, got {job.chunk_fields} (leave it out for the default: "
                        f"4,096 on a GPU, 256 on the CPU)")
    check_store_path(out, force=force, resume=resume, inputs=[job.source])
    if not dist.launched():  # CUDA's first call and Triton's key on a thread while the input is opened
        warm_device(job.fit.device)
    source = open_dataset(job.source, image_size=job.image_size, rgb=job.rgb, clip_seconds=job.clip_seconds, mono=job.mono,
                          mesh_resolution=job.mesh_resolution, progress=progress)
    if job.copies > 1 and source.kind != "image":  # an augmentation flips and crops an image
        raise UserError(f"--copies augments images; {job.source} holds {source.kind} items: give --copies 1")
    items = min(len(source), job.limit or len(source))
    rows_of = Augmented(source, copies=job.copies, seed=job.fit.seed)
    num_fields = items * job.copies
    config = resolve_dataset_config(job.field, dict(job.field_options), source)
    dist.init(job.fit.device)
    fit = dataclasses.replace(job.fit, device=dist.device_for(job.fit.device))
    if dist.launched():  # a rank of torchrun knows its own device now (one process warmed it above)
        warm_device(fit.device)  # a name or a device; one that is not there is refused by describe(), below
    fitter = make_dataset_fitter(config, fit, job.meta_options)
    fitter.kind = source.kind  # chooses the measure its fields stop by (fit.batched.stop_measure)
    if dist.is_main():
        require_zarr()  # imported while the thread above finishes (describe() waits for it on a GPU)
    steps_by = fitter.describe()  # also refuses a --kernel that cannot run here, before the store is made
    device = resolve_device(fit.device)  # describe() has refused one that is not there
    if dist.is_main():
        say_precision(fit.precision, device)
    info = source.info()
    coords = grid_coords(info.domain, info.domain, info.shape)
    existing = dist.broadcast(resume and is_store(out))  # rank 0's view: it may create the store any moment
    if job.fit.sample_fraction is None:  # one value for every chunk, kept in the store's identity
        fraction = _sample_fraction(job, fitter, out if existing else None, device, num_fields, len(coords))
        job = dataclasses.replace(job, fit=dataclasses.replace(job.fit, sample_fraction=fraction))
        fitter.fit_config = fit = dataclasses.replace(fit, sample_fraction=fraction)
    identity = job.identity(config, source, num_fields)
    is_test = source_test_items(source, job.test_fraction, job.fit.seed)  # per item
    if resume and not existing and out.is_dir() and any(out.iterdir()):
        raise UserError(f"--resume: {out} is not a field store; give a new --out")

    if existing:
        writer = FieldStoreWriter.open(out, expect=identity)
        fitter.load_shared(FieldStore(out).shared())
    else:
        # What the fields share is learned from the training rows only (a no-op for independent fields).
        item_of_row = rows_of.columns(np.arange(num_fields))["source_index"]
        train = ~is_test[item_of_row]
        # Meta-learning keeps its state beside the store until the store holds what it learned.
        checkpoint = PrepareCheckpoint(checkpoint_path(out), _json.dumps(identity, sort_keys=True, default=list),
                                       resume)
        with _deadline.limit(job.fit.max_seconds):  # from the command's start
            finished = fitter.prepare(np.flatnonzero(train), rows_of.values, coords, checkpoint, progress=progress)
        if not finished:
            dist.finish()
            return None
        if dist.is_main():
            chunk = _chunk_fields(job, device)
            split_names = ("train", "test") if job.test_fraction or source.split is not None else ("train",)
            attrs = {k: v for k, v in identity.items() if k not in ("field", "num_fields")}
            FieldStoreWriter.create(out, config=config, signal=info, num_fields=num_fields, chunk_fields=chunk,
                                    per_field=fitter.per_field_shapes(), shared=fitter.shared(), attrs=attrs,
                                    label_names=source.label_names, split_names=split_names, force=force or resume)
        dist.barrier()
        writer = FieldStoreWriter.open(out, expect=identity)
        if dist.is_main():
            checkpoint.path.unlink(missing_ok=True)  # the store holds θ and α now
    if job.chunk_fields and job.chunk_fields != writer.chunk_fields:
        raise UserError(f"--chunk-fields {job.chunk_fields} differs from the store's {writer.chunk_fields}")
    pending = writer.pending_chunks()
    dist.barrier()  # every rank has listed the pending chunks before any is written
    mine = dist.shard(pending)
    if dist.is_main() and progress:
        done = writer.num_chunks - len(pending)
        log.info("%s: %s fields of %s in %d chunks (%d done), %d process(es), %s on %s; steps by %s", job.source,
                 f"{num_fields:,}", config.name, writer.num_chunks, done, dist.world_size(),
                 f"{config.num_params():,} params each", device, steps_by)
    board = RunLog(None, out / "tensorboard" if tensorboard and dist.is_main() else None, False, writer.num_chunks)
    abandon = False
    try:
        with _deadline.limit(job.fit.max_seconds) as deadline:  # from the command's start
            _fit_chunks(mine, writer, fitter, rows_of, coords, is_test, progress, board.writer, deadline,
                        pin=device.type == "cuda")
    except UserError:
        # An item found bad while its chunk was read (a truncated image, an infinite value, a mesh without faces)
        # before this run's store held any finished chunk: --out goes back to what it was (with --force, the
        # store this one replaced), so the command can be run again once the input is mended.
        abandon = not existing and dist.is_main() and len(writer.pending_chunks()) == writer.num_chunks
        raise
    finally:
        board.close()  # its TensorBoard files lie in the store
        if abandon:
            abandon_new(out)
    dist.barrier()
    summary = FieldStore(out).summary() if dist.is_main() else None
    dist.finish()
    return summary


def _chunk_fields(job: DatasetJob, device: torch.device) -> int:
    """Fields per chunk of a new store: --chunk-fields, else 4,096 on a GPU and 256 on the CPU."""
    return job.chunk_fields or (4096 if device.type == "cuda" else 256)


def _sample_fraction(job: DatasetJob, fitter, resumed: Path | None, device: torch.device, num_fields: int,
                     points: int) -> float:
    """An unset --sample-fraction: the store's own where one is resumed (so a resume on another device fits its
    chunks as the first run did), else the device's choice for a batch of one chunk's fields
    (`device_defaults.dataset_sample_fraction`, which says a subset in the log; 0 for a meta-learned family,
    whose latents take every sample)."""
    from fieldlab.store.field_store import FieldStore

    if resumed is not None:
        return FieldStore(resumed).attrs.get("fit", {}).get("sample_fraction") or 0.0
    if not fitter.steps_of_fit:
        return 0.0
    fields = min(_chunk_fields(job, device), num_fields)
    return dataset_sample_fraction(device, points, fields, fitter.config.num_params(), say=dist.is_main())


def _require_tensorboard() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        from fieldlab._errors import missing_extra

        raise missing_extra("tensorboard", "tensorboard") from None


def _fit_chunks(mine: list[int], writer, fitter, rows_of: Augmented, coords, is_test: np.ndarray,
                progress: bool, board=None, deadline: _deadline.Deadline = _deadline.UNBOUNDED, *,
                pin: bool = False) -> None:
    """Read, fit and write this rank's chunks, as phases (`fieldlab._progress`): rank 0 shows bars (all its
    fields, each chunk's reading and writing) and a line per chunk; else a log line per long phase. The next
    chunk is read and the last one written on worker threads while a chunk fits (`fieldlab._pipeline`), so
    a GPU does not wait on decoding or zarr. A chunk's values are read into one host buffer, page-locked
    with `pin` (for a CUDA device: its upload is then a DMA copy, not a staged one). A chunk is begun only if
    the deadline leaves the time it would take (per field: the mean so far, or the last chunk's where
    slower)."""
    bar = progress and dist.is_main()
    per_field, fitted, spent = 0.0, 0, 0.0
    total = sum(len(writer.chunk_rows(chunk)) for chunk in mine)

    def read(chunk: int) -> tuple[np.ndarray, torch.Tensor]:
        rows = np.asarray(writer.chunk_rows(chunk))
        values = None
        # a folder's images are decoded here, in pieces under a bar (tqdm stacks the bars of the threads),
        # each copied once, into the chunk's buffer
        for a, b in in_pieces(f"reading chunk {chunk}", len(rows), 16, unit="item", bar=bar, seconds=0.25):
            piece = rows_of.values(rows[a:b])
            if values is None:
                values = torch.empty((len(rows), *piece.shape[1:]), dtype=piece.dtype, pin_memory=pin)
            values[a:b] = piece
        return rows, values

    def write(chunk: int, rows: np.ndarray, result) -> None:
        columns = rows_of.columns(rows)
        with phase(f"writing chunk {chunk}", 1, unit="chunk", bar=bar) as wrote:
            writer.write_chunk(chunk, params=result.params, psnr=result.psnr, steps=result.steps,
                               split=is_test[columns["source_index"]].astype(np.int8), **columns)
            wrote(1)

    steps = fitter.fit_config.steps if fitter.steps_of_fit else 0
    cut_at: dict[str, float] = {}  # where the time limit stopped a chunk: its step, and seconds a step then

    def fit_chunk(chunk: int, rows: np.ndarray, values: torch.Tensor):
        """The chunk's fit under a bar of its steps (a chunk of large items takes minutes); None when the time
        limit ran out before it finished (its fields are then not written: --resume fits them again)."""
        with phase(f"chunk {chunk}", steps, unit="step", bar=bar and steps > 0) as stepped:
            done, last = [0], [time.perf_counter()]

            def progress(step: int, active: int) -> None:
                now = time.perf_counter()  # the latest steps' time each (not the first's, which warms up): the
                per_step = (now - last[0]) / max(step - done[0], 1)  # fit stops before one more passes the limit
                last[0] = now
                stepped(step - done[0])
                done[0] = step
                if deadline.out_of_time(per_step if step > 1 else 0.0):
                    cut_at.update(step=step, per_step=per_step)
                    raise _OutOfTime

            try:
                return fitter.fit(coords, values, rows, progress=progress)
            except _OutOfTime:
                return None

    with phase(f"fitting {total:,} fields", total, unit="field", bar=bar) as advance, WriteBehind() as behind:
        for count, (chunk, (rows, values)) in enumerate(read_ahead(mine, read), start=1):
            start = time.perf_counter()
            if per_field and deadline.out_of_time(1.1 * per_field * len(rows)):
                deadline.cut(f"stopped after {count - 1} of {len(mine)} chunks; the store is incomplete "
                             f"(--resume fits the rest)")
                break
            result = fit_chunk(chunk, rows, values)
            if result is None:
                deadline.cut(f"stopped during chunk {chunk} ({count - 1} of {len(mine)} chunks done; a chunk of "
                             f"{len(rows):,} fields took longer than was left{_need(cut_at, steps)}); the store is "
                             f"incomplete (--resume fits the rest; a larger --max-seconds, or 0, leaves it time, "
                             f"--steps or --sample-fraction make a chunk cheaper, and --chunk-fields smaller for a "
                             f"new store)")
                break
            behind.submit(write, chunk, rows, result)  # waits for the chunk before it: one write in flight
            advance(len(rows))
            seconds = time.perf_counter() - start
            fitted, spent = fitted + len(rows), spent + seconds
            # the mean so far, or the last chunk's where slower: a later chunk may be harder than the first
            per_field = max(spent / fitted, seconds / len(rows))
            if board is not None:  # a SummaryWriter: one point per chunk, at its number (stable across --resume)
                for name, value in (("psnr", np.mean(result.psnr)), ("steps", np.mean(result.steps)),
                                    ("fields_per_second", len(rows) / max(seconds, 1e-9))):
                    board.add_scalar(name, float(value), chunk + 1)
            if progress:
                log.info("rank %d: chunk %d (%d/%d): %d fields, mean PSNR %.2f dB%s, %.1f s", dist.rank(), chunk, count,
                         len(mine), len(rows), float(np.mean(result.psnr)), _stop_quality(result),
                         time.perf_counter() - start)


def _need(cut_at: dict[str, float], steps: int) -> str:
    """', at step S of N and X s a step: about T for the chunk' from where a time limit stopped a chunk, so that
    the cut says what a limit would have to be (or what to make cheaper: --steps, --sample-fraction, the items'
    size); '' when unknown."""
    if not cut_at or not steps or cut_at["step"] >= steps:
        return ""
    need = steps * cut_at["per_step"]
    where = ""
    if need >= 120:  # long enough that where it stood says how much more a limit would need
        where = f" at step {int(cut_at['step']):,} of {steps:,} and {cut_at['per_step']:.2g} s a step:"
    return f",{where} about {_deadline.duration(need)} for the chunk"


class _OutOfTime(Exception):
    """Raised from a chunk's progress callback when --max-seconds has run out during its fit."""


def _stop_quality(result) -> str:
    """The chunk's mean sign accuracy for its log line where its fields stop by it (occupancy), else ''."""
    if getattr(result, "measure", "psnr") != "sign_accuracy":
        return ""
    return f", mean sign accuracy {100 * float(np.mean(result.quality)):.2f} %"
