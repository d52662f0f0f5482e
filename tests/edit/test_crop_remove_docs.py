"""`crop --remove` says what it leaves: a hole in a field of the same extent, and --keep for a smaller one."""

import re

from fieldlab.cli.main import main


def test_crop_help_says_remove_keeps_the_extent_and_keep_makes_a_smaller_field(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main(["crop", "--help"])
    except SystemExit as e:
        assert e.code in (0, None)
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    assert "keeps its extent" in text and "for a smaller field give --keep" in text
