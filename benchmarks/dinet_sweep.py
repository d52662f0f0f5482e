"""DI-Net sweep (issue 20): choose DI-Net's defaults on a validation split, then score them on the test split.

    python benchmarks/dinet_sweep.py --export STORE --data DIR          # once, where zarr is installed
    python benchmarks/dinet_sweep.py --data DIR --out results.json      # on the GPU

The store's train split (`split_rows`: every 5th digit held out for test) is cut again: every 5th train
field is the VALIDATION split. Each trial trains DI-Net-4 on the rest for `--steps` steps and is scored on
validation at grid, qmc, rqmc, random and shrunk points at 16² and at 32² (randomized sets: the mean of
`--draws` draws); its score is the mean over those cells, so a config wins by being accurate everywhere,
not at its training set alone. The sweep is greedy, one option group at a time (quadrature weights and
normalization, training point mix, resolution augmentation, neighbours, channels, learning rate, support
shape), keeping a change only if it raises the validation score. The test split is touched once, at the
end: the chosen config, `cnn4` (grid) and `nuft` (rqmc) are trained on the whole train split with the
same steps, batch and seed, and scored on every point set at 8², 16² and 32².

`--cost` is the cost-aware mode: it starts from the library's own defaults (`dinet` and `train`'s) and tries
cheaper networks (COST_STAGES: fewer channels, fewer basis functions, fewer neighbours), each trial also
timed against cnn4 in the same process (`dinet_speed.py`'s runners: steps/s and GFLOP per train step at the
training count, RQMC points). The rule, fixed before any run: a candidate replaces the current choice when
its step does less work (GFLOP) than the current choice's and its validation score is at least the
starting defaults' score minus `--margin` (so losses cannot add up past the margin over stages); within a
stage, candidates run from the most to the least expensive, the cheapest that passes is kept, and the stage
stops at the first that fails. The test split is not read in this mode unless `--final` is given (the
acceptance is `dinet_targets.sh` at the library's defaults once they change).

`--cut` picks the validation cut of the train split. `every5` (the default) is the one above. `band` is for
photo crops (benchmarks/protocols/photo_patches.py), where every-5th validation crops overlap fit crops of the
same photo (28% of their pixels on average) and read far above the test split, which comes from a held-out
band of rows. `band` holds out a band of rows in the same way. With B the photo's first test row (photo_patches'
rule, from the photo height recorded) and S the crop side recorded, validation is the training crops whose top
row is at least V = B − 4·S + S/2 (the last 3.5 crop heights of the training rows). Fit is the crops whose top
row is at most V − S, which end before row V, so no fit pixel lies in a validation crop. The crops in between
are dropped.
For 512-row photos and 32×32 crops: B = 384, validation tops 272–352 (rows 272–383), fit tops 0–240. The
positions come from DIR/positions.json, which `--export` writes when the store was fitted to a folder that has
photo_patches' crops.csv (or one given by `--crops`), matched to the store's rows through its source_index
column. `--no-final` scores nothing on the test split (validation trials only).

Any classification store exported with `--export` works (labels, any channels): for 32×32 colour images,
e.g. `--num-points 1024 --sides 32,64 --test-sides 16,32,64`. `--cost` times 2-D networks only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import dinet_speed  # noqa: E402  (the cost of a trial: the same runners and timing as the speed benchmark)
from learn import export, load  # noqa: E402  (benchmarks/learn.py: the store as safetensors, no zarr needed)

from fieldlab._optim import Adam  # noqa: E402
from fieldlab.learn.abilities import SizedByPoints  # noqa: E402
from fieldlab.learn.nets import DINetDefaultConfig, net_config  # noqa: E402
from fieldlab.learn.points import PointSampler  # noqa: E402
from fieldlab.fit.schedule import Schedule  # noqa: E402
from fieldlab.learn.train import Split, TrainConfig, accuracy, make_input  # noqa: E402

KINDS = ("grid", "qmc", "rqmc", "random", "shrunk")
RANDOMIZED = ("rqmc", "random", "shrunk")
NET_OPTIONS = ("channels", "neighbours", "normalization", "quadrature", "shape", "num_basis", "backend", "separable",
               "multiplier", "down_support")

BASE = {"net": "dinet", "steps": 300, "points": "rqmc", "mix": "grid,qmc,shrunk", "resolutions": "", "lr": 2e-3,
        "channels": 32, "neighbours": 32.0, "normalization": "integral", "quadrature": "given", "shape": "box"}
STAGES = [
    ("quadrature", [{"quadrature": "cells"}, {"normalization": "mean"},
                    {"quadrature": "cells", "normalization": "mean"}]),
    ("point mix", [{"points": "mixed", "mix": "rqmc,random,shrunk"},
                   {"points": "mixed", "mix": "grid,rqmc,random,shrunk"}]),
    ("resolutions", [{"resolutions": "12,16,24"}, {"resolutions": "16,24,32"}]),
    ("neighbours", [{"neighbours": 16.0}, {"neighbours": 64.0}]),
    ("channels", [{"channels": 16}, {"channels": 48}]),
    ("lr", [{"lr": 4e-3}, {"lr": 1e-3}]),
    ("shape", [{"shape": "ball"}]),
    ("steps", [{"steps": 600}]),
]
COST_STAGES = [  # each stage's candidates from the most to the least expensive
    ("channels", [{"channels": 32}, {"channels": 24}, {"channels": 16}]),
    ("basis", [{"num_basis": 8}, {"num_basis": 4}]),
    ("neighbours", [{"neighbours": 24.0}, {"neighbours": 16.0}]),
]


def library_defaults(dim: int) -> dict:
    """The options `fieldlab train STORE --net dinet` uses today, in this script's vocabulary."""
    cfg, loop = DINetDefaultConfig(), TrainConfig(net="dinet").resolved(dim)
    return {"net": "dinet", "steps": loop.steps, "points": loop.points, "mix": loop.mix,
            "resolutions": loop.resolutions, "lr": loop.lr, **{k: getattr(cfg, k) for k in NET_OPTIONS if hasattr(cfg, k)}}


def validation_cut(train: Split) -> tuple[Split, Split]:
    """(fit, validation): every 5th field of the train split is held out for choosing."""
    held = np.arange(len(train.rows)) % 5 == 4
    return _take(train, ~held), _take(train, held)


def write_positions(store_path: str, data: Path, crops: str | None = None) -> None:
    """DIR/positions.json: each exported row's crop position (train rows, then test rows, as `export` writes
    them), from photo_patches' crops.csv (`crops`, else crops.csv in the folder the store was fitted to). A store
    of another source gets no file. Store rows are matched to crop files through the store's source_index, the
    item index of fieldlab's ImageFolder reader: split folders train then test, classes sorted, files sorted
    within a class. The order rebuilt from the csv must give the store's `files_sha1`, or nothing is written."""
    import csv
    import hashlib

    from fieldlab.learn.train import split_rows
    from fieldlab.store.field_store import FieldStore

    store = FieldStore(store_path)
    source = store.attrs.get("source", {})
    table = Path(crops) if crops else Path(source.get("spec", "")) / "crops.csv"
    (data / "positions.json").unlink(missing_ok=True)  # none from an earlier export outlives this one
    if not table.is_file():
        print(f"no crop positions ({table} not found): --cut band will refuse {data}")
        return
    with open(table, newline="") as f:
        records = list(csv.DictReader(f))
    order = {split: n for n, split in enumerate(source.get("splits") or ["train"])}
    classes = {name: n for n, name in enumerate(source.get("classes", []))}
    ordered = sorted((r for r in records if r["split"] in order and r["class"] in classes),
                     key=lambda r: (order[r["split"]], classes[r["class"]], Path(r["file"])))
    sha1 = hashlib.sha1("\n".join(r["file"] for r in ordered).encode()).hexdigest()
    if len(ordered) != source.get("count") or sha1 != source.get("files_sha1"):
        _refuse(f"{table} does not list the files {store_path} was fitted to ({len(ordered)} crops against "
                f"{source.get('count')} source items, or other file names)")
    train_rows, test_rows, _ = split_rows(store)
    item = store.column("source_index")[np.concatenate([train_rows, test_rows])]
    if (item < 0).any():
        _refuse(f"{store_path} has rows without a source item; positions cannot be matched")
    picked = [ordered[i] for i in item]
    positions = {"crops": str(table), "files_sha1": sha1, "train": len(train_rows), "test": len(test_rows),
                 **{k: [r[k] for r in picked] for k in ("file", "split")},
                 **{k: [int(r[k]) for r in picked] for k in ("height", "width", "size", "top", "left")}}
    (data / "positions.json").write_text(json.dumps(positions))
    print(f"crop positions of {len(picked)} rows from {table} -> {data / 'positions.json'}")


def band_limits(height: int, size: int) -> tuple[int, int]:
    """(last fit top, first validation top) of `--cut band` for a photo `height` rows high and crops `size`
    wide (module docstring): 240 and 272 for 512 and 32."""
    from protocols.photo_patches import band_start  # benchmarks/protocols: the test band's rule

    first_val = band_start(height) - 4 * size + size // 2
    return first_val - size, first_val


def band_cut(train: Split, data: Path) -> tuple[Split, Split]:
    """(fit, validation) of `--cut band`: by crop position, from DIR/positions.json."""
    path = data / "positions.json"
    if not path.is_file():
        _refuse(f"--cut band needs crop positions and {path} does not exist; export a store fitted to "
                f"photo_patches.py crops (crops.csv) again with --export STORE --data {data}")
    positions = json.loads(path.read_text())
    exported = json.loads((data / "fields.json").read_text()).get("source", {}).get("files_sha1")
    if positions["train"] != len(train.rows) or positions["files_sha1"] != exported:
        _refuse(f"{path} does not describe the store exported to {data} ({positions['train']} train rows against "
                f"{len(train.rows)}, or another file list); export again")
    top, height, size = (np.asarray(positions[k][:positions["train"]])[train.rows] for k in ("top", "height", "size"))
    if any(s != "train" for s in positions["split"][:positions["train"]]):
        _refuse(f"{path}: a train row of the store is not a train crop of photo_patches.py")
    pairs = list(zip(height.tolist(), size.tolist()))  # per crop: photos of several heights may mix
    limits = {pair: band_limits(*pair) for pair in set(pairs)}
    last_fit, first_val = (np.asarray([limits[pair][i] for pair in pairs]) for i in (0, 1))
    fit, val = top <= last_fit, top >= first_val
    if not fit.any() or not val.any():
        _refuse(f"--cut band leaves {int(fit.sum())} fit and {int(val.sum())} validation fields; the photos "
                f"are too short for a validation band above their test band")
    return _take(train, fit), _take(train, val)


def _take(split: Split, mask: np.ndarray) -> Split:
    index = torch.from_numpy(np.flatnonzero(mask)).to(split.labels.device)
    return Split(split.rows[mask], {k: v[index] for k, v in split.params.items()}, split.labels[index])


def train_one(options: dict, data: Split, evaluator, info, device, batch: int, num_points: int, seed: int = 0):
    """A network trained as `fieldlab train` trains it (same sampler, noise, schedule); (net, cfg, seconds).
    `seed` sets the initialization, the batches, the noise and the point sets drawn."""
    steps = options["steps"]
    config = TrainConfig(net=options["net"], points=options["points"], mix=options["mix"], num_points=num_points,
                         resolutions=options["resolutions"], steps=steps, batch_size=batch, lr=options["lr"], seed=seed)
    # the options this network takes: a start of {"net": "cnn4", "points": "grid"} keeps BASE's DI-Net options out
    takes = {f.name for f in dataclasses.fields(net_config(options["net"]))}
    cfg = net_config(options["net"], **{k: options[k] for k in NET_OPTIONS if k in options and k in takes})
    if isinstance(cfg, SizedByPoints):
        cfg = cfg.for_points(num_points, info["dim"])
    torch.manual_seed(seed)
    net = cfg.build(info["channels"], info["classes"], info["dim"]).to(device)
    optimizer = Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)  # as train steps
    samplers = config.samplers(info["dim"])
    jitter = options.get("jitter", 0.0)  # sample spacings, as `train --jitter`
    if jitter:
        if "shape" not in info:
            raise SystemExit("--jitter needs the store's shape: export the store again (fields.json has none)")
        jitter = torch.tensor([jitter * 2 / n for n in info["shape"]])
    began = time.time()
    for step in range(steps):
        net.train()
        g = torch.Generator().manual_seed(step + 1_000_003 * seed)
        pick = torch.randint(len(data.rows), (batch,), generator=g).to(device)
        points = config.step_points(samplers, step).to(device)
        noise = config.noise * torch.randn(batch, len(points), info["channels"], generator=g)
        x = make_input(cfg, evaluator, {k: v[pick] for k, v in data.params.items()}, points,
                       jitter=jitter, noise=noise, generator=g)
        loss = torch.nn.functional.cross_entropy(net(x), data.labels[pick])
        for group in optimizer.param_groups:
            group["lr"] = Schedule(config.lr, steps, "cosine", final=0.0, warmup=config.warmup).lr(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return net, cfg, time.time() - began


def table(net, cfg, evaluator, split: Split, info, sides, draws: int, kinds=KINDS) -> dict[str, float]:
    """Accuracy (%) per 'kind@side' cell; randomized sets averaged over `draws` draws."""
    cells = {}
    for side in sides:
        for kind in kinds:
            if cfg.takes == "grid" and kind != "grid":
                continue
            runs = [accuracy(net, cfg, evaluator, split, PointSampler(kind=kind, n=side ** info["dim"], dim=info["dim"],
                                                                      seed=1 + d))
                    for d in range(draws if kind in RANDOMIZED else 1)]
            cells[f"{kind}@{side}"] = round(100 * float(np.mean(runs)), 2)
    return cells


def trial(options, fit, val, evaluator, info, device, args) -> dict:
    net, cfg, seconds = train_one(options, fit, evaluator, info, device, args.batch, args.num_points, args.seed)
    cells = table(net, cfg, evaluator, val, info, args.sides, args.draws)
    score = float(np.mean(list(cells.values())))
    row = {"options": options, "val": cells, "score": round(score, 2), "worst": min(cells.values()),
           "train_seconds": round(seconds, 1)}
    print(f"{score:6.2f} (worst {row['worst']:5.1f}, {seconds:5.1f}s)  "
          f"{ {k: v for k, v in options.items() if BASE.get(k) != v} }", flush=True)
    return row


def sweep(fit, val, evaluator, info, device, args) -> tuple[dict, list]:
    """Greedy over STAGES on the validation split; (chosen options, every trial)."""
    best = {**BASE, "steps": args.steps, **json.loads(args.start)}
    stages = [(name, changes) for name, changes in STAGES if not args.stages or name in args.stages.split(",")]
    rows = [trial(best, fit, val, evaluator, info, device, args)]
    best_score = rows[0]["score"]
    began = time.time()
    for name, changes in stages:
        per_trial = (time.time() - began) / max(1, len(rows) - 1) if len(rows) > 1 else rows[0]["train_seconds"] * 1.5
        if time.time() - began + per_trial * len(changes) > args.budget:
            print(f"stage {name}: skipped (time budget)", flush=True)
            continue
        print(f"stage {name}", flush=True)
        stage_best = None
        for change in changes:
            try:
                row = trial({**best, **change}, fit, val, evaluator, info, device, args)
            except Exception as error:  # a failed trial is a row, not the end of the sweep
                print(f"trial {change} failed: {error!r}", flush=True)
                rows.append({"options": {**best, **change}, "error": repr(error), "stage": name})
                continue
            row["stage"] = name
            rows.append(row)
            if args.out:
                args.out.write_text(json.dumps({"trials": rows}, indent=1))
            if row["score"] > best_score + args.margin and (stage_best is None or row["score"] > stage_best["score"]):
                stage_best = row
        if stage_best is not None:
            best, best_score = dict(stage_best["options"]), stage_best["score"]
    return best, rows


def cost(options: dict, info, device, args) -> dict:
    """The step cost of `options`' network at the training count on RQMC points, against cnn4 timed in the same
    rounds: steps/s, GFLOP per step (forward and backward) and both ratios."""
    side = round(args.num_points ** 0.5)
    shape = {"in_channels": info["channels"], "classes": info["classes"]}
    net_options = {k: options[k] for k in NET_OPTIONS if k in options}
    runners = [dinet_speed.Runner("cnn4", "grid", side, args.batch, device, **shape),
               dinet_speed.Runner(options["net"], "rqmc", side, args.batch, device, **shape, **net_options)]
    rates, work, _ = dinet_speed.measure(runners, args.cost_steps, args.cost_rounds, warmup=1)
    base, own = runners[0].name, runners[1].name
    return {"steps_per_s": round(rates[own], 3), "gflop": round(work[own], 3), "cnn4_steps_per_s": round(rates[base], 3),
            "ratio_to_cnn4": round(rates[own] / rates[base], 3), "flop_ratio_to_cnn4": round(work[own] / work[base], 2)}


def costed_trial(options, fit, val, evaluator, info, device, args) -> dict:
    row = {**trial(options, fit, val, evaluator, info, device, args), **cost(options, info, device, args)}
    print(f"        {row['gflop']:.2f} GFLOP/step ({row['flop_ratio_to_cnn4']}× cnn4), {row['steps_per_s']:.2f} steps/s "
          f"({row['ratio_to_cnn4']}× cnn4)", flush=True)
    return row


def cost_sweep(fit, val, evaluator, info, device, args) -> tuple[dict, list]:
    """COST_STAGES from the library's defaults under the rule of the module docstring; (chosen options, trials)."""
    start = {**library_defaults(info["dim"]), "steps": args.steps, **json.loads(args.start)}
    reference = costed_trial(start, fit, val, evaluator, info, device, args)
    floor = reference["score"] - args.margin
    reference["floor"] = round(floor, 2)
    print(f"reference {reference['score']:.2f}: a cheaper network is kept at a score of at least {floor:.2f}", flush=True)
    rows, best = [reference], reference
    for name, changes in COST_STAGES:
        if args.stages and name not in args.stages.split(","):
            continue
        print(f"stage {name}", flush=True)
        stage_best = best
        for change in changes:
            row = {**costed_trial({**best["options"], **change}, fit, val, evaluator, info, device, args), "stage": name}
            row["kept"] = row["score"] >= floor and row["gflop"] < stage_best["gflop"]
            rows.append(row)
            if args.out:
                args.out.write_text(json.dumps({"rule_floor": floor, "trials": rows}, indent=1))
            if not row["kept"]:
                break
            stage_best = row
        best = stage_best
    return dict(best["options"]), rows


def final(best, train, test, evaluator, info, device, args) -> dict:
    """The chosen DI-Net and the baselines, trained on the whole train split, on the test table."""
    out = {}
    loop = {"mix": BASE["mix"], "resolutions": "", "lr": BASE["lr"], "steps": best["steps"]}  # the same steps for all
    # the exact NUDFT: the GPU image has no torchkbnufft, and exact is the better transform anyway
    contenders = {"dinet": best, "cnn4": {**loop, "net": "cnn4", "points": "grid"},
                  "nuft": {**loop, "net": "nuft", "points": "rqmc", "backend": "exact"}}
    for name, options in contenders.items():
        net, cfg, seconds = train_one(options, train, evaluator, info, device, args.batch, args.num_points, args.seed)
        cells = table(net, cfg, evaluator, test, info, args.test_sides, args.test_draws)
        out[name] = {"options": options, "test": cells, "train_seconds": round(seconds, 1)}
        print(name, json.dumps(cells), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", help="a classification FieldStore to export to --data (needs zarr)")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--crops", help="with --export: photo_patches' crops.csv (default: the one in the folder "
                                         "the store was fitted to)")
    parser.add_argument("--cut", choices=("every5", "band"), default="every5",
                        help="validation cut of the train split (module docstring; band needs positions.json)")
    parser.add_argument("--no-final", action="store_true", help="score nothing on the test split")
    parser.add_argument("--steps", type=int, default=300, help="steps of every trial (the steps stage tries 600)")
    parser.add_argument("--start", default="{}", help="JSON options to start from instead of the old defaults")
    parser.add_argument("--stages", default="",
                        help="comma-separated stages to run (default: all; a name of no stage, e.g. none: the "
                             "starting trial alone)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of every trial (a second seed shows the noise)")
    parser.add_argument("--num-points", type=int, default=256)
    parser.add_argument("--draws", type=int, default=2, help="draws of randomized sets on validation")
    parser.add_argument("--test-draws", type=int, default=5)
    parser.add_argument("--budget", type=float, default=360, help="seconds for the sweep stages")
    parser.add_argument("--margin", type=float, default=0.3, help="validation points a change must gain")
    parser.add_argument("--sides", default="16,32", help="grid sides of the validation table (side^d points)")
    parser.add_argument("--test-sides", default="8,16,32", help="grid sides of the final test table")
    parser.add_argument("--cost", action="store_true", help="the cost-aware mode (module docstring)")
    parser.add_argument("--final", action="store_true", help="with --cost: also score the chosen net on the test split")
    parser.add_argument("--cost-steps", type=int, default=3, help="--cost: timed steps per round")
    parser.add_argument("--cost-rounds", type=int, default=3, help="--cost: timed rounds (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.export:
        export(args.export, args.data)
        write_positions(args.export, args.data, args.crops)
        return
    try:
        args.sides, args.test_sides = (tuple(int(v) for v in s.split(",")) for s in (args.sides, args.test_sides))
        json.loads(args.start)
    except ValueError as error:
        _refuse(f"--sides, --test-sides take comma-separated integers and --start a JSON object ({error})")
    if not (args.data / "fields.json").is_file():
        _refuse(f"{args.data} holds no exported store (fields.json); write one with --export STORE --data {args.data}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info, evaluator, train, test = load(args.data, device)
    if args.cost and info["dim"] != 2:
        _refuse(f"--cost times 2-D networks; this store's fields are {info['dim']}-D")
    evaluator = checked_evaluator(evaluator, train, device)
    fit, val = band_cut(train, args.data) if args.cut == "band" else validation_cut(train)
    print(f"{len(fit.rows)} fit / {len(val.rows)} validation / {len(test.rows)} test fields on {device} "
          f"({args.cut} cut)", flush=True)
    best, rows = (cost_sweep if args.cost else sweep)(fit, val, evaluator, info, device, args)
    print("chosen:", json.dumps(best), flush=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "device": _device_name(device), "info": info,
              "chosen": best, "trials": rows}
    if not args.no_final and (args.final or not args.cost):
        result["final"] = final(best, train, test, evaluator, info, device, args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


def checked_evaluator(evaluator, train: Split, device):
    """The evaluator, or the vmapped reference path where the fused forward kernel disagrees with it."""
    if device.type != "cuda":
        return evaluator
    from fieldlab.learn.field_batch import FieldEvaluator
    from fieldlab.learn.points import grid

    reference = FieldEvaluator(evaluator.config, kernel="reference")
    params, points = {k: v[:64] for k, v in train.params.items()}, grid((16, 16)).to(device)
    fused, exact = evaluator(params, points).values, reference(params, points).values
    error = float((fused - exact).norm() / exact.norm())
    print(f"fused forward vs reference: relative error {error:.2e}", flush=True)
    return evaluator if error < 1e-3 else reference


def _refuse(message: str) -> None:
    print(f"dinet_sweep: {message}", file=sys.stderr)
    sys.exit(2)


def _device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


if __name__ == "__main__":
    main()
