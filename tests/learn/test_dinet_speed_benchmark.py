"""benchmarks/dinet_speed.py runs end to end at a toy size and reports rates and work against cnn4."""

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "dinet_speed.py"


def test_the_dinet_speed_benchmark_reports_rates_and_flops_against_cnn4_with_a_plain_reference(tmp_path):
    spec = importlib.util.spec_from_file_location("dinet_speed", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    try:  # one thread: a toy step on two threads of a loaded machine spends its time waiting for the other
        bench.main(["--threads", "1", "--sides", "8", "--batch", "1,2", "--steps", "1", "--rounds", "1",
                    "--warmup", "1", "--plain", "--variant", "channels=8,num_basis=4", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    results = json.loads(out.read_text())
    rows = {r["network"]: r for r in results["rows"] if r["batch"] == 2}
    assert set(rows) == {"cnn4 grid", "dinet grid", "dinet rqmc", "dinet rqmc channels=8 num_basis=4",
                         "dinet grid (plain)"}
    assert rows["cnn4 grid"]["ratio_to_cnn4"] == 1.0 and rows["cnn4 grid"]["flop_ratio_to_cnn4"] == 1.0
    # the plain channel mix is the same arithmetic, laid out differently
    assert rows["dinet grid (plain)"]["gflop_per_step"] == rows["dinet grid"]["gflop_per_step"] > 0
    # each network's step time at either batch is its cost per step plus the batch's fields at their cost each
    split = {s["network"]: s for s in results["split"]}
    assert set(split) == set(rows) and split["cnn4 grid"]["large_batch_ratio_to_cnn4"] == 1.0
    for row in results["rows"]:
        cost = split[row["network"]]
        assert abs(cost["ms_per_step"] + row["batch"] * cost["ms_per_field"] - 1e3 / row["steps_per_s"]) < 1e-2
