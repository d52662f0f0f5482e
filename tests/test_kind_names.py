"""Code outside `signals/` asks the modality registry what a kind is, so a new modality that declares the
same things (a rate along its first axis, occupancy fitting) is treated as the built-in ones are."""

import logging

from fieldlab.edit.render import _note_stretch
from fieldlab.signals import _modality
from fieldlab.signals._modality import Modality


def test_a_new_modality_with_a_rate_keeps_its_time_axis_out_of_the_stretch_note(monkeypatch, caplog):
    monkeypatch.setitem(_modality._MODALITIES, "clip", Modality(name="clip", dims=3, suffixes=(".clip",),
                                                                 read=None, rate="fps"))
    with caplog.at_level(logging.INFO):
        _note_stretch("clip", [100, 16, 16], [(-1, 1), (-1, 1), (-1, 1)])  # many frames, square frames
        assert not caplog.records
        _note_stretch("clip", [100, 16, 32], [(-1, 1), (-1, 1), (-1, 1)])
    assert len(caplog.records) == 1 and "stretched" in caplog.records[0].getMessage()


def test_a_new_occupancy_modality_makes_a_mesh_store(monkeypatch):
    from types import SimpleNamespace

    from fieldlab.learn._sdf_store import is_mesh_store

    monkeypatch.setitem(_modality._MODALITIES, "scan", Modality(name="scan", dims=3, suffixes=(".scan",),
                                                                 read=None, occupancy=True))
    store = SimpleNamespace(signal=SimpleNamespace(kind="scan", extra={"occupancy": True}, channels=1))
    assert is_mesh_store(store)
    assert not is_mesh_store(SimpleNamespace(signal=SimpleNamespace(kind="volume", extra={"occupancy": True},
                                                                   channels=1)))
    assert not is_mesh_store(SimpleNamespace(signal=SimpleNamespace(kind="unknown", extra={}, channels=1)))
