"""Run files exist only complete: an error while writing leaves the old version (or nothing)."""

import json

import pytest

from finetune.files import replaced_atomically, write_json


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.5})
    with pytest.raises(RuntimeError):
        with replaced_atomically(path) as tmp:
            tmp.write_text('{"accuracy": 0.9', encoding="utf-8")  # half written, then the process fails
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_folder_is_replaced_whole(tmp_path):
    model = tmp_path / "model"
    with replaced_atomically(model) as tmp:
        tmp.mkdir()
        (tmp / "old.bin").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with replaced_atomically(model) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text("{}")
            raise KeyboardInterrupt  # stopped before the weights were written
    assert [p.name for p in model.iterdir()] == ["old.bin"] and not (tmp_path / ".model.tmp").exists()
    with replaced_atomically(model) as tmp:
        tmp.mkdir()
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in model.iterdir()] == ["new.bin"]


def test_a_leftover_temporary_from_a_killed_run_is_cleared(tmp_path):
    (tmp_path / ".metrics.json.tmp").write_text("partial")
    write_json(tmp_path / "metrics.json", {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
