"""The functa-family protocol (functa_cifar10.py, spatial_functa_cifar10.py): meta-train on the training
split with `fieldlab fit-dataset`, report the reconstruction PSNR of the test split's latents (3 inner
steps from a zero latent, as the papers), then train a classifier on the latents with `fieldlab train` and
report its test accuracy. Every number comes from the same store and run; nothing is tuned on the test split
(the widths, rates and steps are the papers' or fixed in advance; rule 2 of BENCHMARKS.md).

`--seconds` is the budget of the whole protocol: meta-training gets 70% of it, sized in outer steps from a
timed calibration of a few steps (fit-dataset's --max-seconds bounds fitting the latents, not the
meta-learning before it); the classifier gets 15% (`train --max-seconds`).
"""

from __future__ import annotations

import time

import _protocol as P

CIFAR_WHERE = ("download CIFAR-10's binary version (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz), "
               "unpack it so that the folder holds data_batch_1.bin … test_batch.bin, and give it as --source "
               "(any fit-dataset source works, e.g. sample:patches)")
DEFAULT_SOURCE = "data/cifar-10-batches-bin"
META_SHARE, CLASSIFIER_SHARE = 0.70, 0.15


def add_options(p, *, classifier: str) -> None:
    p.add_argument("--source", default=None,
                   help=f"a fit-dataset source (default {DEFAULT_SOURCE}; smoke: sample:patches:48)")
    p.add_argument("--seconds", type=float, default=900, help="budget of the whole protocol (GPU: ~15 min)")
    p.add_argument("--meta-steps", type=int, default=0, help="outer steps (0: as many as 70%% of --seconds buys)")
    p.add_argument("--meta-batch-size", type=int, default=64)
    p.add_argument("--meta-lr", type=float, default=1e-4)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--limit", type=int, default=0, help="fit only the first N items (0: all)")
    p.add_argument("--copies", type=int, default=1, help="fitted copies per item (the papers classify on 50)")
    p.add_argument("--test-fraction", type=float, default=1 / 6,
                   help="held-out share for a source without its own test split (CIFAR-10's 10k of 60k)")
    p.add_argument("--classifier", default=classifier, help="fieldlab train --net on the latents")
    p.add_argument("--classifier-steps", type=int, default=20000)
    p.add_argument("--classifier-batch-size", type=int, default=256)


def smoke(args) -> None:
    """Tiny sizes: seconds on two CPU cores (CI runs it: it proves the pipeline, not a number)."""
    args.source = args.source or "sample:patches:48"
    args.meta_steps, args.meta_batch_size = args.meta_steps or 3, 8
    args.hidden_dim, args.num_layers = 16, 2
    args.classifier_steps, args.classifier_batch_size = 5, 16
    args.device = "cpu" if args.device == "auto" else args.device


def run(args, *, field: str, latent_options: list, latent_size: int, paper: dict[str, float], title: str,
        classifier_options: list = ()) -> None:
    if args.smoke:
        smoke(args)
    args.source = args.source or DEFAULT_SOURCE
    P.require_path(args.source, "CIFAR-10", CIFAR_WHERE)
    proto = P.Protocol(args)
    cuda = P.cuda(args.device)
    from fieldlab.signals.datasets import open_source

    source = open_source(args.source)
    own_split = getattr(source, "split", None) is not None
    field_options = ["--hidden-dim", args.hidden_dim, "--num-layers", args.num_layers, *latent_options]
    if not args.meta_steps:
        args.meta_steps = calibrate(proto, args, field, field_options, source, cuda)
    store = proto.out / "store"
    fit = ["fit-dataset", args.source, "--field", field, *field_options, "--meta-steps", args.meta_steps,
           "--meta-batch-size", args.meta_batch_size, "--meta-lr", args.meta_lr, "--copies", args.copies,
           "--seed", args.seed, "--device", args.device, "--out", store, "--force"]
    fit += ["--precision", "tf32"] if cuda else []  # bf16 is refused for meta-learning (second-order terms)
    fit += ["--limit", args.limit] if args.limit else []
    fit += ["--quiet"] if args.smoke else []
    fit += [] if own_split else ["--test-fraction", round(args.test_fraction, 4)]
    fit_seconds = proto.fieldlab(*fit)
    psnr = store_psnr(store)
    proto.say(f"reconstruction: test {psnr['test']:.2f} dB, train {psnr['train']:.2f} dB ({psnr['split']})")

    run_dir = proto.out / "classifier"
    train = ["train", store, "--net", args.classifier, *classifier_options, "--steps", args.classifier_steps,
             "--batch-size", args.classifier_batch_size, "--seed", args.seed, "--device", args.device,
             "--out", run_dir, "--force", "--quiet"]
    train += ["--precision", "bf16"] if cuda else []
    train += [] if args.smoke else ["--max-seconds", round(CLASSIFIER_SHARE * args.seconds)]
    train_seconds = proto.fieldlab(*train)
    metrics = P.read_json(run_dir / "run.json")["metrics"]
    accuracy = 100 * metrics["test_accuracy"]
    proto.say(f"classifier {args.classifier}: {accuracy:.1f}% on {metrics['test_fields']} test fields")

    device = P.device_name(args.device)
    common = {"protocol": proto.name, "field": field, "latent": latent_size, "source": args.source,
              "device": device, "meta_steps": args.meta_steps}
    rows = [
        {**common, "metric": "psnr_db", "split": "test", "value": P.rounded(psnr["test"]), "paper": paper["psnr"],
         "count": psnr["test_count"], "seconds": P.rounded(fit_seconds, 1)},
        {**common, "metric": "psnr_db", "split": "train", "value": P.rounded(psnr["train"]), "paper": paper["psnr"],
         "count": psnr["train_count"], "seconds": P.rounded(fit_seconds, 1)},
        {**common, "metric": f"accuracy_pct ({args.classifier})", "split": "test", "value": P.rounded(accuracy),
         "paper": paper["accuracy"], "count": metrics["test_fields"], "seconds": P.rounded(train_seconds, 1)},
    ]
    proto.table(rows, ["protocol", "field", "latent", "metric", "split", "value", "paper", "count", "seconds",
                       "meta_steps", "source", "device"])
    plot(proto, rows, args.device, title)


def calibrate(proto, args, field, field_options, source, cuda) -> int:
    """Outer steps that fit in META_SHARE of --seconds, from the time of a few steps on this device."""
    import torch

    from fieldlab.fit.dataset_job import resolve_dataset_config
    from fieldlab.fit.loop import matmul_precision
    from fieldlab.fit.meta import MetaLearner, meta_config_from_options
    from fieldlab.signals._signal import grid_coords

    options = {str(k).removeprefix("--").replace("-", "_"): str(v)
               for k, v in zip(field_options[::2], field_options[1::2])}
    config = resolve_dataset_config(field, options, source)
    meta = meta_config_from_options({"meta_batch_size": str(args.meta_batch_size)}, device=args.device)
    info = source.info()
    learner = MetaLearner(config, grid_coords(info.domain, info.domain, info.shape), meta)
    values = torch.rand(args.meta_batch_size, learner.coords.shape[0], source.channels, device=learner.device)
    with matmul_precision("tf32" if cuda else "fp32"):
        for _ in range(3):  # warm-up: first-call allocations and kernel selection
            learner.step(values)
        sync(cuda)
        start, timed = time.perf_counter(), 10
        for _ in range(timed):
            learner.step(values)
        sync(cuda)
    per_step = (time.perf_counter() - start) / timed
    steps = max(1, int(META_SHARE * args.seconds / per_step))
    proto.say(f"calibration: {per_step * 1000:.1f} ms per outer step -> --meta-steps {steps}")
    proto.note(f"--meta-steps {steps}: {META_SHARE:.0%} of --seconds {args.seconds:g} at {per_step * 1000:.1f} ms "
               "per outer step, timed on this device before the run")
    del learner, values
    if cuda:
        torch.cuda.empty_cache()  # the run that follows starts with the device's memory free
    return steps


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def store_psnr(store) -> dict:
    """Mean PSNR of the rows `fieldlab train` tests on and of those it trains on (its own split rule)."""
    from fieldlab.learn.train import split_rows
    from fieldlab.store.field_store import FieldStore

    fields = FieldStore(store)
    train, test, how = split_rows(fields)
    psnr = fields.column("psnr")
    return {"test": float(psnr[test].mean()), "train": float(psnr[train].mean()), "split": how,
            "test_count": len(test), "train_count": len(train)}


def plot(proto, rows, device, title) -> None:
    plt = proto.figure()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    for ax, metric in zip(axes, ("psnr_db", "accuracy")):
        chosen = [r for r in rows if r["metric"].startswith(metric) and r["split"] == "test"][0]
        ax.bar(["ours", "paper"], [chosen["value"], chosen["paper"]], color=["tab:blue", "tab:gray"])
        for i, v in enumerate((chosen["value"], chosen["paper"])):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_title(f"test {chosen['metric']}", fontsize=9)
    proto.save(fig, title, device)
