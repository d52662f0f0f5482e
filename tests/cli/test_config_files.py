"""Every command with options takes `--config FILE` and writes its resolved config, which repeats the run;
a config file's unknown key or wrong type is one line, exit 2, and nothing written."""

import json

import pytest

FIT = ["--max-size", "16", "--steps", "3", "--device", "cpu", "--quiet"]
LOCAL_GLOBAL = ["--field", "local-global", "--hidden-dim", "4", "--global-dim", "8", "--partitions", "2,2"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A partitioned field DIR, a store of labelled fields and a finished training run, made once."""
    from fieldlab.cli import main

    root = tmp_path_factory.mktemp("configs")
    runs = [["fit", "sample:camera", *FIT, *LOCAL_GLOBAL, "--out", root / "field"],
            ["fit-dataset", "sample:digits", "--limit", "8", "--steps", "2", "--chunk-fields", "4",
             "--test-fraction", "0.5", "--hidden-dim", "4", "--num-layers", "1", "--device", "cpu", "--quiet",
             "--out", root / "store"],
            ["train", root / "store", "--net", "mlp", "--steps", "2", "--batch-size", "2", "--num-points", "16",
             "--device", "cpu", "--out", root / "run"]]
    for args in runs:
        try:
            main([str(a) for a in args])
        except SystemExit as exit_:
            assert not exit_.code
    return root


def commands(made):
    """(command line without --out, the output it writes, where its resolved config lands) per command."""
    return {
        "fit": (["fit", "sample:camera", *FIT, "--hidden-dim", "8"], "DIR", "DIR/config.json"),
        "fit-dataset": (["fit-dataset", "sample:digits", "--limit", "2", "--steps", "1", "--device", "cpu",
                         "--hidden-dim", "4", "--quiet"], "DIR", "DIR/config.json"),
        "extend": (["extend", made / "field", "sample:camera", "--max-size", "20", "--steps", "2", "--device",
                    "cpu"], "DIR", "DIR/config.json"),
        "crop": (["crop", made / "field", "--keep", "0:8,0:16"], "DIR", "DIR/config.json"),
        "render": (["render", made / "field", "--size", "8", "8"], "DIR/r.png", "DIR/r.png.config.json"),
        "train": (["train", made / "store", "--net", "mlp", "--steps", "1", "--batch-size", "2", "--num-points",
                   "16", "--device", "cpu", "--hidden", "8"], "DIR", "DIR/config.json"),
        "train-sdf": (["train-sdf", "--scenes", "5", "--steps", "1", "--batch-size", "2", "--num-points", "27",
                       "--num-queries", "8", "--device", "cpu", "--channels", "4"], "DIR", "DIR/config.json"),
        "eval": (["eval", made / "run", made / "store", "--points", "grid", "--resolutions", "4", "--draws", "1",
                  "--device", "cpu"], "DIR", "DIR/eval.config.json"),
    }


def _paths(tmp_path, name, out, config):
    folder = tmp_path / name
    if "/" in out:
        folder.mkdir()
    return folder.parent / out.replace("DIR", folder.name), folder.parent / config.replace("DIR", folder.name)


@pytest.mark.parametrize("command", ["fit", "fit-dataset", "extend", "crop", "render", "train", "train-sdf", "eval"])
def test_a_resolved_config_given_back_repeats_the_run(cli, made, tmp_path, command):
    args, out, written = commands(made)[command]
    first, first_config = _paths(tmp_path, "a", out, written)
    status, _, err = cli([*args, "--out", first])
    assert status == 0, err
    resolved = json.loads(first_config.read_text())
    again, again_config = _paths(tmp_path, "b", out, written)
    status, _, err = cli([command, "--config", first_config, "--out", again])
    assert status == 0, err
    assert json.loads(again_config.read_text()) == resolved


@pytest.mark.parametrize("command", ["fit", "fit-dataset", "extend", "crop", "render", "train", "train-sdf", "eval"])
@pytest.mark.parametrize("content, message", [({"bogus_option": 1}, "bogus"),
                                               ({"device": 5}, "--device expects str")])
def test_a_config_files_unknown_key_or_wrong_type_is_one_line(cli, made, tmp_path, command, content, message):
    args, out, _ = commands(made)[command]
    if command == "crop" and "device" in content:  # crop runs nowhere: its string option instead
        content, message = {"keep": 5}, "--keep expects str"
    config = tmp_path / "options.json"
    config.write_text(json.dumps(content))
    target, _ = _paths(tmp_path, "out", out, "DIR")
    status, _, err = cli([*args, "--config", config, "--out", target])
    assert status == 2 and err.startswith("fieldlab: error:") and err.count("\n") == 1, err
    assert message in err and not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["options.json"] + (["out"] if "/" in out else []))


def test_explicit_flags_override_a_config_files_values(cli, made, tmp_path):
    config = tmp_path / "options.toml"
    config.write_text('size = "4,4"\ndevice = "cpu"\n')
    status, _, err = cli(["render", made / "field", "--config", config, "--size", "6", "6", "--out", tmp_path / "r.png"])
    assert status == 0, err
    assert json.loads((tmp_path / "r.png.config.json").read_text()) == \
        {"dir": str(made / "field"), "size": "6,6", "region": None, "device": "cpu"}


def test_a_config_files_unknown_keys_are_named_in_one_line(cli, made, tmp_path):
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"sise": 4, "regoin": "0:4", "device": "cpu"}))
    status, _, err = cli(["render", made / "field", "--config", config, "--out", tmp_path / "r.png"])
    assert status == 2 and err.count("\n") == 1
    assert "does not take: --regoin, --sise" in err and not (tmp_path / "r.png").exists()


def test_every_generated_option_shows_its_dataclass_default_in_help(cli):
    status, out, _ = cli(["fit-dataset", "--help"])
    assert status == 0
    assert "(default 500)" in " ".join(out.split()) and "--cuda-graphs" in out


def test_every_generated_option_has_its_dataclass_docstring_as_help():
    from fieldlab.cli import app, register_all

    register_all()
    commands = [c for c in app.registered_commands if hasattr(c.callback, "generated")]
    assert {c.name for c in commands} >= {"fit", "fit-dataset", "extend", "crop", "render", "train", "train-sdf",
                                          "eval"}
    for command in commands:
        undocumented = [name for name, option in command.callback.generated.items() if not option.help]
        assert not undocumented, f"{command.name}: {undocumented} need an attribute docstring in their dataclass"


def test_a_resolved_config_never_writes_through_a_link(tmp_path):
    """render writes OUT.config.json beside its output: a link of that name had its target overwritten."""
    from fieldlab.cli._dataclass_options import write_resolved

    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / "s.png.config.json").symlink_to(victim)
    write_resolved(tmp_path / "s.png.config.json", {"size": [8, 8]})
    assert victim.read_text() == "mine" and not (tmp_path / "s.png.config.json").is_symlink()
