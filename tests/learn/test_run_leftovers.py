"""A run folder that a kill left holding only its config.json (killed before the first checkpoint) is
completed by --resume, from step 0."""

import json

from fieldlab._safety import MARKER
from fieldlab.learn.train import TrainConfig, train


def test_a_run_folder_holding_only_config_json_is_completed_by_resume(blob_store, tmp_path):
    config = TrainConfig(net="dinet2", steps=4, num_points=64, batch_size=32, log_every=1000,
                         net_options={"channels": 8})
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text('{"kind": "run", "version": 1}\n')
    (run / "config.json").write_text(json.dumps({"store": str(blob_store), **config.to_dict()}))
    metrics = train(blob_store, run, config, resume=True)
    assert json.loads((run / "run.json").read_text())["metrics"]["steps"] == 4 == metrics["steps"]
    assert (run / "net.safetensors").is_file()
