"""Which rows to label next, without a model: the strategies on hand-made probabilities and embeddings, the pool's
streaming bookkeeping, the loop's draws, and a labeled suggestion file joining the training data."""

import logging

import numpy as np
import pandas as pd
import pytest

from finetune.errors import FinetuneError
from finetune.labeling.loop import Plan, read_labeled, revealed
from finetune.labeling.pool import chosen, ranked
from finetune.labeling.strategies import STRATEGIES, row_id, uniform_key
from finetune.runs.model_folder import ModelRecord
from finetune.tasks.data import TextClassificationData
from tests.helpers import TOPICS, topic_rows, write_csv

NAMES = list(TOPICS)
RECORD = ModelRecord(kind="single_label", labels=["a", "b", "c"])


class FixedScores:
    """A stand-in for a run's Predictor: each text's probabilities are set by the test, embeddings too."""

    def __init__(self, probabilities, embeddings=None):
        self.probabilities, self.vectors = probabilities, embeddings
        self.scored = 0

    def scores(self, texts, progress=False):
        self.scored += len(texts)
        return np.array([self.probabilities[t] for t in texts], dtype=float)

    def embeddings(self, texts, progress=False):
        return np.array([self.vectors[t] for t in texts], dtype=float)


def test_uncertainty_strategies_rank_the_most_uncertain_row_first():
    probabilities = np.array([[0.9, 0.05, 0.05], [0.4, 0.39, 0.21], [0.34, 0.33, 0.33], [0.6, 0.3, 0.1]])
    margin = STRATEGIES["margin"].priority(probabilities, [], seed=0)
    assert np.allclose(margin, 1 - np.array([0.85, 0.01, 0.01, 0.3]))
    assert list(STRATEGIES["margin"].choose(margin, 2, seed=0)) == [1, 2]  # ties keep pool order
    entropy = STRATEGIES["entropy"].priority(probabilities, [], seed=0)
    assert list(STRATEGIES["entropy"].choose(entropy, 4, seed=0)) == [2, 1, 3, 0]


def test_clustered_picks_one_row_per_cluster_of_uncertain_rows():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 5
    embeddings = np.concatenate([centre + rng.normal(0, 0.05, (25, 8)) for centre in centres])
    priority = np.linspace(0.9, 0.8, 100)  # the first cluster is the most uncertain: margin alone takes it only
    assert set(STRATEGIES["margin"].choose(priority, 4, seed=0) // 25) == {0}
    picked = STRATEGIES["clustered"].choose(priority, 4, seed=0, embeddings=embeddings)
    assert sorted(picked // 25) == [0, 1, 2, 3]
    assert list(picked) == sorted(picked)  # most uncertain first
    again = STRATEGIES["clustered"].choose(priority, 4, seed=0, embeddings=embeddings)
    assert list(again) == list(picked)  # seeded


def test_ids_and_the_random_sample_do_not_depend_on_row_numbers_or_chunks():
    assert row_id("a text") == row_id("a text") != row_id("a text ")
    assert row_id(("premise", "hypothesis")) != row_id(("premise hypothesis", ""))
    ids = [row_id(f"text {i}") for i in range(2000)]
    keys = uniform_key(ids, seed=3)
    assert np.allclose(keys[:10], uniform_key(ids[:10], seed=3))
    assert not np.allclose(keys, uniform_key(ids, seed=4))
    assert 0.45 < keys.mean() < 0.55 and keys.min() >= 0 and keys.max() < 1


def pool_file(tmp_path, texts):
    path = tmp_path / "pool.csv"
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    return path


def test_the_pool_streams_leaving_out_labeled_repeated_and_empty_rows(tmp_path):
    texts = [f"row {i}" for i in range(30)]
    probabilities = {t: [0.9, 0.05, 0.05] for t in texts}
    probabilities.update({"row 7": [0.5, 0.49, 0.01], "row 3": [0.45, 0.45, 0.1], "row 20": [0.4, 0.3, 0.3]})
    pool = pool_file(tmp_path, [*texts[:10], "row 3", "", *texts[10:]])  # row 3 again, an empty text
    found = {}
    for chunk_rows in (4, 10_000):  # chunked or whole: the same rows, in the same order
        scorer = FixedScores(probabilities)
        kept, counts = ranked(
            pool, RECORD, STRATEGIES["margin"], 3, 0, scorer, known={row_id("row 20")}, chunk_rows=chunk_rows
        )
        assert (counts.rows, counts.known, counts.empty, counts.repeated) == (32, 1, 1, 1)
        assert scorer.scored == 30  # every row with text and not labeled before
        found[chunk_rows] = chosen(kept, RECORD, STRATEGIES["margin"], 3, 0, ["a", "b", "c"])
    table = found[4]
    pd.testing.assert_frame_equal(table, found[10_000])
    assert table["text"].tolist() == ["row 3", "row 7", "row 0"]  # row 20 was labeled; row 0 ties, comes first
    assert table["row"].tolist() == [4, 8, 1]  # 1-based pool rows; the repeat of row 3 (row 11) is left out
    assert table["id"].tolist() == [row_id(t) for t in table["text"]]
    assert list(table.columns) == [
        "id", "row", "text", "label", "rank", "strategy", "score",
        "predicted", "confidence", "second", "second_confidence",
    ]  # fmt: skip
    assert table["label"].tolist() == ["", "", ""] and table["rank"].tolist() == [1, 2, 3]
    assert table.loc[0, "predicted"] == "a" and table.loc[0, "second"] == "b"
    assert table.loc[0, "score"] == pytest.approx(1.0) and table.loc[1, "confidence"] == pytest.approx(0.5)


def test_random_and_cold_start_need_no_scores(tmp_path):
    texts = [f"row {i}" for i in range(50)]
    pool = pool_file(tmp_path, texts)
    kept, _ = ranked(pool, RECORD, STRATEGIES["random"], 5, 1, predictor=None, chunk_rows=7)
    picked = chosen(kept, RECORD, STRATEGIES["random"], 5, 1, [])
    assert len(picked) == 5 and "predicted" not in picked.columns
    keys = uniform_key([row_id(t) for t in texts], seed=1)
    assert sorted(picked["text"]) == sorted(np.array(texts)[np.argsort(-keys)[:5]])
    vectors = {t: np.eye(5)[i % 5] * 3 + 0.01 * i for i, t in enumerate(texts)}
    kept, _ = ranked(pool, RECORD, STRATEGIES["cold_start"], 5, 0, predictor=None)
    assert len(kept) == 50  # a sample of up to 1,000 rows is clustered
    picked = chosen(kept, RECORD, STRATEGIES["cold_start"], 5, 0, [], FixedScores({}, vectors))
    assert sorted(int(t.split()[1]) % 5 for t in picked["text"]) == [0, 1, 2, 3, 4]  # one per cluster


def test_the_loop_draws_first_labels_and_a_pool_apart_from_the_test_rows(tmp_path):
    train = write_csv(tmp_path / "train.csv", topic_rows(120, seed=5))
    test = write_csv(tmp_path / "test.csv", topic_rows(20, seed=5)[:10])  # 10 test texts are also in train
    table, test_table = read_labeled(train, ["text"], "label"), read_labeled(test, ["text"], "label")
    plan = Plan.draw(table, set(test_table["id"]), "label", per_class=2, pool_rows=40, seed=0)
    assert plan.start["label"].value_counts().to_dict() == {name: 2 for name in NAMES}
    assert len(plan.pool) == 40
    ids = set(plan.start["id"]) | set(plan.pool["id"])
    assert len(ids) == 48 and not ids & set(test_table["id"])
    assert plan.start["id"].tolist() == Plan.draw(table, set(test_table["id"]), "label", 2, 40, 0).start["id"].tolist()
    shown = revealed(plan, set(plan.start["id"]), plan.pool["id"][:3].tolist())
    assert shown["label"].tolist() == plan.pool["label"][:3].tolist()
    for wrong in ([plan.start["id"][0]], [plan.pool["id"][0]] * 2, ["000000000000"]):
        with pytest.raises(FinetuneError, match="bookkeeping"):
            revealed(plan, set(plan.start["id"]), wrong)
    with pytest.raises(FinetuneError, match="fewer than --per-class"):
        Plan.draw(table, set(), "label", per_class=40, pool_rows=10, seed=0)


def test_a_labeled_suggestion_file_joins_the_training_data_and_empty_labels_are_skipped(tmp_path, caplog, monkeypatch):
    train = write_csv(tmp_path / "train.csv", topic_rows(40, seed=6))
    rows = topic_rows(12, seed=7)
    suggested = pd.DataFrame(
        {
            "id": [row_id(r["text"]) for r in rows],
            "row": range(1, 13),
            "text": [r["text"] for r in rows],
            "label": [r["label"] if i < 9 else None for i, r in enumerate(rows)],  # 3 left to label
            "rank": range(1, 13),
            "predicted": "World",
        }
    )
    suggested.to_csv(tmp_path / "suggestions.csv", index=False)
    task = TextClassificationData(
        data_files={"train": [str(train), str(tmp_path / "suggestions.csv")]}, kind=None, text_fields=None,
        label_field=None, label_names=None, validation_size=0.25,
    )  # fmt: skip
    assert task.label_field == "label" and task.text_fields == ["text"] and task.label_names == sorted(NAMES)
    monkeypatch.setattr(logging.getLogger("finetune.tasks.data"), "disabled", False)  # a Hydra job may disable it
    with caplog.at_level(logging.WARNING, logger="finetune.tasks.data"):
        splits = task.load(seed=0)
    assert len(splits["train"]) + len(splits["validation"]) == 49
    assert "3 of 52 rows have no label yet" in caplog.text
    assert sorted(splits["train"].column_names) == ["label", "text"]


def test_a_file_without_any_label_is_refused_and_so_is_an_empty_list(tmp_path):
    path = tmp_path / "unlabeled.csv"
    pd.DataFrame({"text": ["a b", "c d"], "label": [None, None]}).to_csv(path, index=False)
    task = TextClassificationData(data_files={"train": str(path)}, text_fields=["text"], label_names=NAMES)
    with pytest.raises(FinetuneError, match="no row has a label in column 'label'; fill in some labels"):
        task.load(seed=0)
    from omegaconf import OmegaConf

    from finetune.config.schemas import TaskFields
    from finetune.tasks.settings import task_errors

    node = OmegaConf.merge(OmegaConf.structured(TaskFields), {"label_names": NAMES, "data_files": {"train": []}})
    assert any("give a file, or a list of files" in e for e in task_errors(node))
