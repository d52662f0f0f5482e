"""`crop --remove` says what it leaves: a hole in a field of the same extent, and --keep for a smaller one."""

import re

from fieldlab.cli.main import main


def _crop_help(capsys, monkeypatch) -> str:
    """`fieldlab crop --help` as one line of words (the box drawing removed)."""
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main(["crop", "--help"])
    except SystemExit as e:
        assert e.code in (0, None)
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())


def test_crop_help_says_remove_keeps_the_extent_and_keep_makes_a_smaller_field(capsys, monkeypatch):
    text = _crop_help(capsys, monkeypatch)
    assert "keeps its extent" in text and "for a smaller field give --keep" in text


def test_crop_help_says_what_removing_a_miner_block_does(capsys, monkeypatch):
    """MINER's parts are pyramid blocks: removing one leaves the other scales, it makes no hole."""
    text = _crop_help(capsys, monkeypatch)
    assert "A Local-Global partition renders 0 there" in text
    assert "MINER's are the blocks of its pyramid, numbered scale by scale from the coarsest" in text
    assert "a coarse one changes every sample under it" in text
