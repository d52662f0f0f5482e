"""`fieldlab fit-dataset` and `fieldlab store …`: datasets of fields."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import typer

from fieldlab.cli._dataclass_options import Option, config_command, options_of, write_resolved
from fieldlab.cli._options import parse_extra
from fieldlab.cli.main import app

FIT_DATASET_HELP = ("Fit one field per item of SOURCE (an ImageFolder-style folder of images, audio clips, "
                    ".npy volumes or meshes, CIFAR's binary version, a Hugging Face arrow/parquet dataset, an "
                    "images/ + masks/ folder, a .npz/.npy file, or "
                    "sample:digits, sample:lfw, sample:patches[:N], sample:shapes[:N], sample:balls[:N]) into the "
                    "FieldStore --out. Field options follow as --name VALUE (see `fieldlab fields NAME`); functa "
                    "and spatial_functa also take "
                    "--meta-steps, --meta-batch-size, --meta-lr, --inner-steps, --warmup, --clip-norm, --first-order.")


def _fit_dataset_options():
    from fieldlab.fit.batched import BatchedFitConfig
    from fieldlab.fit.dataset_job import DatasetJob

    job = options_of(DatasetJob, skip=("source", "field_options", "fit", "meta_options"),
                     helps={"field": "Architecture (see `fieldlab fields`)."})
    return job + options_of(BatchedFitConfig) + _meta_options()


def _meta_options() -> list[Option]:
    """Meta-learning's flags (--meta-steps, …: `META_OPTIONS`) from MetaConfig's fields, for functa and spatial
    functa. They reach `meta_config_from_options` as given (--first-order true included), which coerces and
    checks them with the messages it always gave."""
    from fieldlab.fit.meta import META_OPTIONS, MetaConfig

    meta = {o.name: o for o in options_of(MetaConfig)}
    return [Option(flag, meta[name].hint, meta[name].default, f"{meta[name].help} (functa and spatial_functa)",
                   as_text=True) for flag, name in META_OPTIONS.items()]


FIT_DATASET_OPTIONS = _fit_dataset_options()


@app.command("fit-dataset", help=FIT_DATASET_HELP,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@config_command(FIT_DATASET_OPTIONS, positional={"source": "SOURCE"}, extras=True)
def fit_dataset_command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Dataset: a folder (class folders, train/ + test/, CIFAR .bin, "
                                 "Hugging Face arrow/parquet, images/ + masks/), .npz/.npy/.parquet, or sample:NAME."),
    out: Path = typer.Option(..., "--out", help="FieldStore (a zarr folder) to write."),
    resume: bool = typer.Option(False, help="Continue an interrupted run into the same --out."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
    quiet: bool = typer.Option(False, help="No progress lines."),
    tensorboard: bool = typer.Option(False, help="Also log each chunk's mean PSNR, steps and fields/s to "
                                                 "OUT/tensorboard (needs fieldlab[tensorboard])."),
    options: dict = None,
) -> None:
    import dataclasses

    from fieldlab.fit.batched import BatchedFitConfig
    from fieldlab.fit.dataset_job import DatasetJob, run_dataset_job
    from fieldlab.fit.meta import META_OPTIONS

    fit_names = {f.name for f in dataclasses.fields(BatchedFitConfig)}
    job_names = {f.name for f in dataclasses.fields(DatasetJob)} - {"source", "field_options", "fit", "meta_options"}
    fit = BatchedFitConfig(**{k: options.pop(k) for k in list(options) if k in fit_names})
    job_options = {k: options.pop(k) for k in list(options) if k in job_names}
    source = options.pop("source")
    extra = {**options, **parse_extra(ctx.args)}  # a file's other keys, then the command line's
    meta_options = {k: extra.pop(k) for k in list(extra) if k in META_OPTIONS}  # functa's meta-learning
    job = DatasetJob(source=source, field_options=extra, fit=fit, meta_options=meta_options, **job_options)
    summary = run_dataset_job(job, out, resume=resume, force=force, progress=not quiet, tensorboard=tensorboard)
    if summary is not None:
        write_resolved(out / "config.json", _resolved_dataset(job))
        from fieldlab.signals import get_modality

        psnr = summary["psnr"]
        # occupancy fields stop by the share of right signs; their PSNR is of the ±1 values, said so
        on = " on the ±1 occupancy" if get_modality(summary["signal"]["kind"]).occupancy else ""
        quality = (f", mean PSNR {psnr['mean']:.2f} dB{on} (min {psnr['min']:.2f})" if "mean" in psnr
                   else "")  # none complete yet (a time limit cut the first chunk)
        quality += _short_of_target(summary)
        print(f"{summary['complete']:,} of {summary['num_fields']:,} {summary['field']} fields "
              f"({summary['params_per_field']:,} params each){quality} -> {out}")


def _short_of_target(summary: dict) -> str:
    """'; N below --target-psnr T' for the store's complete fields that stop by PSNR and ended short of its target
    (their steps ran out first: a diverged fit shows here too), else ''."""
    from fieldlab.fit.batched import PSNR, stop_measure
    from fieldlab.store.field_store import FieldStore

    target = summary["fit"].get("target_psnr")
    if not target or stop_measure(summary["signal"]["kind"]) is not PSNR or not summary["complete"]:
        return ""
    store = FieldStore(summary["path"])
    below = int((store.column("psnr")[store.done] < target).sum())
    return f"; {below:,} below --target-psnr {target:g}" if below else ""


def _resolved_dataset(job) -> dict:
    """fit-dataset's options after defaults, keyed as its flags: `--config STORE/config.json` repeats it."""
    import dataclasses

    from fieldlab.fields import coerce_option
    from fieldlab.fit.meta import META_OPTIONS, MetaConfig

    fit = dataclasses.asdict(job.fit)
    own = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)
           if f.name not in ("source", "field_options", "fit", "meta_options")}
    hints = typing.get_type_hints(MetaConfig)
    meta = {k: coerce_option(k, v, hints[META_OPTIONS[k]]) for k, v in job.meta_options.items()}
    return {"source": job.source, **own, **fit, **job.field_options, **meta}


store_app = typer.Typer(no_args_is_help=True, help="Inspect FieldStores (datasets of fields).")
app.add_typer(store_app, name="store")


@store_app.command("info")
def store_info_command(
    store: Path = typer.Argument(..., help="FieldStore folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    verify: bool = typer.Option(False, help="Read every chunk and check it against its checksum; exit 2 on damage."),
) -> None:
    """Counts, labels, splits, PSNR statistics and the config of a FieldStore."""
    from fieldlab.store.field_store import FieldStore

    opened = FieldStore(store)
    problems = _problems(opened) if verify else []
    s = opened.summary() if not problems else None
    if as_json and s is not None:
        print(json.dumps({**s, **({"verified": True} if verify else {})}, indent=2))
    elif s is not None:
        _print_store(s)
    if verify:
        _report_verify(opened, problems, quiet=as_json)


def _problems(store) -> list[tuple[int | None, str]]:
    """(chunk, line) for every damaged chunk, and (None, line) for damaged shared tensors."""
    from fieldlab._errors import UserError

    found: list[tuple[int | None, str]] = list(store.problems())
    try:
        store.shared()
    except UserError as error:
        found.append((None, str(error)))
    return found


def _report_verify(store, problems: list[tuple[int | None, str]], quiet: bool) -> None:
    """One line per damaged or missing chunk, then one error line; or one line saying all is well."""
    from fieldlab._errors import UserError

    if problems:
        for _, line in problems:
            print(f"damaged   {line}")
        chunks = {chunk for chunk, _ in problems if chunk is not None}
        if not chunks:
            raise UserError(f"{store.path}: its shared tensors are damaged; fit the store again")
        raise UserError(f"{store.path}: {len(chunks):,} of {store.num_chunks:,} chunks are damaged or missing; run "
                        "fit-dataset with --resume to refit them")
    if not quiet:
        checked = "match their checksums" if "checksums" in store.attrs else \
            "decode (this older store recorded no checksums)"
        print(f"verify    OK: all {store.num_chunks:,} chunks of every array {checked}")


def _print_store(s: dict) -> None:
    from fieldlab.fit.batched import SNR, stop_measure

    p = s["psnr"]
    signal = s["signal"]
    extra = signal.get("extra", {})
    print(f"store     {s['path']}")
    print(f"fields    {s['complete']:,} of {s['num_fields']:,} complete ({s['missing']:,} missing), "
          f"chunks of {s['chunk_fields']:,}")
    splits = ", ".join(f"{k} {v:,}" for k, v in s["splits"].items()) + f"; {s['augmented']:,} augmented"
    if s["labelled"] or not s["label_names"]:
        print(f"labels    {s['labelled']:,} labelled, {s['num_labels']} classes; splits {splits}")
    else:  # a segmentation store: its per-pixel labels come from the source's masks
        print(f"masks     {len(s['label_names'])} classes ({', '.join(map(str, s['label_names']))}), per pixel "
              f"from the source; splits {splits}")
    if p:
        print(f"psnr      mean {p['mean']:.2f} dB, min {p['min']:.2f}, median {p['median']:.2f}, max {p['max']:.2f}"
              f"{_short_of_target(s)}")
        if extra.get("occupancy") and s["fit"].get("target_accuracy"):  # ±1: PSNR says little
            print(f"stopping  each field once {100 * s['fit']['target_accuracy']:.1f} % of its grid samples had the "
                  "right sign (--target-accuracy), or at --steps")
        elif stop_measure(signal["kind"]) is SNR and s["fit"].get("target_snr"):  # a quiet clip's PSNR misreads it
            print(f"stopping  each field once its SNR reached {s['fit']['target_snr']:g} dB (--target-snr), or at "
                  "--steps")
    if s["nan_psnr"]:
        print(f"warning   {s['nan_psnr']:,} complete fields have a NaN PSNR (their fits diverged); fit the store again")
    print(f"field     {s['field']}: {s['params_per_field']:,} params per field, {s['shared_params']:,} shared")
    print("config    " + ", ".join(f"{k}={v}" for k, v in s["config"].items()))
    facts = " (occupancy)" if extra.get("occupancy") else \
        f" at {extra['sample_rate']:,} Hz" if isinstance(extra.get("sample_rate"), int) else ""
    print(f"signal    {signal['kind']} {'x'.join(map(str, signal['shape']))}x{signal['channels']}{facts} "
          f"from {s['source'].get('spec', signal.get('source', ''))}")
    from fieldlab.signals.datasets import describe_source

    print(f"source    {describe_source(s['source'], s['label_names'])}")
    if s["shared_params"]:  # a meta-learned family: per-field fit options do not apply
        from fieldlab.fit.meta import PER_FIELD_FIT

        fit = {k: v for k, v in s["fit"].items() if k not in PER_FIELD_FIT}
        print("meta      " + (", ".join(f"{k}={v}" for k, v in s["meta"].items()) or "defaults"))
    else:
        fit = s["fit"]
    print("fit       " + ", ".join(f"{k}={v}" for k, v in fit.items() if v is not None))
    print(f"checksums {s['checksums']} per chunk and array" if s["checksums"] else
          "checksums none (an older store: chunks are read unchecked; --verify checks that they decode)")
