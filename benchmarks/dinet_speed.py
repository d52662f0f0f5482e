"""DI-Net train-step throughput against the grid CNN-4 at equal points, same batch, same device, same run.

    python benchmarks/dinet_speed.py                      # CPU, 16² and 32² points, batch 64
    python benchmarks/dinet_speed.py --device cuda --out dinet_speed.json

A step is what `train` does after sampling: forward, cross-entropy, backward and AdamW, on a batch of fields
already evaluated at the step's points. Field evaluation is left out: at equal points it costs both networks
the same, so leaving it out makes the ratio the networks' own. The fields are smooth random images (a few
random sinusoids per field, evaluated at the points in memory), so nothing is read from disk and no optional
dependency is needed.

Rows: `cnn4` on the grid; `dinet` on the grid (a fixed set: its neighbourhoods are built once and reused
every step) and on RQMC points (the training default: a new set each step, so its neighbourhoods are built
once per step, shared by the batch). Networks run in turn round by round, so a load that comes and goes on
the machine hits all of them; the median round is reported. `--threads` pins torch's CPU threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.learn.layers import Discretized  # noqa: E402
from fieldlab.learn.abilities import SizedByPoints  # noqa: E402
from fieldlab.learn.nets import net_config  # noqa: E402
from fieldlab.learn.points import PointSampler  # noqa: E402

CLASSES = 10


def fields_at(points, batch: int, seed: int) -> torch.Tensor:
    """(batch, n, 1) smooth random fields at the points: four sinusoids per field."""
    g = torch.Generator().manual_seed(seed)
    freq = 3 * torch.randn(batch, 4, points.dim, generator=g).to(points.coords.device)
    phase = 6.3 * torch.rand(batch, 4, 1, generator=g).to(points.coords.device)
    waves = torch.sin(torch.einsum("bkd,nd->bkn", freq, points.coords) + phase)  # (b, 4, n)
    return waves.mean(1)[..., None]


class Runner:
    """One network, its optimizer and its point sampler; `step(i)` runs train step i."""

    def __init__(self, net: str, kind: str, side: int, batch: int, device: torch.device, **options):
        n = side * side
        cfg = net_config(net, **options)
        if isinstance(cfg, SizedByPoints):
            cfg = cfg.for_points(n, 2)
        torch.manual_seed(0)
        self.model = cfg.build(1, CLASSES, 2).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.sampler = PointSampler(kind=kind, n=n, dim=2)
        self.batch, self.device = batch, device
        self.name = f"{net} {kind}" + "".join(f" {k}={v}" for k, v in options.items())

    def step(self, i: int) -> None:
        points = self.sampler(i).to(self.device)
        x = Discretized(fields_at(points, self.batch, i), points)
        labels = torch.arange(self.batch, device=self.device) % CLASSES
        loss = torch.nn.functional.cross_entropy(self.model(x), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(runners: list[Runner], steps: int, rounds: int, warmup: int) -> dict[str, float]:
    """Median steps/s of each runner over `rounds` rounds of `steps` steps, runners taking turns."""
    device = runners[0].device
    for r in runners:
        for i in range(warmup):
            r.step(i)
    sync(device)
    rates: dict[str, list[float]] = {r.name: [] for r in runners}
    for k in range(rounds):
        for r in runners:
            begin = time.perf_counter()
            for i in range(steps):
                r.step(warmup + k * steps + i)
            sync(device)
            rates[r.name].append(steps / (time.perf_counter() - begin))
    return {name: statistics.median(v) for name, v in rates.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sides", default="16,32", help="grid sides: side² points for every network")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--num-basis", type=int, default=0,
                        help="also time DI-Net on RQMC with this many basis functions (its default is 16)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__, "batch": args.batch,
               "rows": []}
    print(f"{results['device']}, torch {torch.__version__}, batch {args.batch}")
    print(f"{'points':>8}  {'network':<26} {'steps/s':>8} {'samples/s':>10} {'× cnn4':>7}")
    for side in (int(s) for s in args.sides.split(",")):
        runners = [Runner("cnn4", "grid", side, args.batch, device), Runner("dinet", "grid", side, args.batch, device),
                   Runner("dinet", "rqmc", side, args.batch, device)]
        if args.num_basis:
            runners.append(Runner("dinet", "rqmc", side, args.batch, device, num_basis=args.num_basis))
        rates = measure(runners, args.steps, args.rounds, args.warmup)
        base = rates["cnn4 grid"]
        for name, rate in rates.items():
            row = {"points": side * side, "network": name, "steps_per_s": round(rate, 3),
                   "samples_per_s": round(rate * args.batch, 1), "ratio_to_cnn4": round(rate / base, 3)}
            results["rows"].append(row)
            print(f"{side}²={side * side:<5} {name:<26} {rate:8.2f} {rate * args.batch:10.1f} {rate / base:7.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
