"""fieldlab.distributed is the one module that asks about other processes (the gloo/torchrun runs themselves
are tested where they matter: tests/fit/test_meta.py, tests/learn/test_train.py, tests/cli/test_dataset_cli.py)."""

import ast
from pathlib import Path

import torch

from fieldlab import distributed

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fieldlab"


def _asks_about_other_processes(path: Path) -> list[int]:
    """Lines of `path` importing torch.distributed or naming a torchrun variable (WORLD_SIZE, RANK, …)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and node.value in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            names = ["torch.distributed"]
        else:
            continue
        if any(name.startswith("torch.distributed") for name in names):
            lines.append(node.lineno)
    return lines


def test_no_module_but_distributed_talks_to_torch_distributed_or_reads_torchrun_variables():
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             if path.name != "distributed.py" for line in _asks_about_other_processes(path)]
    assert not found, "\n".join(found)
    assert _asks_about_other_processes(PACKAGE / "distributed.py")  # the reader finds what it looks for


def test_alone_everything_is_one_process_of_one(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    distributed.init("auto")  # a no-op without torchrun
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard([1, 2, 3]) == [1, 2, 3] and distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.all_ok(False) is False and distributed.device_for("auto") == "auto"
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    distributed.sum_over_ranks(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(2))


def test_before_joining_only_rank_0_of_a_launch_is_main(monkeypatch):
    """Output locks are taken before the process group exists: the launch's RANK decides."""
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()
    monkeypatch.setenv("RANK", "0")
    assert distributed.is_main()


def test_a_resolved_gpu_becomes_this_ranks_own(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.device_for(torch.device("cuda")) == torch.device("cuda", 3)
    assert distributed.device_for(torch.device("cpu")) == torch.device("cpu")
