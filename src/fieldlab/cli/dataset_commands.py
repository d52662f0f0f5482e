"""`fieldlab fit-dataset` and `fieldlab store …`: datasets of fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from fieldlab.cli._options import parse_extra
from fieldlab.cli.main import app

FIT_DATASET_HELP = ("Fit one field per item of SOURCE (an ImageFolder-style folder, a .npz/.npy file, or "
                    "sample:digits, sample:lfw, sample:patches[:N], sample:shapes[:N], sample:balls[:N]) into the "
                    "FieldStore --out. Field options follow as --name VALUE (see `fieldlab fields NAME`); functa "
                    "and spatial_functa also take "
                    "--meta-steps, --meta-batch-size, --meta-lr, --inner-steps, --warmup, --clip-norm, --first-order.")


@app.command("fit-dataset", help=FIT_DATASET_HELP,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def fit_dataset_command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Dataset: folder of class folders, .npz/.npy, or sample:NAME."),
    out: Path = typer.Option(..., "--out", help="FieldStore (a zarr folder) to write."),
    field: str = typer.Option("siren", help="Architecture (see `fieldlab fields`)."),
    limit: Optional[int] = typer.Option(None, help="Fit only the first N items."),
    resume: bool = typer.Option(False, help="Continue an interrupted run into the same --out."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
    copies: int = typer.Option(1, help="Fitted copies per item: the first as is, the others flipped and cropped."),
    chunk_fields: Optional[int] = typer.Option(None, help="Fields per chunk and per batch (4096 on a GPU, 256 on CPU)."),
    test_fraction: float = typer.Option(0.0, help="Seeded fraction of the items marked split 'test'."),
    image_size: Optional[int] = typer.Option(None, help="Resize a folder's images to this square size."),
    steps: Optional[int] = typer.Option(None, help="Adam steps per field (default 500)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the field's tuned one)."),
    lr_final: Optional[float] = typer.Option(None, help="Final learning rate as a fraction of --lr."),
    init: Optional[str] = typer.Option(None, help="shared (one draw for all fields, default) or random."),
    target_psnr: Optional[float] = typer.Option(None, help="A field stops at this PSNR (default 40 dB; 0: never)."),
    check_every: Optional[int] = typer.Option(None, help="Steps between PSNR checks for --target-psnr."),
    sample_fraction: Optional[float] = typer.Option(None, help="Random fraction of each signal's samples per step."),
    seed: Optional[int] = typer.Option(None, help="Seed of initialisation, pixel subsets and augmentation."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    precision: Optional[str] = typer.Option(None, help="fp32, tf32 or bf16."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="Use torch.compile."),
    kernel: Optional[str] = typer.Option(None, help="auto (the fused Triton kernel on CUDA for SIREN, Gaussian "
                                         "and Fourier-feature MLPs up to 64 wide, 32 at fp32, else the reference "
                                         "path), fused (up to 128 wide at bf16) or reference."),
    quiet: bool = typer.Option(False, help="No progress lines."),
) -> None:
    from fieldlab.fit.batched import BatchedFitConfig
    from fieldlab.fit.dataset_job import DatasetJob, run_dataset_job
    from fieldlab.fit.meta import META_OPTIONS

    given = {"steps": steps, "lr": lr, "lr_final": lr_final, "init": init, "target_psnr": target_psnr,
             "check_every": check_every, "sample_fraction": sample_fraction, "seed": seed, "device": device,
             "precision": precision, "compile": compile, "kernel": kernel}
    fit = BatchedFitConfig(**{k: v for k, v in given.items() if v is not None})
    extra = parse_extra(ctx.args)
    meta_options = {k: extra.pop(k) for k in list(extra) if k in META_OPTIONS}  # functa's meta-learning
    job = DatasetJob(source=source, field=field, field_options=extra, fit=fit, limit=limit, copies=copies,
                     chunk_fields=chunk_fields, test_fraction=test_fraction, image_size=image_size,
                     meta_options=meta_options)
    summary = run_dataset_job(job, out, resume=resume, force=force, progress=not quiet)
    if summary is not None:
        psnr = summary["psnr"]
        print(f"{summary['complete']:,} of {summary['num_fields']:,} {summary['field']} fields "
              f"({summary['params_per_field']:,} params each), mean PSNR {psnr.get('mean', float('nan')):.2f} dB "
              f"(min {psnr.get('min', float('nan')):.2f}) -> {out}")


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
    p = s["psnr"]
    signal = s["signal"]
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
        print(f"psnr      mean {p['mean']:.2f} dB, min {p['min']:.2f}, median {p['median']:.2f}, max {p['max']:.2f}")
    if s["nan_psnr"]:
        print(f"warning   {s['nan_psnr']:,} complete fields have a NaN PSNR (their fits diverged); fit the store again")
    print(f"field     {s['field']}: {s['params_per_field']:,} params per field, {s['shared_params']:,} shared")
    print("config    " + ", ".join(f"{k}={v}" for k, v in s["config"].items()))
    print(f"signal    {signal['kind']} {'x'.join(map(str, signal['shape']))}x{signal['channels']} "
          f"from {s['source'].get('spec', signal.get('source', ''))}")
    if s["shared_params"]:  # a meta-learned family: per-field fit options do not apply
        from fieldlab.fit.meta import PER_FIELD_FIT

        fit = {k: v for k, v in s["fit"].items() if k not in PER_FIELD_FIT}
        print("meta      " + (", ".join(f"{k}={v}" for k, v in s["meta"].items()) or "defaults"))
    else:
        fit = s["fit"]
    print("fit       " + ", ".join(f"{k}={v}" for k, v in fit.items() if v is not None))
    print(f"checksums {s['checksums']} per chunk and array" if s["checksums"] else
          "checksums none (an older store: chunks are read unchecked; --verify checks that they decode)")
