"""The one learn loop (`fieldlab.learn.loop`) driven by a task written in a few lines, as a new kind of learning
would be: steps, checkpoints, resume, the time limit and the log come from the loop."""

import json

import pytest
import torch
import torch.nn as nn

from fieldlab import _deadline
from fieldlab._errors import UserError
from fieldlab.learn.loop import LoopOptions, train_loop
from fieldlab.learn.task import Metric, Task


class MeanTask(Task):
    """Regress the mean of 2-D points drawn per step: a task is its batch, loss and score."""

    metric = Metric("mae", "test_mae", higher_is_better=False)

    def loss(self, model, step):
        x = torch.randn(8, 2, generator=torch.Generator().manual_seed(step))
        return nn.functional.mse_loss(model(x)[:, 0], x.mean(1))

    def score(self, net, sampler):
        x = torch.randn(32, 2, generator=torch.Generator().manual_seed(10_000))
        with torch.no_grad():
            return float((net(x)[:, 0] - x.mean(1)).abs().mean())


OPTIONS = LoopOptions(steps=6, lr=1e-2, weight_decay=0.0, warmup=2, print_every=1, record_every=1,
                      checkpoint_steps=2, identity="mean")


def trained(run, **options):
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    done = train_loop(MeanTask(), net, options.pop("options", OPTIONS), device=torch.device("cpu"), run=run,
                      progress=lambda line: None, **options)
    return net, done


def test_a_task_of_one_class_trains_on_the_loop_and_resumes_to_the_uninterrupted_network(tmp_path):
    whole, done = trained(tmp_path / "A", log_file=True)
    assert done.steps == 6 and MeanTask().score(whole, None) < MeanTask().score(nn.Linear(2, 1), None)
    assert [json.loads(line)["step"] for line in (tmp_path / "A" / "log.jsonl").read_text().splitlines()] == list(
        range(1, 7))
    _, stopped = trained(tmp_path / "B", stop_at=3)
    assert stopped.steps == 3 and (tmp_path / "B" / "checkpoint.pt").is_file()
    resumed, done = trained(tmp_path / "B", resume=True)
    assert done.steps == 6
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_a_checkpoint_of_a_run_with_other_options_is_refused_on_resume(tmp_path):
    trained(tmp_path / "A", stop_at=2)
    import dataclasses

    with pytest.raises(UserError, match="other options"):
        trained(tmp_path / "A", resume=True, options=dataclasses.replace(OPTIONS, identity="another"))


def test_a_resume_reads_the_checkpoint_once(tmp_path, monkeypatch):
    trained(tmp_path / "A", stop_at=2)
    reads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: reads.append(args[0]) or load(*args, **kwargs))
    _, done = trained(tmp_path / "A", resume=True)
    assert done.steps == 6 and reads == [tmp_path / "A" / "checkpoint.pt"]


def test_the_time_limit_stops_the_loop_after_a_step_with_a_checkpoint_to_resume(tmp_path):
    with _deadline.limit(1e-9) as deadline:
        _, done = trained(tmp_path / "A")
    assert done.steps == 1 and deadline.cuts and (tmp_path / "A" / "checkpoint.pt").is_file()


def test_every_task_names_its_metric_as_eval_reports_it():
    from fieldlab.learn._eval_report import TrainingCell, add_drops, summarize
    from fieldlab.learn.sdf import SDFTask
    from fieldlab.learn.store_tasks import ClassifyTask, SegmentTask

    for task, name in ((ClassifyTask, "accuracy"), (SegmentTask, "miou"), (SDFTask, "sdf_mae")):
        assert task.metric.name == name
        cell = TrainingCell("grid", 4, 16, 2, "a", True, task.metric)
        rows = [{"store": "a", "field": "", "train": "grid@16", "test": "grid", "resolution": 4, "points": 16,
                 "accuracy": 0.5, "metric": name, "draws": 1}]
        add_drops(rows, cell)
        summary = summarize(rows, cell)
        assert summary["metric"] == name and summary["lower_is_better"] == (not task.metric.higher_is_better)
