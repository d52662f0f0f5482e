"""Learning-on-fields benchmark: DI-Net-4 against the grid CNN-4, and the discretization table on digits.

    python benchmarks/learn.py --export STORE --data DIR        # once, where zarr is installed
    python benchmarks/learn.py --data DIR --out results.json    # on the GPU

`--export` writes the store's per-field tensors, labels and field config into DIR/fields.safetensors +
DIR/fields.json, so the GPU run needs neither zarr nor the store. The run reports

1. training throughput (fields/s over timed steps after warm-up: field evaluation at the points, forward,
   backward, AdamW) and peak GPU memory of DI-Net-4 and of the grid CNN-4 (the plain reference, a ratio
   against it) at 1,024 (32²) and 16,384 (128²) points, batch 64;
2. the discretization table: DI-Net-4 trained on grid, QMC, randomized QMC and shrunk points (16² = 256 points), tested on
   grid, qmc, rqmc, random and shrunk at 8², 16² and 32², with the invariance gap (largest drop from the
   training point set to any other at the same resolution); CNN-4 on grids alongside.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import get_config_class  # noqa: E402
from fieldlab.learn.field_batch import FieldEvaluator  # noqa: E402
from fieldlab.learn.abilities import SizedByPoints  # noqa: E402
from fieldlab.learn.nets import net_config  # noqa: E402
from fieldlab.learn.points import PointSampler  # noqa: E402
from fieldlab.fit.schedule import Schedule  # noqa: E402
from fieldlab.learn.train import Split, TrainConfig, accuracy, make_input  # noqa: E402

KINDS = ("grid", "qmc", "rqmc", "random", "shrunk")


def export(store_path: str, data: Path) -> None:
    from safetensors.torch import save_file

    from fieldlab.learn.train import split_rows
    from fieldlab.store.field_store import FieldStore

    store = FieldStore(store_path)
    train_rows, test_rows, how = split_rows(store)
    rows = np.concatenate([train_rows, test_rows])
    tensors = {f"params/{k}": v.contiguous() for k, v in store.read(rows).items()}
    tensors["labels"] = torch.from_numpy(store.column("labels")[rows]).long()
    tensors.update({f"shared/{k}": v.contiguous() for k, v in store.shared().items()})  # functa's network
    data.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(data / "fields.safetensors"))
    (data / "fields.json").write_text(json.dumps({
        "field": store.config.name, "config": store.config.to_dict(), "channels": store.signal.channels,
        "dim": store.signal.in_dim, "shape": list(store.signal.shape), "train": len(train_rows), "test": len(test_rows), "split": how,
        "classes": int(tensors["labels"].max()) + 1, "source": store.attrs.get("source", {})}))
    print(f"exported {len(rows)} fields to {data}")


def load(data: Path, device):
    from safetensors.torch import load_file

    info = json.loads((data / "fields.json").read_text())
    tensors = load_file(str(data / "fields.safetensors"), device=str(device))
    params = {k[len("params/"):]: v for k, v in tensors.items() if k.startswith("params/")}
    labels = tensors["labels"]
    cut = info["train"]
    train = Split(np.arange(cut), {k: v[:cut] for k, v in params.items()}, labels[:cut])
    test = Split(np.arange(cut, len(labels)), {k: v[cut:] for k, v in params.items()}, labels[cut:])
    config = get_config_class(info["field"]).from_dict(info["config"])
    shared = {k[len("shared/"):]: v for k, v in tensors.items() if k.startswith("shared/")}
    return info, FieldEvaluator(config, shared), train, test


def build(name: str, info, num_points: int, device):
    cfg = net_config(name)
    if isinstance(cfg, SizedByPoints):
        cfg = cfg.for_points(num_points, info["dim"])
    torch.manual_seed(0)
    return cfg, cfg.build(info["channels"], info["classes"], info["dim"]).to(device)


def train_steps(cfg, net, evaluator, data: Split, sampler, config: TrainConfig, steps: int, device, sync=True):
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    net.train()
    times = []
    for step in range(steps):
        if sync and device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        g = torch.Generator().manual_seed(step)
        pick = torch.randint(len(data.rows), (config.batch_size,), generator=g).to(device)
        points = sampler(step).to(device)
        x = make_input(cfg, evaluator, {k: v[pick] for k, v in data.params.items()}, points, noise=config.noise,
                       generator=g)
        loss = torch.nn.functional.cross_entropy(net(x), data.labels[pick])
        for group in optimizer.param_groups:
            group["lr"] = Schedule(config.lr, config.steps, "cosine", final=0.0, warmup=config.warmup).lr(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if sync and device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return times, float(loss)


def throughput(info, evaluator, train, device, batch: int, steps: int) -> list[dict]:
    rows = []
    for side in (32, 128):
        n = side * side
        for name, kind in (("cnn4", "grid"), ("dinet4", "grid"), ("dinet4", "qmc")):
            cfg, net = build(name, info, n, device)
            sampler = PointSampler(kind=kind, n=n, dim=info["dim"])
            config = TrainConfig(net=name, batch_size=batch, steps=steps, warmup=1).resolved(info["dim"])
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times, _ = train_steps(cfg, net, evaluator, train, sampler, config, steps, device)
            timed = times[3:]  # the first steps build neighbour lists and warm the allocator
            row = {"net": name, "points": kind, "n": n, "batch": batch,
                   "fields_per_s": round(batch * len(timed) / sum(timed), 1),
                   "ms_per_step": round(1000 * sum(timed) / len(timed), 2),
                   "first_step_ms": round(1000 * times[0], 1),
                   "peak_mib": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.type == "cuda" else None}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def table(info, evaluator, train, test, device, steps: int, sides) -> list[dict]:
    rows = []
    for name, train_kind in (("dinet4", "grid"), ("dinet4", "qmc"), ("dinet4", "rqmc"), ("dinet4", "shrunk"),
                             ("cnn4", "grid")):
        n = 16 ** info["dim"]
        cfg, net = build(name, info, n, device)
        config = TrainConfig(net=name, points=train_kind, num_points=n, steps=steps, batch_size=64)
        config = config.resolved(info["dim"])  # the network's own learning rate, as `train` takes it
        began = time.perf_counter()
        train_steps(cfg, net, evaluator, train, config.sampler(info["dim"]), config, steps, device, sync=False)
        seconds = time.perf_counter() - began
        for side in sides:
            for kind in KINDS if cfg.takes == "points" else ("grid",):
                sampler = PointSampler(kind=kind, n=side ** info["dim"], dim=info["dim"], seed=1)
                acc = accuracy(net, cfg, evaluator, test, sampler)
                row = {"net": name, "train": train_kind, "test": kind, "side": side, "accuracy": round(acc, 4),
                       "train_seconds": round(seconds, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", help="A FieldStore to export into --data (run where zarr is installed).")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15, help="Steps per throughput row (3 untimed).")
    parser.add_argument("--train-steps", type=int, default=600, help="Steps per run of the table.")
    parser.add_argument("--sides", default="8,16,32")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if args.export:
        export(args.export, args.data)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info, evaluator, train, test = load(args.data, device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "data": info}
    if not args.skip_throughput:
        results["throughput"] = throughput(info, evaluator, train, device, args.batch, args.steps)
    if not args.skip_table:
        results["table"] = table(info, evaluator, train, test, device, args.train_steps,
                                 [int(s) for s in args.sides.split(",")])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
