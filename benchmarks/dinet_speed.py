"""DI-Net train-step throughput against the grid CNN-4 at equal points, same batch, same device, same run.

    python benchmarks/dinet_speed.py                      # CPU, 16² and 32² points, batch 64
    python benchmarks/dinet_speed.py --device cuda --out dinet_speed.json
    python benchmarks/dinet_speed.py --batch 1,64          # also each step's cost per step and per field

A step is what `train` does after sampling: forward, cross-entropy, backward and AdamW (fieldlab's Adam with
decoupled decay, as `train`), on a batch of fields already evaluated at the step's points. Field evaluation is
left out: at equal points it costs both networks the same, so leaving it out makes the ratio the networks' own.
The fields are smooth random images (a few random sinusoids per field, evaluated at the points in memory), so
nothing is read from disk and no optional dependency is needed.

Rows: `cnn4` on the grid; `dinet` on the grid (a fixed set: its neighbourhoods are built once and reused
every step) and on RQMC points (the training default: a new set each step, so its neighbourhoods are built
once per step, shared by the batch). Networks run in turn round by round, so a load that comes and goes on
the machine hits all of them; the median round is reported. `--threads` pins torch's CPU threads.
`--plain` adds `dinet grid` with the channel mix written the plain way (a per-query bmm against an expanded
weight, as before issue 20's fast path), so a before/after ratio comes from the same run; `--plain-norm` adds
`dinet rqmc` with its norms written as autograd's expression and a separate ReLU; `--no-blocks` adds
DI-Net with its neighbourhood sums over the whole matrix instead of block by block (`_aggregate.BLOCKS`);
`--graphs` (CUDA) adds every network with its steps replayed from CUDA graphs, as `train` runs them there
(`learn.graphed.GraphedTraining`), beside the eager rows of the same run. On a CPU the process keeps freed blocks
for the next step, as `train` does (`fieldlab._memory`); `--glibc-defaults` leaves glibc's allocator as it is (a
whole-process setting: compare two runs). Each row gives its page faults per step.

Each row also gives the step's floating-point work (GFLOP per step, forward and backward, counted by
torch.utils.flop_counter on one step: dense matmuls and convolutions; the sparse CSR products of
neighbourhoods too sparse for a dense sum, e.g. the first layer at 32², are not counted) and its ratio to
cnn4's: steps/s can only come near cnn4's where the work does, and a loaded machine changes the rates but not
the work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fieldlab  # noqa: E402, F401  before torch, as the program: it turns on torch's huge pages (THP_MEM_ALLOC_ENABLE)
import torch  # noqa: E402

from fieldlab._memory import keep_freed_blocks  # noqa: E402
from fieldlab._optim import Adam  # noqa: E402
from fieldlab.learn import _aggregate, layers  # noqa: E402
from fieldlab.learn.layers import Discretized  # noqa: E402
from fieldlab.learn.abilities import SizedByPoints  # noqa: E402
from fieldlab.learn.graphed import GraphedTraining  # noqa: E402
from fieldlab.learn.nets import net_config  # noqa: E402
from fieldlab.learn.points import PointSampler  # noqa: E402
from fieldlab.learn.train import TrainConfig  # noqa: E402

CLASSES = 10


def fields_at(points, batch: int, seed: int) -> torch.Tensor:
    """(batch, n, 1) smooth random fields at the points: four sinusoids per field."""
    g = torch.Generator().manual_seed(seed)
    freq = 3 * torch.randn(batch, 4, points.dim, generator=g).to(points.coords.device)
    phase = 6.3 * torch.rand(batch, 4, 1, generator=g).to(points.coords.device)
    waves = torch.sin(torch.einsum("bkd,nd->bkn", freq, points.coords) + phase)  # (b, 4, n)
    return waves.mean(1)[..., None]


FAST_FORWARD = layers.DIConv.forward


def plain_conv_forward(self, x, out_points=None):
    """DIConv.forward as it was before the one-GEMM channel mix (a reference for `--plain`, not the library's);
    a depthwise layer (a separable network's) has no such mix and runs as it is."""
    if self.groups > 1:
        return FAST_FORWARD(self, x, out_points)
    points = x.points
    queries = out_points if out_points is not None else points.downsample(self.stride)
    found = layers.neighbourhood(queries, points, self.support)
    basis = self._basis(found, queries)
    b, n, c = x.values.shape
    m, h = len(queries), basis.shape[1]
    acc = found.plan.sum_rows(basis, x.values.permute(1, 2, 0).reshape(n, c * b))  # (m, h, c_in·b)
    weight = self.weight.permute(0, 2, 1).reshape(-1, h * c)
    out = torch.bmm(weight.expand(m, -1, -1), acc.view(m, h * c, b)).permute(2, 0, 1)
    if self.normalization == "mean":
        out = out / found.mass.clamp_min(1e-12)[:, None]
    if self.bias is not None:
        out = out + self.bias
    return Discretized(out, queries)


FAST_NORM = layers.DINorm.forward


def plain_norm_forward(self, x):
    """DINorm.forward (batch mode, training) as autograd's expression and a separate ReLU: a reference for
    `--plain-norm`, not the library's (`_WeightedNorm` with its ReLU in the same passes)."""
    if not self.training or self.mode != "batch":
        return FAST_NORM(self, x)
    v = x.values
    w = x.points.share()[:, None] / v.shape[0]
    mean = (w * v).sum((0, 1), keepdim=True)
    var = (w * (v - mean).square()).sum((0, 1), keepdim=True)
    out = (v - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
    count = v.shape[0] * v.shape[1]
    with torch.no_grad():
        self.running_mean.lerp_(mean.reshape(-1), self.momentum)
        self.running_var.lerp_(var.reshape(-1) * (count / max(count - 1, 1)), self.momentum)
    return x.with_values(torch.relu(out) if self.relu else out)


def _dense_addmm_flop(bias, a, b, *args, out_val=None, **kwargs) -> int:
    """addmm's FLOPs as torch's counter counts them, but none for a sparse matrix (`_aggregate._spmm` writes its
    CSR products through addmm): the counter would take it for a dense one of its shape."""
    from torch.utils.flop_counter import mm_flop

    return 0 if a.layout != torch.strided else mm_flop(a.shape, b.shape)


_dense_addmm_flop._get_raw = True  # the counter passes the tensors, not their shapes


class Runner:
    """One network, its optimizer and its point sampler; `step(i)` runs train step i."""

    def __init__(self, net: str, kind: str, side: int, batch: int, device: torch.device, plain: bool = False, *,
                 in_channels: int = 1, classes: int = CLASSES, blocks: bool = True, graphed: bool = False,
                 plain_norm: bool = False, **options):
        n = side * side
        cfg = net_config(net, **options)
        if isinstance(cfg, SizedByPoints):
            cfg = cfg.for_points(n, 2)
        torch.manual_seed(0)
        self.model = cfg.build(in_channels, classes, 2).to(device)
        self.in_channels, self.classes = in_channels, classes
        self.optimizer = Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-2)  # as train steps
        mix = tuple(TrainConfig.mix.split(","))  # a mixed set draws what `train` draws: its --mix
        self.sampler = PointSampler(kind=kind, n=n, dim=2, mix=mix)
        self.batch, self.device = batch, device
        self.name = (f"{net} {kind}" + "".join(f" {k}={v}" for k, v in options.items()) + (" (plain)" if plain else "")
                     + ("" if blocks else " (no blocks)") + (" (graphed)" if graphed else "")
                     + (" (plain norm)" if plain_norm else ""))
        self.plain, self.blocks, self.plain_norm = plain, blocks, plain_norm
        self.call = GraphedTraining(self.model) if graphed else self.model

    def step(self, i: int) -> None:
        fast, blocks, norm = layers.DIConv.forward, _aggregate.BLOCKS, layers.DINorm.forward
        if self.plain:
            layers.DIConv.forward = plain_conv_forward
        if self.plain_norm:
            layers.DINorm.forward = plain_norm_forward
        _aggregate.BLOCKS = self.blocks
        try:
            self._step(i)
        finally:
            layers.DIConv.forward, _aggregate.BLOCKS, layers.DINorm.forward = fast, blocks, norm

    def gflop(self, i: int) -> float:
        """Floating-point work of train step i (matmuls and convolutions, forward and backward), in GFLOP."""
        from torch.utils.flop_counter import FlopCounterMode

        call, self.call = self.call, self.model  # eager: a graph's replay runs no operator the counter sees
        try:
            with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm: _dense_addmm_flop}) as counter:
                self.step(i)
        finally:
            self.call = call
        return counter.get_total_flops() / 1e9

    def _step(self, i: int) -> None:
        points = self.sampler(i).to(self.device)
        x = Discretized(fields_at(points, self.batch, i).repeat(1, 1, self.in_channels), points)
        labels = torch.arange(self.batch, device=self.device) % self.classes
        self.call.train()
        loss = torch.nn.functional.cross_entropy(self.call(x), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(runners: list[Runner], steps: int, rounds: int, warmup: int) -> tuple[dict[str, float], ...]:
    """(median steps/s, GFLOP per step, page faults per timed step (the process's minor faults)) of each runner
    by name, over `rounds` rounds of `steps` steps, runners taking turns."""
    import resource

    device = runners[0].device
    for r in runners:
        for i in range(warmup):
            r.step(i)
        r.work = r.gflop(warmup)  # after the warm-up, so a fixed set's neighbourhoods are already built
    sync(device)
    rates: dict[str, list[float]] = {r.name: [] for r in runners}
    for r in runners:
        r.faults = 0.0
    for k in range(rounds):
        for r in runners:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            begin = time.perf_counter()
            for i in range(steps):
                r.step(warmup + 1 + k * steps + i)
            sync(device)
            rates[r.name].append(steps / (time.perf_counter() - begin))
            r.faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (rounds * steps)
    return ({name: statistics.median(v) for name, v in rates.items()}, {r.name: r.work for r in runners},
            {r.name: r.faults for r in runners})


def _runners(args, side: int, batch: int, device: torch.device) -> list[Runner]:
    runners = [Runner("cnn4", "grid", side, batch, device), Runner("dinet", "grid", side, batch, device),
               Runner("dinet", "rqmc", side, batch, device)]
    if args.num_basis:
        runners.append(Runner("dinet", "rqmc", side, batch, device, num_basis=args.num_basis))
    for variant in args.variant:
        options = dict(item.split("=", 1) for item in variant.split(","))
        runners.append(Runner("dinet", "rqmc", side, batch, device, **options))
    if args.plain:
        runners.append(Runner("dinet", "grid", side, batch, device, plain=True))
    if args.plain_norm:
        runners.append(Runner("dinet", "rqmc", side, batch, device, plain_norm=True))
    if args.graphs:
        runners += [Runner(net, kind, side, batch, device, graphed=True)
                    for net, kind in (("cnn4", "grid"), ("dinet", "grid"), ("dinet", "rqmc"), ("dinet", "mixed"))]
        runners.append(Runner("dinet", "mixed", side, batch, device))
    if args.no_blocks:
        runners += [Runner("dinet", kind, side, batch, device, blocks=False) for kind in ("grid", "rqmc")]
    return runners


def per_field_split(rows: list[dict], small: int, large: int) -> list[dict]:
    """Each network's step time at two batch sizes split into a cost per step that the batch does not change
    (point sets, kernels, launches, the optimizer) and a cost per field (the line through the two times), with
    the ratio to cnn4 that large batches tend to: cnn4's cost per field over the network's (a graphed row against
    cnn4 graphed). A network whose cost per field is over twice cnn4's cannot reach 0.5× cnn4 at any batch,
    whatever its per-step costs."""
    ms = {(r["points"], r["network"], r["batch"]): 1e3 / r["steps_per_s"] for r in rows}
    split = []
    for points, name in dict.fromkeys((r["points"], r["network"]) for r in rows):
        if (points, name, small) not in ms or (points, name, large) not in ms:
            continue
        per_field = (ms[points, name, large] - ms[points, name, small]) / (large - small)
        split.append({"points": points, "network": name, "ms_per_field": round(per_field, 4),
                      "ms_per_step": round(ms[points, name, small] - small * per_field, 3)})
    base = {(s["points"], s["network"]): s["ms_per_field"] for s in split}
    for s in split:  # a graphed row against cnn4 graphed, as the rows above
        like = "cnn4 grid (graphed)" if s["network"].endswith("(graphed)") else "cnn4 grid"
        per_field = s["ms_per_field"]
        s["large_batch_ratio_to_cnn4"] = round(base[s["points"], like] / per_field, 3) if per_field > 0 else None
    return split


def _print_split(split: list[dict], small: int, large: int) -> None:
    print(f"\nper step and per field, from batches {small} and {large}:")
    print(f"{'points':>8}  {'network':<40} {'ms/step':>8} {'ms/field':>9} {'× cnn4 at large batches':>24}")
    for s in split:
        ratio = s["large_batch_ratio_to_cnn4"]
        print(f"{s['points']:>8}  {s['network']:<40} {s['ms_per_step']:8.2f} {s['ms_per_field']:9.3f} "
              f"{'–' if ratio is None else f'{ratio:.2f}':>24}")


def _batches(text: str) -> str:
    """--batch: positive integers separated by commas (argparse reports anything else in one line)."""
    if not all(part.strip().isdigit() and int(part) > 0 for part in text.split(",")):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sides", default="16,32", help="grid sides: side² points for every network")
    parser.add_argument("--batch", default="64", type=_batches,
                        help="fields per step; several (e.g. 1,64) also split each step's time into a cost per step "
                             "and a cost per field")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--num-basis", type=int, default=0,
                        help="also time DI-Net on RQMC with this many basis functions (its default is 16)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE,...",
                        help="also time DI-Net on RQMC with these options (e.g. channels=32,num_basis=8); repeatable")
    parser.add_argument("--plain", action="store_true",
                        help="also time DI-Net on the grid with the plain (per-query bmm) channel mix")
    parser.add_argument("--plain-norm", action="store_true",
                        help="also time DI-Net on RQMC with its norms as autograd's expression and a separate ReLU")
    parser.add_argument("--no-blocks", action="store_true",
                        help="also time DI-Net on the grid and on RQMC with its sums over the whole (dense or "
                             "sparse) matrix instead of block by block")
    parser.add_argument("--graphs", action="store_true",
                        help="also time every network with its steps replayed from CUDA graphs (CUDA only)")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="CPU: leave glibc's allocator as it is (train keeps freed blocks: fieldlab._memory); "
                             "a whole-process setting, so compare two runs")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu" and not args.glibc_defaults:
        keep_freed_blocks()  # as `train` runs on a CPU, for every network alike
    batches = [int(b) for b in args.batch.split(",")]  # checked by `_batches`
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__, "batches": batches,
               "rows": [], "split": []}
    print(f"{results['device']}, torch {torch.__version__}, batch {args.batch}")
    print(f"{'points':>8}  {'batch':>5}  {'network':<40} {'steps/s':>8} {'samples/s':>10} {'× cnn4':>7} "
          f"{'GFLOP/step':>11} {'FLOP × cnn4':>11} {'faults/step':>11}")
    for side in (int(s) for s in args.sides.split(",")):
        for batch in batches:
            rates, work, faults = measure(_runners(args, side, batch, device), args.steps, args.rounds, args.warmup)
            base, base_work = rates["cnn4 grid"], work["cnn4 grid"]
            graphed_base = rates.get("cnn4 grid (graphed)")
            for name, rate in rates.items():
                row = {"points": side * side, "batch": batch, "network": name, "steps_per_s": round(rate, 3),
                       "samples_per_s": round(rate * batch, 1), "ratio_to_cnn4": round(rate / base, 3),
                       "gflop_per_step": round(work[name], 2), "flop_ratio_to_cnn4": round(work[name] / base_work, 2),
                       "page_faults_per_step": round(faults[name])}
                like = ""  # a graphed row against cnn4 graphed too: both as `train` runs them on CUDA
                if graphed_base and name.endswith("(graphed)"):
                    row["ratio_to_cnn4_graphed"] = round(rate / graphed_base, 3)
                    like = f"  ({rate / graphed_base:.2f} × cnn4 graphed)"
                results["rows"].append(row)
                print(f"{side}²={side * side:<5} {batch:5d}  {name:<40} {rate:8.2f} {rate * batch:10.1f} "
                      f"{rate / base:7.2f} {work[name]:11.2f} {work[name] / base_work:11.2f} "
                      f"{faults[name]:11.0f}{like}")
    if len(batches) > 1:
        results["split"] = per_field_split(results["rows"], min(batches), max(batches))
        _print_split(results["split"], min(batches), max(batches))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
