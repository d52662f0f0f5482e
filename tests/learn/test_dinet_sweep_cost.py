"""benchmarks/dinet_sweep.py --cost: the rule that keeps a cheaper DI-Net, and the cost it measures."""

import argparse
import sys

import pytest
import torch


def _args(**kw):
    base = {"steps": 300, "start": "{}", "stages": "", "margin": 0.3, "out": None, "num_points": 64, "batch": 2,
            "cost_steps": 1, "cost_rounds": 1}
    return argparse.Namespace(**{**base, **kw})


def test_a_cheaper_network_is_kept_only_within_the_margin_of_the_defaults_score(sweep, monkeypatch):
    # fake trials: each option's score and work, so the rule alone decides
    def fake(options, *_):
        score = {48: 90.0, 32: 89.8, 24: 89.6, 16: 80.0}[options["channels"]] - {16: 0, 8: 0.05, 4: 5}[options["num_basis"]]
        score -= {32.0: 0, 24.0: 0, 16.0: 0}[options["neighbours"]]
        gflop = options["channels"] ** 2 * (options["num_basis"] + 1) / 1000 + options["neighbours"] / 100
        return {"options": options, "score": score, "gflop": gflop}

    monkeypatch.setattr(sweep, "costed_trial", fake)
    start = '{"channels": 48, "num_basis": 16, "neighbours": 32.0}'
    chosen, rows = sweep.cost_sweep(None, None, None, {"dim": 2}, None, _args(start=start))
    assert rows[0]["floor"] == 89.7  # the run records the rule's threshold
    # channels 32 passes (89.8 ≥ 89.7), 24 fails (89.6): the stage stops there and 16 is never tried
    assert [r["options"]["channels"] for r in rows if r.get("stage") == "channels"] == [32, 24]
    # num_basis 8 on 32 channels scores 89.75, just above the floor of the *defaults'* score − margin: kept
    basis = [r for r in rows if r.get("stage") == "basis"]
    assert [(r["options"]["num_basis"], r["kept"]) for r in basis] == [(8, True), (4, False)]
    assert chosen["channels"] == 32 and chosen["num_basis"] == 8
    # neighbours cost nothing in score here, so the least work wins
    assert chosen["neighbours"] == 16.0


def test_a_candidate_that_does_more_work_is_not_kept_even_when_it_scores_higher(sweep, monkeypatch):
    monkeypatch.setattr(sweep, "COST_STAGES", [("channels", [{"channels": 64}])])
    monkeypatch.setattr(sweep, "costed_trial",
                        lambda options, *_: {"options": options, "score": 99.0 if options["channels"] == 64 else 90.0,
                                             "gflop": options["channels"] / 10})
    chosen, rows = sweep.cost_sweep(None, None, None, {"dim": 2}, None, _args(start='{"channels": 48}'))
    assert chosen == sweep.library_defaults(2) | {"steps": 300, "channels": 48} and rows[-1]["kept"] is False


def test_the_cost_of_a_trial_is_measured_against_cnn4_on_the_stores_channels(sweep):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = sweep.library_defaults(2) | {"channels": 4, "num_basis": 2}
        row = sweep.cost(options, {"channels": 3, "classes": 5, "dim": 2}, torch.device("cpu"), _args())
    finally:
        torch.set_num_threads(threads)
    assert row["steps_per_s"] > 0 and row["cnn4_steps_per_s"] > 0 and row["gflop"] > 0
    # a 4-channel DI-Net does less work than cnn4's 32 channels
    assert row["flop_ratio_to_cnn4"] < 1


def test_bad_sweep_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, sweep):
    monkeypatch.setattr(sys, "argv", ["dinet_sweep.py", "--data", str(tmp_path / "none"), "--cost"])
    with pytest.raises(SystemExit) as stop:
        sweep.main()
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (tmp_path / "none").exists()
