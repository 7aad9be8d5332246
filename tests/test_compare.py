"""Trustworthy comparisons through a real sweep: statistics over seeds, the picture, saved
per-example predictions and mistakes, and the paired test between configurations."""

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from finetune.sweeps.compare import main as compare_main
from tests.helpers import read_json, run_py

LEARNING_RATES = ("0.003", "0.0005")  # the first learns the easy synthetic task faster


def read_csv(path: Path) -> List[Dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, topic_files, tiny_models):
    """2 learning rates x 3 seeds on the tiny BERT, in one process (Hydra's basic launcher)."""
    sweep_dir = tmp_path_factory.mktemp("seeds") / "sweep"
    result = run_py(
        "-m",
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={topic_files['train']}",
        f"task.data_files.test={topic_files['test']}",
        "task.validation_size=0.2",
        "task.examples=[]",
        "task.max_length=32",
        "hardware=cpu",
        "trainer=fast",
        "trainer.num_train_epochs=2",
        "trainer.per_device_train_batch_size=8",
        f"trainer.learning_rate={','.join(LEARNING_RATES)}",
        "seed=1,2,3",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=sweep_dir.parent,
        timeout=600,
    )
    assert result.returncode == 0, result.output[-4000:]
    jobs = defaultdict(list)  # learning rate -> its jobs' leaderboard rows
    for row in read_csv(sweep_dir / "summary.csv"):
        jobs[next(o.split("=")[1] for o in row["overrides"].split() if o.startswith("trainer.learning_rate="))].append(
            row
        )
    return result, sweep_dir, jobs


@pytest.mark.slow
def test_jobs_differing_only_in_seed_are_one_configuration_with_mean_std_and_interval(seed_sweep):
    result, sweep_dir, jobs = seed_sweep
    configurations = read_csv(sweep_dir / "summary_by_config.csv")
    assert len(configurations) == 2 and sorted(jobs) == sorted(LEARNING_RATES)
    for config in configurations:
        (rate,) = [r for r in LEARNING_RATES if f"trainer.learning_rate={r}" in config["config"]]
        assert "seed=" not in config["config"] and (config["n"], config["failed"]) == ("3", "0")
        for column in ("val_accuracy", "val_f1_macro", "test_accuracy"):
            values = [float(job[column]) for job in jobs[rate]]
            mean, std = float(config[f"{column}_mean"]), float(config[f"{column}_std"])
            assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
            low, high = (
                scipy.stats.t.interval(0.95, 2, loc=np.mean(values), scale=np.std(values, ddof=1) / np.sqrt(3))
                if std
                else (mean, mean)
            )
            assert (float(config[f"{column}_ci_low"]), float(config[f"{column}_ci_high"])) == pytest.approx((low, high))
        assert sorted(config["run_folders"].split()) == sorted(job["run_folder"] for job in jobs[rate])
    means = [float(c["val_accuracy_mean"]) for c in configurations]
    assert means == sorted(means, reverse=True)  # ranked by the task's metric
    assert "By configuration, also in" in result.output and "| trainer.learning_rate=" in result.output
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![each configuration's mean" in (sweep_dir / "summary_by_config.md").read_text()


@pytest.mark.slow
def test_each_run_saves_its_predictions_and_its_mistakes_worst_first(seed_sweep, topic_files):
    _, sweep_dir, jobs = seed_sweep
    test_labels = ["World", "Sports", "Business", "Sci/Tech"]
    test_file = pd.read_csv(topic_files["test"])
    for rate in LEARNING_RATES:
        run_dir = Path(jobs[rate][0]["run_folder"])
        metrics = read_json(run_dir / "metrics.json")
        for split in ("validation", "test"):
            table = pd.read_parquet(run_dir / f"predictions_{split}.parquet")
            assert list(table.columns[:5]) == ["row", "gold", "predicted", "correct", "confidence"]
            assert len(table) == metrics[split]["rows"] and table["correct"].mean() == pytest.approx(
                metrics[split]["accuracy"]
            )
            assert np.allclose(table[[f"p_{n}" for n in test_labels]].sum(axis=1), 1)
            mistakes = pd.read_csv(run_dir / f"misclassified_{split}.csv")
            assert (
                list(mistakes.columns) == ["row", "text", "gold", "predicted", "confidence"]
                and len(mistakes) == (~table["correct"]).sum()
            )
            assert mistakes["confidence"].is_monotonic_decreasing and (mistakes["gold"] != mistakes["predicted"]).all()
        # rows keep the order of the file: the Trainer's length-grouped evaluation does not reorder them
        assert table["gold"].tolist() == [test_labels[i] for i in test_file["label"]]
        assert mistakes["text"].tolist() == test_file["text"].iloc[mistakes["row"]].tolist()
        card = (run_dir / "model" / "README.md").read_text()
        if len(pd.read_csv(run_dir / "misclassified_validation.csv")):
            assert (
                "## Errors" in card
                and "(../misclassified_validation.csv)" in card
                and "| gold | predicted | rows |" in card
            )


@pytest.mark.slow
def test_compare_gives_an_interval_and_p_values_and_refuses_different_rows(seed_sweep, tmp_path, capsys):
    _, sweep_dir, jobs = seed_sweep
    good, bad = (sorted(jobs[rate], key=lambda job: job["overrides"]) for rate in LEARNING_RATES)
    output = tmp_path / "comparison.json"
    compare_main([good[0]["run_folder"], bad[0]["run_folder"], "--resamples", "500", "--output", str(output)])
    result = json.loads(output.read_text())
    printed = capsys.readouterr()
    assert json.loads(printed.out) == result and "A - B = " in printed.err  # the result as JSON, in words on stderr
    difference = float(good[0]["test_accuracy"]) - float(bad[0]["test_accuracy"])
    assert result["split"] == "test" and result["rows"] == 40 and result["difference"] == pytest.approx(difference)
    assert result["ci95"][0] <= result["difference"] <= result["ci95"][1]
    assert 0 <= result["bootstrap"]["p_value"] <= 1 and 0 <= result["mcnemar"]["p_value"] <= 1
    assert result["mcnemar"]["only_a_right"] - result["mcnemar"]["only_b_right"] == round(40 * difference)

    with pytest.raises(SystemExit) as refused:  # validation is carved per seed: seed 1's rows are not seed 2's
        compare_main(
            [
                good[0]["run_folder"],
                bad[1]["run_folder"],
                "--split",
                "validation",
                "--output",
                str(tmp_path / "no.json"),
            ]
        )
    assert (
        "Runs on different rows: the validation rows of" in str(refused.value) and not (tmp_path / "no.json").exists()
    )

    best_two = read_json(sweep_dir / "comparison.json")  # the sweep compared its top two configurations, all seeds
    assert len(best_two["a"]["runs"]) == len(best_two["b"]["runs"]) == 3 and best_two["split"] == "test"
    assert best_two["mcnemar"] is None and 0 <= best_two["bootstrap"]["p_value"] <= 1
    means = {rate: np.mean([float(job["test_accuracy"]) for job in jobs[rate]]) for rate in LEARNING_RATES}
    assert abs(best_two["difference"]) == pytest.approx(abs(means[LEARNING_RATES[0]] - means[LEARNING_RATES[1]]))


@pytest.mark.trains
def test_folds_and_seeds_repeat_a_configuration_and_the_sweep_script_runs_every_fold():
    import os
    import subprocess

    from finetune.sweeps.aggregate import configuration
    from tests.helpers import REPO

    assert (
        configuration("model=bert seed=1 task.fold=3 trainer.learning_rate=1e-4")
        == "model=bert trainer.learning_rate=1e-4"
    )
    script = [str(REPO / "multirun_sweep.sh"), "-m", "minilm", "-k", "4", "task.max_train_samples=2000"]
    command = subprocess.run(
        script, capture_output=True, text=True, env={**os.environ, "PYTHON": "echo"}, check=True
    ).stdout.split()
    assert command[-3:] == ["task.folds=4", "task.fold=range(4)", "task.max_train_samples=2000"]
    refused = subprocess.run(
        [*script[:3], "-k", "1"], capture_output=True, text=True, env={**os.environ, "PYTHON": "echo"}
    )
    assert refused.returncode == 2 and "-k 1: the number of folds must be an integer >= 2" in refused.stderr
