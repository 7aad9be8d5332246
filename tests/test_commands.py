"""What every command shares, through its command line: an output that exists is replaced only with --overwrite
(refused before any work, in one line naming the file and the flag), results are printed as JSON on stdout, and
the predictions of older run folders, in the names of their time, still read. The run folders are
tests/fixtures/saved_runs/'s (older code's, nothing to train)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import REPO, cli, read_json

SAVED_RUNS = REPO / "tests" / "fixtures" / "saved_runs"
RUN = "finished"  # e065c19's finished run; "c522505/finished" is a run of the same rows by later code
TEXT = "coach league goal the season match"


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> Path:
    """A copy of saved_runs/ (the runs' configs name data/ and tiny_bert/ relative to it: commands run from it)."""
    return Path(shutil.copytree(SAVED_RUNS, tmp_path_factory.mktemp("commands") / "saved_runs"))


def existing_export(folder: Path) -> None:
    folder.mkdir()
    (folder / "export.json").write_text('{"format": "onnx"}\n')


# command, its arguments ({out}: the existing output, made by the setup), the option that names it, the setup
REFUSALS = {
    "predict": (["predict", RUN, "--input", "data/test.csv", "--output", "{out}"], "--output", "out.csv"),
    "predict metrics": (
        ["predict", RUN, "--input", "data/test.csv", "--output", "{out}"],
        "--output",
        "out.metrics.json",  # a labeled --input writes its metrics beside the output: they are not replaced either
    ),
    "export": (["export", RUN, "--output", "{out}"], "--output", "export"),
    "compare": (["compare", RUN, f"c522505/{RUN}", "--output", "{out}"], "--output", "comparison.json"),
    "suggest": (["suggest", RUN, "data/test.csv", "--output", "{out}"], "--output", "suggestions.csv"),
    "simulate_labeling": (
        ["simulate_labeling", "data/train.csv", "--test", "data/test.csv", "--out", "{out}"],
        "--out",
        "curve/rounds.jsonl",
    ),
}


@pytest.mark.trains
@pytest.mark.parametrize("case", list(REFUSALS))
def test_every_command_refuses_an_existing_output_without_overwrite_before_any_work(case, saved_runs, tmp_path):
    args, option, existing = REFUSALS[case]
    made = tmp_path / existing
    if case == "export":
        existing_export(made)
        made = made / "export.json"
    else:
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_text("an earlier result\n")
    out = tmp_path / existing.split("/")[0]
    if case == "predict metrics":
        out = tmp_path / "out.csv"  # absent: only its metrics file exists
    before = made.read_bytes()
    command, *rest = args
    result = cli(command, *[a.replace("{out}", str(out)) for a in rest], cwd=saved_runs)
    assert result.returncode != 0, result.output[-3000:]
    named = f"{option} {out}" if case != "predict metrics" else f"--output {out}: its metrics file {made}"
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and named in message[0] and "add --overwrite to replace it" in message[0], message
    assert "Model:" not in result.output and "Traceback" not in result.output  # refused before any model loaded
    assert made.read_bytes() == before and result.stdout == ""


@pytest.mark.trains
def test_overwrite_replaces_and_results_are_printed_as_json(saved_runs, tmp_path):
    output = tmp_path / "comparison.json"
    output.write_text("an earlier result\n")
    result = cli("compare", RUN, f"c522505/{RUN}", "--output", str(output), "--overwrite", cwd=saved_runs)
    assert result.returncode == 0, result.output[-3000:]
    printed = json.loads(result.stdout)  # the result, as written
    assert printed == read_json(output) and printed["rows"] == 20 and printed["metric"] == "accuracy"
    assert "A - B = " in result.stderr and f"Written to {output}" in result.stderr

    result = cli("predict", RUN, TEXT, cwd=saved_runs)
    assert result.returncode == 0, result.output[-3000:]
    answer = json.loads(result.stdout)  # the labels, best first, with their scores
    assert [set(item) for item in answer] == [{"label", "score"}] * 4 and sorted(a["label"] for a in answer) == [
        "Business",
        "Sci/Tech",
        "Sports",
        "World",
    ]

    predicted, metrics_file = tmp_path / "predicted.csv", tmp_path / "predicted.metrics.json"
    metrics_file.write_text("an earlier file's metrics\n")
    result = cli("predict", RUN, "--input", "data/test.csv", "--output", str(predicted), "--overwrite", cwd=saved_runs)
    assert result.returncode == 0, result.output[-3000:]
    summary = json.loads(result.stdout)
    assert summary["metrics"] == read_json(metrics_file) and summary["rows"] == 20  # replaced, with --overwrite
    assert f"Wrote 20 rows to {predicted}" in result.stderr and "accuracy" in result.stderr
    unlabeled = tmp_path / "unlabeled.csv"
    pd.read_csv(saved_runs / "data" / "test.csv")[["text"]].to_csv(unlabeled, index=False)
    result = cli("predict", RUN, "--input", str(unlabeled), "--output", str(predicted), "--overwrite", cwd=saved_runs)
    assert result.returncode == 0 and json.loads(result.stdout)["metrics"] is None
    assert not metrics_file.exists()  # an earlier output's metrics do not stay beside rows they were not computed on

    export = tmp_path / "export"
    result = cli("export", RUN, "--output", str(export), cwd=saved_runs)
    assert result.returncode == 0, result.output[-3000:]
    record = json.loads(result.stdout)
    assert record["output"] == str(export) and {k: v for k, v in record.items() if k != "output"} == read_json(
        export / "export.json"
    )
    assert "Parity on" in result.stderr and "Exported" in result.stderr


OLD_SINGLE_LABEL = {"predicted": "predicted_label", "confidence": "score"}  # the predict command's names before


def in_old_names(table: pd.DataFrame) -> pd.DataFrame:
    """A table as an earlier version named it: score_<label> (a multi-label run's), predicted_label and score."""
    names = {c: "score_" + c[2:] for c in table.columns if c.startswith("p_")}
    return table.rename(columns={**names, **OLD_SINGLE_LABEL})


@pytest.mark.trains
def test_compare_reads_predictions_saved_in_older_names(saved_runs, tmp_path):
    old = Path(shutil.copytree(saved_runs / RUN, tmp_path / "old"))
    for split in ("validation", "test"):
        path = old / f"predictions_{split}.parquet"
        pd.read_parquet(path).pipe(in_old_names).to_parquet(path, index=False)
        assert "predicted" not in pd.read_parquet(path).columns
    from finetune.runs.examples import read_predictions

    assert list(read_predictions(old, "test").columns) == list(read_predictions(saved_runs / RUN, "test").columns)
    output = tmp_path / "comparison.json"
    result = cli("compare", str(old), str(saved_runs / RUN), "--output", str(output), cwd=saved_runs)
    assert result.returncode == 0, result.output[-3000:]
    comparison = json.loads(result.stdout)
    assert comparison["rows"] == 20 and comparison["difference"] == 0.0  # the same predictions, read alike
    assert comparison["mcnemar"]["only_a_right"] == comparison["mcnemar"]["only_b_right"] == 0


def fold_tables(rows: int = 24):
    """Two folds' out-of-fold predictions of a 4-class task, in the current names: each train row once."""
    rng = np.random.default_rng(0)
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    probabilities = rng.dirichlet(np.ones(4) * 0.5, size=rows)
    gold = [labels[i % 4] for i in range(rows)]
    table = pd.DataFrame({"train_row": range(rows), "text": [f"text {i}" for i in range(rows)], "row": range(rows)})
    table["gold"], table["predicted"] = gold, [labels[i] for i in probabilities.argmax(axis=1)]
    table["correct"], table["confidence"] = table["gold"] == table["predicted"], probabilities.max(axis=1)
    for i, label in enumerate(labels):
        table[f"p_{label}"] = probabilities[:, i]
    return [table.iloc[: rows // 2], table.iloc[rows // 2 :]]


@pytest.mark.parametrize("names", ["current", "older"])
def test_the_label_audit_reads_out_of_fold_predictions_saved_in_older_names(names, tmp_path):
    from finetune.sweeps.audit import label_audit, out_of_fold_groups

    rows = []
    for fold, table in enumerate(fold_tables()):
        job = tmp_path / f"job{fold}"
        shutil.copytree(SAVED_RUNS / RUN / ".hydra", job / ".hydra")  # a single-label run's config, of older code
        (in_old_names(table) if names == "older" else table).to_parquet(job / "out_of_fold.parquet", index=False)
        rows.append({"run_folder": str(job), "status": "completed", "overrides": f"seed=1 task.fold={fold}"})
    (group,) = out_of_fold_groups(rows).values()
    expected = pd.concat(fold_tables(), ignore_index=True)
    pd.testing.assert_frame_equal(group, expected)  # every name the current one, every row once
    pytest.importorskip("cleanlab")
    audit = label_audit([group])
    assert list(audit.columns) == ["row", "text", "given_label", "suggested_label", "score", "flagged"]
    pd.testing.assert_frame_equal(audit, label_audit([expected]))


def test_the_label_audit_starts_no_process_pool(monkeypatch):
    """A forked pool in a process that runs threads (torch's, tqdm's, a sweep's or a test runner's) can deadlock
    in the child: the audit runs cleanlab in its own process."""
    import multiprocessing.pool

    pytest.importorskip("cleanlab")
    from finetune.sweeps.audit import label_audit

    def refuse(*args, **kwargs):
        raise AssertionError("the label audit started a multiprocessing pool")

    monkeypatch.setattr(multiprocessing.pool.Pool, "__init__", refuse)
    audit = label_audit([pd.concat(fold_tables(), ignore_index=True)])
    assert len(audit) == 24 and audit["flagged"].dtype == bool
