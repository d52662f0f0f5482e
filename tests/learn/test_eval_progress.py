from fieldlab import _progress
from fieldlab.learn.evaluate import evaluate
from fieldlab.learn.train import TrainConfig, train


def test_eval_shows_a_bar_over_its_scorings_that_advances(monkeypatch, capsys, blob_store, tmp_path):
    monkeypatch.setattr(_progress, "MININTERVAL", 0)  # every advance redraws, so stderr shows each
    run = tmp_path / "run"
    train(blob_store, run, TrainConfig(net="dinet2", steps=5, num_points=64, batch_size=32,
                                       net_options={"channels": 8}), progress=lambda *_: None)
    capsys.readouterr()
    rows = evaluate(run, blob_store, points=["grid", "rqmc"], resolutions=[8], draws=2, progress=True)
    err = capsys.readouterr().err
    assert err.count("scoring 32 test fields:") > 2 and "3/3" in err  # grid once, rqmc twice
    assert [r["draws"] for r in rows] == [1, 2]
