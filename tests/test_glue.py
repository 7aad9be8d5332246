"""The GLUE and GoEmotions presets: the original files read as they lie, and experiment=glue as one sweep."""

import csv
import zipfile
from pathlib import Path

import pytest
from hydra.utils import instantiate

from finetune.config.checks import validate
from finetune.config.resolvers import register_resolvers
from finetune.config.schemas import register_configs
from finetune.tasks.data import label_array
from tests.helpers import (
    SHARED_DATA,
    compose_config,
    glue_tsv_files,
    pair_rows,
    read_json,
    run_py,
    score_rows,
    write_csv,
)

register_configs()
register_resolvers()
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "goemotions").is_dir(), reason=f"no shared data in {SHARED_DATA}"
)


def load_preset(task: str, **files: str):
    overrides = [f"task={task}", *(f"task.data_files.{split}={SHARED_DATA / path}" for split, path in files.items())]
    cfg = compose_config(*overrides)
    validate(cfg)
    task_data = instantiate(cfg.task, _convert_="object")
    return task_data, task_data.load(seed=42)


@needs_shared_data
@pytest.mark.parametrize(
    "task, train_rows, test_rows, count",
    [
        ("cola", 8551, 1063, ("acceptable", 6023)),  # train.tsv has no header, test.tsv has one
        ("mrpc", 3668, 1725, ("equivalent", 2474)),  # both start with a byte-order mark
        ("rte", 2490, 3000, ("entailment", None)),
        ("stsb", 5749, 1379, None),  # regression: the score column
    ],
)
def test_glue_files_are_read_as_published(task, train_rows, test_rows, count):
    folder = {"cola": "cola", "mrpc": "mrpc", "rte": "rte", "stsb": "stsb"}[task]
    data, splits = load_preset(task, train=f"{folder}/train.tsv", test=f"{folder}/test.tsv")
    assert len(splits["train"]) + len(splits["validation"]) == train_rows and len(splits["test"]) == test_rows
    assert not data.is_labeled(splits["test"]) and set(data.text_fields) <= set(splits["test"].column_names)
    labels = [*label_array(splits["train"]), *label_array(splits["validation"])]
    if count and count[1]:
        assert sum(label == data.label_names.index(count[0]) for label in labels) == count[1]
    if task == "stsb":
        assert min(labels) == 0.0 and max(labels) == 5.0 and splits["train"].features["label"].dtype == "float32"
    if task == "mrpc":
        first = [r for r in splits["train"]] + [r for r in splits["validation"]]
        assert any(r["sentence1"].startswith("Amrozi accused his brother") for r in first)


@needs_shared_data
def test_goemotions_is_read_as_google_ships_it():
    data, splits = load_preset("goemotions", train="goemotions/train.tsv", test="goemotions/test.tsv")
    assert len(splits["train"]) + len(splits["validation"]) == 43410 and len(splits["test"]) == 5427
    matrix = [*label_array(splits["train"]), *label_array(splits["validation"])]
    totals = dict(zip(data.label_names, map(int, sum(map(lambda row: row, matrix)))))
    assert totals["neutral"] == 14219 and totals["grief"] == 77 and len(data.label_names) == 28
    labels_per_row = [int(sum(row)) for row in matrix]
    assert labels_per_row.count(1) == 36308 and labels_per_row.count(2) == 6541 and max(labels_per_row) == 5
    texts = splits["train"]["text"][:] + splits["validation"]["text"][:]
    with (SHARED_DATA / "goemotions" / "train.tsv").open(encoding="utf-8", newline="") as f:
        expected = [row[0] for row in csv.reader(f, delimiter="\t")]  # the README's reading: CSV-quoted cells unquoted
    assert sorted(texts) == sorted(expected) and sum('"' in t for t in texts) > 1000


@pytest.fixture(scope="module")
def glue_sweep(tmp_path_factory, tiny_models):
    """experiment=glue over RTE, STS-B and CoLA, from a GLUE-style folder that has no CoLA."""
    glue = tmp_path_factory.mktemp("glue_data")
    for folder, train, test in (
        ("RTE", pair_rows(80, seed=41), pair_rows(12, seed=42, labeled=False)),
        ("STS-B", score_rows(80, seed=43), score_rows(12, seed=44, labeled=False)),
    ):
        (glue / folder).mkdir()
        glue_tsv_files(glue / folder, train, test)
    cwd = tmp_path_factory.mktemp("glue_sweep")
    result = run_py(
        "experiment=glue",
        f"glue_dir={glue}",
        "hydra.sweeper.params.task='rte,stsb,cola'",
        "model=bert",
        f"model.name_or_path={tiny_models['bert']}",
        "trainer=fast",
        "task.max_length=32",
        "task.examples=[]",
        "task.validation_size=0.25",
        "hardware=cpu",
        cwd=cwd,
        timeout=600,
    )
    assert result.returncode == 0, result.output[-4000:]
    (sweep_dir,) = (cwd / "outputs" / "multirun").iterdir()
    return result, sweep_dir


@pytest.mark.slow
def test_glue_sweep_scores_and_zips_what_ran(glue_sweep):
    result, sweep_dir = glue_sweep
    summary = (sweep_dir / "summary.md").read_text()
    jobs = {
        p.name.split("_", 2)[-1]: read_json(p / "metrics.json")
        for p in sweep_dir.iterdir()
        if (p / "metrics.json").is_file()
    }
    assert set(jobs) == {"rte", "stsb"}
    rte, stsb = jobs["rte"]["validation"], jobs["stsb"]["validation"]
    expected = 100 * (rte["accuracy"] + (stsb["pearson"] + stsb["spearman"]) / 2) / 2
    assert f"**{expected:.1f}**" in summary and "mean over 2 tasks" in summary
    with zipfile.ZipFile(sweep_dir / "glue_submission.zip") as archive:
        assert archive.namelist() == ["STS-B.tsv", "RTE.tsv"]  # in the order the GLUE server lists them
        rte_lines = archive.read("RTE.tsv").decode().splitlines()
        assert rte_lines[0] == "index\tprediction" and len(rte_lines) == 13
        assert {line.split("\t")[1] for line in rte_lines[1:]} <= {"entailment", "not_entailment"}
        assert all(
            float(line.split("\t")[1]) == float(line.split("\t")[1])
            for line in archive.read("STS-B.tsv").decode().splitlines()[1:]
        )
    assert "Not in it" in summary and "CoLA.tsv" in summary.split("Not in it")[1]
    assert "task.data_files.train: no such file" in summary and "CoLA/train.tsv" in summary  # the failed job says why
    assert "GLUE score" in result.output


def test_a_glue_preset_names_a_missing_glue_file(tmp_path):
    from finetune.errors import FinetuneError

    cfg = compose_config("task=cola", f"glue_dir={tmp_path}")
    with pytest.raises(FinetuneError, match=r"task.data_files.train: no such file: .*CoLA/train.tsv"):
        instantiate(cfg.task, _convert_="object").load(seed=0)
    assert Path(cfg.task.data_files.train).name == "train.tsv"


@pytest.mark.trains
def test_mnli_scores_both_validation_sets_and_predicts_both_test_sets(tmp_path, tiny_models):
    files = {
        "train": pair_rows(80, seed=51),
        "validation": pair_rows(16, seed=52),
        "validation_mismatched": pair_rows(12, seed=53),
        "test": pair_rows(10, seed=54, labeled=False),
        "test_mismatched": pair_rows(8, seed=55, labeled=False),
    }
    for split, rows in files.items():  # GLUE's MNLI names its columns sentence1 / sentence2: the preset renames them
        write_csv(tmp_path / f"{split}.tsv", rows, "\t", csv.QUOTE_NONE)
    run_dir = tmp_path / "run"
    result = run_py(
        "task=mnli",
        "task.label_names=[entailment,not_entailment]",
        "model=bert",
        f"model.name_or_path={tiny_models['bert']}",
        *(f"task.data_files.{split}={tmp_path / f'{split}.tsv'}" for split in files),
        "trainer=fast",
        "task.max_length=32",
        "task.examples=[]",
        "hardware=cpu",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.output[-4000:]
    metrics = read_json(run_dir / "metrics.json")
    assert (metrics["validation"]["rows"], metrics["validation_mismatched"]["rows"]) == (16, 12)
    assert metrics["test"] is None and metrics["test_mismatched"] is None
    assert (run_dir / "confusion_validation_mismatched.png").is_file()
    assert (
        len((run_dir / "MNLI-m.tsv").read_text().splitlines()) == 11
        and len((run_dir / "MNLI-mm.tsv").read_text().splitlines()) == 9
    )
    summary = result.output[result.output.index("Run summary") :]
    assert f"validation_mismatched  {metrics['validation_mismatched']['accuracy']:>9.4f}" in summary
