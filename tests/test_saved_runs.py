"""Run folders written before the package was split into subpackages (tests/fixtures/saved_runs/, made
by make_saved_runs.py with commit e065c19) still resume, predict, export and compare.

Their saved configs name the classes where they lived then (``finetune.data.TextClassificationData``,
``finetune.callbacks.StopOnSignal``, ...); the code maps those names to where the classes live now.
"""

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import REPO, read_json, run_py

SAVED_RUNS = REPO / "tests" / "fixtures" / "saved_runs"
pytestmark = pytest.mark.trains


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> Path:
    """A copy of the saved runs (their configs name files relative to it), the stopped one resumed there with run.py."""
    root = Path(shutil.copytree(SAVED_RUNS, tmp_path_factory.mktemp("saved") / "saved_runs"))
    assert (
        OmegaConf.load(root / "stopped" / ".hydra" / "config.yaml").task._target_
        == "finetune.data.TextClassificationData"
    )
    result = run_py("resume=stopped", cwd=root)
    assert result.returncode == 0, result.output[-4000:]
    (root / "resume.out").write_text(result.output, encoding="utf-8")
    return root


def test_a_run_stopped_by_the_old_code_resumes_from_its_checkpoint_and_finishes(saved_runs):
    run_dir = saved_runs / "stopped"
    assert (
        "Resuming from" in (saved_runs / "resume.out").read_text()
        and "checkpoint-10" in (saved_runs / "resume.out").read_text()
    )
    metrics = read_json(run_dir / "metrics.json")
    assert (
        metrics["train"]["steps"] == 20 and metrics["train"]["samples"] == 80
    )  # 2 epochs of 10 batches, the first 10 before the stop
    assert read_json(run_dir / "environment.json")["resumed_from"] == "checkpoint-10"
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "predictions_test.parquet").is_file()
    # The original record of the run stays as it was written: the old names, read through the map.
    assert (
        OmegaConf.load(run_dir / ".hydra" / "config.yaml").callbacks.stop_on_signal._target_
        == "finetune.callbacks.StopOnSignal"
    )


def test_a_finished_run_of_the_old_code_predicts_as_it_scored(saved_runs, monkeypatch, capsys):
    from finetune import Predictor
    from finetune.serving.cli import main

    monkeypatch.chdir(saved_runs)
    predictor = Predictor.load("finished", precision="fp32")
    assert predictor(["coach league goal the season match"])[0][0]["label"] in predictor.labels
    assert main(["finished", "--input", "data/test.csv", "--output", "predicted.csv"]) == 0
    rescored = json.loads(Path("predicted.metrics.json").read_text())
    assert rescored["accuracy"] == pytest.approx(
        read_json(saved_runs / "finished" / "metrics.json")["test"]["accuracy"]
    )
    assert "Wrote 20 rows to predicted.csv" in capsys.readouterr().out


def test_a_finished_run_of_the_old_code_exports_with_parity(saved_runs, monkeypatch):
    from finetune.serving.export import export

    monkeypatch.chdir(saved_runs)
    record = export(
        Path("finished"), output=saved_runs / "export"
    )  # checked on the run's own validation split, rebuilt from its config
    assert record["parity"]["checked_on"].startswith("the validation split of the run (20 rows")
    assert record["parity"]["agreement"] == 1.0 and (saved_runs / "export" / "model.onnx").is_file()


def test_runs_of_the_old_code_compare_with_each_other(saved_runs, monkeypatch, capsys):
    from finetune.sweeps.compare import main

    monkeypatch.chdir(saved_runs)
    main(["finished", "stopped", "--output", "comparison.json"])
    result = read_json(saved_runs / "comparison.json")
    assert result["split"] == "test" and result["rows"] == 20 and result["metric"] == "accuracy"
    assert result["a"]["runs"] == ["finished"] and result["b"]["runs"] == ["stopped"]
