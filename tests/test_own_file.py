"""The user's own file (task=file): columns, labels and kind detected, what a rerun reads back, sizes, baseline."""

import json

import numpy as np
import pandas as pd
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from finetune.config.resolvers import task_title
from finetune.errors import FinetuneError, unwrapped
from finetune.tasks.baseline import check, margin
from finetune.tasks.registry import KINDS
from finetune.tasks.validation import sized_validation
from finetune.training.schedule import sized_trainer
from tests.helpers import compose_config

REVIEWS = [
    ("A wonderful film, moving and funny.", "positive"),
    ("Two hours I will never get back.", "negative"),
    ("The cast is superb and the ending stayed with me.", "positive"),
    ("Wooden dialogue and a plot that makes no sense.", "negative"),
] * 5


def own_task(path, *overrides):
    """The task object of ``task=file file=<path>``, as a run builds it (detection included)."""
    cfg = compose_config("task=file", f"file={path}", *overrides)
    try:
        return instantiate(cfg.task, _convert_="object")
    except InstantiationException as error:  # the run shows the task's own message, unwrapped
        raise unwrapped(error) from None


def refusal(path, *overrides) -> str:
    with pytest.raises(FinetuneError) as error:
        own_task(path, *overrides)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_review_csv_is_read_as_its_columns_say(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame(REVIEWS, columns=["review", "sentiment"]).to_csv(path, index=False)
    task = own_task(path)
    assert (task.text_fields, task.label_field, task.kind.name) == (["review"], "sentiment", "single_label")
    assert task.kind.label_names == ["negative", "positive"]  # sorted, not in order of appearance
    block = task.detected.describe(str(path))
    assert "task.text_fields" in block and "by its name" in block and "negative, positive" in block


def test_integer_labels_sort_by_value_and_ids_follow_the_names(tmp_path):
    path = tmp_path / "ratings.jsonl"
    rows = [{"id": i, "comment": f"text number {i}", "stars": [1, 2, 10][i % 3]} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = own_task(path)
    assert (task.text_fields, task.label_field) == (["comment"], "stars")
    assert task.kind.label_names == ["1", "2", "10"]
    assert task.kind.parse(10) == 2 and task.kind.parse("2") == 1


def test_pairs_multi_label_and_regression_are_told_by_their_cells(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pd.DataFrame(
        {"premise": ["a man sleeps"] * 6, "hypothesis": ["a man is awake"] * 6, "label": ["no", "yes"] * 3}
    ).to_csv(pairs, sep="\t", index=False)
    assert own_task(pairs).text_fields == ["premise", "hypothesis"]

    tags = tmp_path / "tags.parquet"
    pd.DataFrame(
        {"text": [f"row {i}" for i in range(6)], "labels": ["joy,anger", "joy", "fear", "anger", "joy", "fear,joy"]}
    ).to_parquet(tags)
    task = own_task(tags)
    assert (task.kind.name, task.kind.label_names) == ("multi_label", ["anger", "fear", "joy"])

    scores = tmp_path / "scores.csv"
    pd.DataFrame({"sentence": [f"row {i}" for i in range(6)], "score": [0.5, 1.25, 3.0, 4.75, 2.5, 0.0]}).to_csv(
        scores, index=False
    )
    assert own_task(scores).kind.name == "regression"


def test_what_the_user_sets_wins(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame(REVIEWS, columns=["review", "sentiment"]).to_csv(path, index=False)
    task = own_task(path, "task.label_names=[positive,negative]")
    assert task.kind.label_names == ["positive", "negative"]
    assert "label_names" not in task.detected.why


@pytest.mark.parametrize(
    "frame, expected",
    [
        (
            {"a": ["one text", "another"] * 3, "b": ["more words", "and more"] * 3, "label": ["x", "y"] * 3},
            "which column holds the text",
        ),
        ({"text": [f"t{i}" for i in range(60)], "label": list(range(60))}, "task.kind=regression"),
        ({"text": ["t"] * 4, "label": ["same"] * 4}, "two classes or more"),
        ({"text": ["t"] * 4, "p": ["p", "q"] * 2, "q": ["r", "s"] * 2}, "task.label_field=<column>"),
    ],
)
def test_an_ambiguous_file_is_refused_in_one_line_naming_the_key(tmp_path, frame, expected):
    path = tmp_path / "data.csv"
    pd.DataFrame(frame).to_csv(path, index=False)
    assert expected in refusal(path)


def test_the_run_is_named_after_the_file_and_no_preset_leaks_in():
    cfg = compose_config("task=file", "file=data/My Tickets.csv")
    assert cfg.task.title == "My_Tickets" and task_title("file", _root_=cfg) == "My_Tickets"
    assert cfg.task.examples == [] and cfg.task.label_names is None and cfg.task.validation_size is None
    named = compose_config("task=file", "file=x.csv", "task.title=tickets")
    assert task_title("file", _root_=named) == "tickets"
    assert task_title("ag_news", _root_=compose_config("task=ag_news")) == "ag_news"


def test_sizes_fit_the_rows():
    few, why = sized_trainer(32)
    assert few["per_device_train_batch_size"] == 8 and few["num_train_epochs"] == 25 and few["eval_strategy"] == "no"
    assert "fewer than 1000" in why
    assert sized_trainer(32, evaluates=True)[0]["load_best_model_at_end"] is True  # early stopping compares epochs
    many, _ = sized_trainer(100_000)
    assert (many["num_train_epochs"], many["per_device_train_batch_size"], many["eval_strategy"]) == (3, 32, "epoch")
    huge, _ = sized_trainer(1_000_000)
    assert huge["num_train_epochs"] == 1 and huge["eval_steps"] == 7813
    assert (sized_validation(32, 4), sized_validation(300, 2), sized_validation(100_000, 4)) == (4, 30, 2000)


def test_the_baseline_check_tells_a_model_that_learned_from_one_that_did_not():
    kind = KINDS["single_label"](["a", "b"])
    train = np.array([0] * 60 + [1] * 40)
    truth = np.array([0] * 30 + [1] * 20)
    majority = kind.baseline_logits(train, len(truth))
    _, verdict = check(kind, "accuracy", train, {"test": (truth, kind.report(truth, majority))})
    assert verdict["baseline"] == pytest.approx(0.6) and not verdict["learned"]
    good = np.eye(2)[truth] * 5
    _, verdict = check(kind, "accuracy", train, {"test": (truth, kind.report(truth, good))})
    assert verdict["learned"] and verdict["margin"] == pytest.approx(2 * (0.6 * 0.4 / 50) ** 0.5)
    assert margin(0.25, 5600, True) == pytest.approx(0.02)  # at least two points, however many rows
    regression = KINDS["regression"](["score"])
    mean = regression.baseline_logits(np.array([1.0, 3.0]), 2)
    assert mean.tolist() == [[2.0], [2.0]]


def test_the_file_key_without_the_file_task_and_the_file_task_without_a_file_are_refused():
    from finetune.config.checks import validate

    with pytest.raises(FinetuneError, match=r"file=reviews.csv is read by the file task: add task=file"):
        validate(compose_config("file=reviews.csv"))
    with pytest.raises(FinetuneError, match=r"give your own file with task=file file=<path>"):
        validate(compose_config("task=file"))


def test_a_difference_too_few_rows_can_tell_asks_for_more_rows_not_for_more_steps():
    from finetune.tasks.baseline import verdict_line

    kind = KINDS["single_label"](["negative", "positive"])
    train = np.array([0] * 150 + [1] * 120)
    truth = np.array([0] * 17 + [1] * 13)
    predicted = truth.copy()
    predicted[:11] = 1 - predicted[:11]  # 19 of 30 right
    logits = np.eye(2)[predicted]
    _, verdict = check(kind, "accuracy", train, {"validation": (truth, kind.report(truth, logits))})
    assert not verdict["learned"] and verdict["too_few_rows"]
    line = verdict_line(verdict, 102, 5e-5)
    assert (
        line.startswith("The model is not shown to have learned: validation accuracy 0.6333") and "test_file=" in line
    )
    assert "Likely causes" not in line


def test_the_contrastive_stage_draws_pairs_as_setfit_does():
    from finetune.training.contrastive import draw_pairs

    labels = np.array([0, 1, 2, 3] * 8)  # 8 rows per class
    first, second, target = draw_pairs(labels, 320, seed=5)
    assert len(first) == len(second) == len(target) == 320
    assert target.tolist() == [1.0, 0.0] * 160  # one pair of one class, one of two, in turn
    assert ((labels[first] == labels[second]) == (target == 1.0)).all()
    assert (first <= second).all() and (first == second).any()  # a row with itself is a pair of one class
    # 4 classes of 8 rows give 144 pairs of one class: the 160 asked for take them all, then 16 from the start
    positives = list(zip(first[target == 1], second[target == 1]))
    assert len(set(positives)) == 144 and positives[144:] == positives[:16]
    again = draw_pairs(labels, 320, seed=5)
    assert all((a == b).all() for a, b in zip(again, (first, second, target)))
    assert not (draw_pairs(labels, 320, seed=6)[0] == first).all()
    assert all(len(part) == 0 for part in draw_pairs(np.zeros(10, dtype=int), 20, seed=5))  # one class: no pairs


def test_the_contrastive_stage_is_refused_with_a_fresh_head_under_lora_and_below_two_pairs():
    from finetune.config.checks import validate
    from finetune.training.adapters import FullFineTuning, Lora

    model = instantiate(compose_config("model=minilm", "model.contrastive_pairs=48").model, _convert_="object")
    model.check_pairs(FullFineTuning())
    with pytest.raises(FinetuneError, match=r"peft=lora keeps the body as it was: set model.contrastive_pairs=0"):
        model.check_pairs(Lora())
    fresh = instantiate(compose_config("model=minilm", "model.contrastive_pairs=48", "model.head=fresh").model)
    with pytest.raises(FinetuneError, match=r"before the few-label head, but model.head=fresh: set model.head="):
        fresh.check_pairs(FullFineTuning())
    for wrong in (-1, 1):
        with pytest.raises(FinetuneError, match=rf"contrastive_pairs={wrong}: must be 0 \(no contrastive stage\)"):
            validate(compose_config("model=minilm", f"model.contrastive_pairs={wrong}"))
