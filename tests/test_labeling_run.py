"""Which rows to label next, with real runs: finetune.suggest on the session's tiny topic run, the labeled file
training as it is, the cold start on a base model, and the simulated loop end to end."""

import csv
import json

import pandas as pd
import pytest

from finetune.labeling.strategies import row_id
from tests.helpers import TOPICS, cli, pair_rows, read_json, run_py, topic_rows, write_csv

pytestmark = pytest.mark.trains

TINY = ["task.max_length=32", "trainer.learning_rate=2e-3", "trainer.num_train_epochs=5"]  # a random body learns fast


@pytest.fixture(scope="module")
def pool(tmp_path_factory, topic_files):
    """60 texts: 50 new ones and 10 of the run's train file (labeled already), without labels."""
    folder = tmp_path_factory.mktemp("pool")
    new = [r["text"] for r in topic_rows(50, seed=41)]
    labeled = pd.read_csv(topic_files["train"])["text"][:10].tolist()
    return write_csv(folder / "pool.csv", [{"text": t} for t in new + labeled]), set(labeled)


@pytest.mark.parametrize("strategy", ["margin", "clustered"])
def test_suggest_writes_the_most_uncertain_rows_with_their_reasons(topic_run, pool, tmp_path, strategy):
    path, labeled = pool
    out = tmp_path / "next.csv"
    result = cli("suggest", str(topic_run), str(path), "--n", "6", "--strategy", strategy, "--output", str(out))
    assert result.returncode == 0, result.output[-3000:]
    assert "60 pool rows read" in result.output and "left out: 10 in the run's data" in result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 6 and not set(table["text"]) & labeled
    assert table["id"].tolist() == [row_id(t) for t in table["text"]]
    assert table["rank"].tolist() == list(range(1, 7)) and set(table["strategy"]) == {strategy}
    assert set(table["predicted"]) <= set(TOPICS) and (table["confidence"] >= table["second_confidence"]).all()
    assert (table["label"] == "").all()
    if strategy == "margin":
        assert table["score"].is_monotonic_decreasing
        assert (
            table["score"].round(6).tolist() == (1 - table["confidence"] + table["second_confidence"]).round(6).tolist()
        )
    again = cli("suggest", str(topic_run), str(path), "--n", "6", "--strategy", strategy, "--output", str(out))
    assert again.returncode == 1 and "exists; add --overwrite" in again.output


def test_the_labeled_suggestions_train_as_they_are(topic_run, pool, topic_files, tiny_models, tmp_path):
    path, _ = pool
    out = tmp_path / "suggestions.csv"
    assert cli("suggest", str(topic_run), str(path), "--n", "8", "--output", str(out)).returncode == 0
    truth = {r["text"]: r["label"] for r in topic_rows(50, seed=41)}
    table = pd.read_csv(out)
    table["label"] = [truth[t] if i < 6 else None for i, t in enumerate(table["text"])]  # 2 not labeled yet
    table.to_csv(out, index=False)
    result = run_py(
        "task=file",
        f"file=[{topic_files['train']},{out}]",
        "model=minilm",
        f"model.name_or_path={tiny_models['bert']}",
        "task.validation_size=20",
        f"hydra.run.dir={tmp_path / 'run'}",
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.output[-3000:]
    assert "2 of 208 rows have no label yet: trained without them" in result.output
    assert read_json(tmp_path / "run" / "detected.json")["label_field"] == "label"
    assert "train          186 rows" in result.output  # 200 + 6 labeled, 20 held out for validation


def test_cold_start_needs_no_run_and_a_trained_strategy_refuses_a_base_model(tiny_models, pool, tmp_path):
    path, _ = pool
    out = tmp_path / "first.csv"
    result = cli("suggest", str(tiny_models["bert"]), str(path), "--n", "5", "--strategy", "cold_start",
                 "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.output[-3000:]
    table = pd.read_csv(out)
    assert len(table) == 5 and table["text"].is_unique and "predicted" not in table.columns
    refused = cli("suggest", str(tiny_models["bert"]), str(path), "--output", str(tmp_path / "x.csv"))
    assert refused.returncode == 1
    assert "is a base model, not a trained run: --strategy margin ranks by a trained run's probabilities" in (
        refused.output
    )


def test_pairs_are_suggested_as_the_run_reads_them(pair_run, tmp_path):
    pool = write_csv(tmp_path / "pairs.tsv", pair_rows(30, seed=9, labeled=False), "\t", csv.QUOTE_NONE)
    out = tmp_path / "next.csv"
    result = cli("suggest", str(pair_run), str(pool), "--n", "4", "--strategy", "clustered", "--output", str(out))
    assert result.returncode == 0, result.output[-3000:]
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns[:5]) == ["id", "row", "sentence1", "sentence2", "label"] and len(table) == 4
    assert table["id"].tolist() == [row_id((a, b)) for a, b in zip(table["sentence1"], table["sentence2"])]
    assert set(table["predicted"]) <= {"entailment", "not_entailment"}


def test_multi_label_runs_are_refused_in_one_line(multi_label_run, pool, tmp_path):
    path, _ = pool
    result = cli("suggest", str(multi_label_run), str(path), "--output", str(tmp_path / "x.csv"))
    assert result.returncode == 1
    assert "is a multi_label run: --strategy margin ranks single-label probabilities" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_simulated_loop_keeps_its_books_and_draws_the_curves(tmp_path, tiny_models):
    train = write_csv(tmp_path / "train.csv", topic_rows(160, seed=51))
    test = write_csv(tmp_path / "test.csv", topic_rows(40, seed=52))
    out = tmp_path / "curve"
    args = [str(train), "--test", str(test), "--per-class", "2", "--rounds", "2", "--n", "4", "--pool", "40"]
    args += ["--strategies", "margin", "random", "--seeds", "0", "--out", str(out), "--", "model=minilm"]
    result = cli("simulate_labeling", *args, f"model.name_or_path={tiny_models['bert']}", *TINY, timeout=900)
    assert result.returncode == 0, result.output[-3000:]
    records = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [(r["strategy"], r["round"], r["labels"]) for r in records] == [
        ("start", 0, 8), ("margin", 1, 12), ("margin", 2, 16), ("random", 1, 12), ("random", 2, 16),
    ]  # fmt: skip
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["f1_macro"] <= 1 and r["train_s"] > 0 for r in records)
    test_ids = {row_id(r["text"]) for r in topic_rows(40, seed=52)}
    pool = pd.read_csv(out / "seed0" / "pool.csv")
    assert len(pool) == 40 and not {row_id(t) for t in pool["text"]} & test_ids
    by_key = {(r["strategy"], r["round"]): r["ids"] for r in records}
    for strategy in ("margin", "random"):
        first, second = by_key[(strategy, 1)], by_key[(strategy, 2)]
        assert len(set(second)) == 16 and second[:12] == first and first[:8] == by_key[("start", 0)]
        assert not set(second) & test_ids
        suggested = pd.read_csv(out / "seed0" / strategy / "suggested_round2.csv", dtype={"id": str})
        assert suggested["id"].tolist() == second[12:]  # ids stable from the suggestion file to the labels
    assert by_key[("margin", 2)][8:] != by_key[("random", 2)][8:]
    curve = read_json(out / "curve.json")
    assert curve["curves"]["margin"]["labels"] == [8, 12, 16]
    assert (out / "curve.png").stat().st_size > 1000 and "| margin |" in (out / "curve.md").read_text()
    assert set(curve["against_control"]["margin"]) == {"1", "2"}
    refused = cli("simulate_labeling", *args, f"model.name_or_path={tiny_models['bert']}", *TINY, timeout=300)
    assert refused.returncode == 1 and f"error: --out {out} exists; add --overwrite to replace it, --resume" in (
        refused.stderr
    )
    resume = [*args[: args.index("--")], "--resume", *args[args.index("--") :]]  # options before the overrides
    again = cli("simulate_labeling", *resume, f"model.name_or_path={tiny_models['bert']}", *TINY, timeout=300)
    assert again.returncode == 0 and "round" not in again.output.split("# Labeling curve")[0]  # nothing retrained
