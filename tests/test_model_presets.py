"""The long-context encoder presets (conf/model/: modernbert, mmbert, ettin, eurobert, gte).

Each composes and names a checkpoint that transformers loads without the repository's own code. A tiny random
model of each architecture (mmBERT and Ettin are ModernBERTs) trains through run.py once per session, reading
with task.max_length=1024, scoring documents longer than BERT's 512 tokens whole, and that run exports to ONNX,
predicts and serves (long texts whole); each also trains
with LoRA on its architecture's default target modules, and starts the few-label head from class means.
"""

import json
import random
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from tests.helpers import (
    FILLER,
    LONG_CONTEXT,
    PRESET_ARCHITECTURES,
    TINY_TRAINING,
    TOPICS,
    call,
    compose_config,
    read_json,
    read_scalars,
    run_py,
    save_long_context_model,
    served,
    topic_rows,
    write_csv,
)

CHECKPOINTS = {
    "modernbert": "answerdotai/ModernBERT-base",
    "mmbert": "jhu-clsp/mmBERT-base",
    "ettin": "jhu-clsp/ettin-encoder-150m",
    "eurobert": "EuroBERT/EuroBERT-210m",
    "gte": "alibaba-nlp-community/gte-multilingual-base",
}
ARCHITECTURES = ["modernbert", "eurobert", "gte"]  # each trained under the preset of its name
LORA_TARGETS = {"modernbert": ["Wqkv"], "eurobert": ["q_proj", "v_proj"], "gte": ["q_proj", "v_proj"]}
HEADS = {"modernbert": ["head", "classifier"], "eurobert": ["dense", "classifier"], "gte": ["classifier"]}
LONG_WORDS = 520  # filler words after a long document's topic words: past BERT's 512 tokens
MAX_LENGTH = 1024
SHORT = "coach league goal the season match"
# World's words first, Business's past the 512th token: what a reader that cut the text at 512 would never see
LONG = " ".join(
    ["treaty minister election border", *(FILLER[i % len(FILLER)] for i in range(LONG_WORDS)), "shares profit"]
)


def tiny_training(**settings) -> List[str]:
    """TINY_TRAINING with these settings changed or added (``trainer__num_train_epochs=2``: a dot for each __)."""
    changed = {key.replace("__", "."): value for key, value in settings.items()}
    kept = [a for a in TINY_TRAINING if a.split("=", 1)[0] not in changed]
    return kept + [f"{key}={value}" for key, value in changed.items()]


def long_document(row: Dict[str, str], rng: random.Random) -> Dict[str, str]:
    return {**row, "text": row["text"] + " " + " ".join(rng.choice(FILLER) for _ in range(LONG_WORDS))}


@pytest.fixture(scope="session")
def preset_models(tmp_path_factory) -> Dict[str, Path]:
    """A random 2-layer model of each architecture, both it and its tokenizer accepting 8,192 tokens."""
    root = tmp_path_factory.mktemp("preset_models")
    return {model_type: save_long_context_model(root / model_type, model_type) for model_type in ARCHITECTURES}


@pytest.fixture(scope="session")
def long_topic_files(tmp_path_factory) -> Dict[str, Path]:
    """AG-News-like train.csv and test.csv, where every 5th test row is a document of over 520 tokens (training on
    long rows is the same code at a longer length: it would only make the run slower)."""
    rng, folder = random.Random(5), tmp_path_factory.mktemp("long_topics")
    train = topic_rows(200, seed=1)
    test = [long_document(r, rng) if i % 5 == 0 else r for i, r in enumerate(topic_rows(40, seed=2))]
    return {"train": write_csv(folder / "train.csv", train), "test": write_csv(folder / "test.csv", test)}


@pytest.fixture(scope="session", params=ARCHITECTURES)
def preset_run(request, tmp_path_factory, preset_models, long_topic_files):
    """(model_type, run folder): the tiny model trained under its preset, task.max_length=1024, once per session."""
    model_type = request.param
    run_dir = tmp_path_factory.mktemp("preset_runs") / model_type
    result = run_py(
        "task=ag_news",
        f"model={model_type}",
        f"model.name_or_path={preset_models[model_type]}",
        f"task.data_files.train={long_topic_files['train']}",
        f"task.data_files.test={long_topic_files['test']}",
        "task.validation_size=0.2",
        f"hydra.run.dir={run_dir}",
        "hardware=cpu",
        # scored 8 rows a pass, longest first: the long documents pad only their own passes
        *tiny_training(task__max_length=MAX_LENGTH, trainer__per_device_eval_batch_size=8),
        cwd=run_dir.parent,
    )
    assert result.returncode == 0, result.output[-4000:]
    return model_type, run_dir


def whole_and_cut(model_dir: Path, text: str, cut: int = 512) -> List[np.ndarray]:
    """The model's probabilities for ``text`` read whole, and cut to its first ``cut`` tokens, in label order."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [
            model(**tokenizer(text, return_tensors="pt", **options)).logits.softmax(-1)[0].numpy()
            for options in ({}, {"truncation": True, "max_length": cut})
        ]


def as_scores(answer) -> List[float]:
    """A single-label answer (labels ranked, each with its score) as scores in label order."""
    scores = {item["label"]: item["score"] for item in answer}
    return [scores[label] for label in TOPICS]


# --- the presets, without training ------------------------------------------------------------
@pytest.mark.parametrize("preset", list(PRESET_ARCHITECTURES))
def test_each_preset_names_a_checkpoint_transformers_loads_without_remote_code(preset):
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as NATIVE

    from finetune.config.checks import validate

    cfg = compose_config(f"model={preset}")
    validate(cfg)
    assert cfg.model._target_ == "finetune.training.model.PretrainedClassifier"
    assert cfg.model.name_or_path == CHECKPOINTS[preset] and cfg.model.trust_remote_code is False
    assert PRESET_ARCHITECTURES[preset] in NATIVE  # a class of transformers' own, not a repository's code


@pytest.mark.trains
def test_each_preset_composes_from_the_command_line():
    for preset, checkpoint in CHECKPOINTS.items():
        result = run_py(f"model={preset}", "--cfg", "job")
        assert result.returncode == 0, result.output[-2000:]
        assert f"name_or_path: {checkpoint}\n  trust_remote_code: false" in result.stdout


def test_gte_s_original_checkpoint_needs_its_own_code_and_the_converted_one_loads_natively(preset_models, tmp_path):
    """Alibaba-NLP/gte-multilingual-base says model_type "new" and ships its code (auto_map): without
    model.trust_remote_code it does not load; the preset's copy says "gte", transformers' own class."""
    import shutil

    from finetune.training.model import PretrainedClassifier

    original = Path(shutil.copytree(preset_models["gte"], tmp_path / "original"))
    config = read_json(original / "config.json")
    code = {
        "AutoConfig": "configuration.NewConfig",
        "AutoModelForSequenceClassification": "modeling.NewForSequenceClassification",
    }
    config.update(model_type="new", auto_map={auto: f"Alibaba-NLP/new-impl--{name}" for auto, name in code.items()})
    (original / "config.json").write_text(json.dumps(config))
    tokenizer = PretrainedClassifier(name_or_path=str(original)).load_tokenizer()
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        PretrainedClassifier(name_or_path=str(original)).load_model({"num_labels": 4}, tokenizer)
    model = PretrainedClassifier(name_or_path=str(preset_models["gte"])).load_model({"num_labels": 4}, tokenizer)
    assert type(model).__name__ == "GteForSequenceClassification" and type(model).__module__.startswith("transformers.")


def four_label_model(folder: Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=4, ignore_mismatched_sizes=True)


def lora_trainable(model, model_type: str, rank: int) -> int:
    """The weights LoRA trains in ``model``: rank x (in + out) per adapted Linear layer, and the head in full."""
    import torch

    targets = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in LORA_TARGETS[model_type]]
    assert len(targets) == 2 * len(LORA_TARGETS[model_type]) and all(isinstance(m, torch.nn.Linear) for m in targets)
    head = sum(p.numel() for name in HEADS[model_type] for p in getattr(model, name).parameters())
    return sum(rank * (m.in_features + m.out_features) for m in targets) + head


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_lora_adapts_each_architectures_attention_and_trains_its_head_in_full(model_type, preset_models):
    from finetune.training.adapters import Lora, default_target_modules, head_modules, parameter_counts

    model = four_label_model(preset_models[model_type])
    assert default_target_modules(model) == LORA_TARGETS[model_type] and head_modules(model) == HEADS[model_type]
    expected = lora_trainable(model, model_type, rank=4)
    wrapped = Lora(r=4, lora_alpha=8, lora_dropout=0.0).wrap(model)
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)
    assert parameter_counts(wrapped)["trainable"] == expected


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_the_few_label_head_starts_from_the_class_means_on_each_architecture(model_type, preset_models):
    """EuroBERT's head scores every token and averages the scores (classifier_pooling: late): its class means
    are of the tokens' mean."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from finetune.tasks.single_label import SingleLabel
    from finetune.training.prototypes import init_from_prototypes

    tokenizer = AutoTokenizer.from_pretrained(preset_models[model_type])
    model = four_label_model(preset_models[model_type]).eval()
    rows = topic_rows(40, seed=9)
    train = Dataset.from_dict(
        {**tokenizer([r["text"] for r in rows]), "label": [list(TOPICS).index(r["label"]) for r in rows]}
    )
    kind = SingleLabel(list(TOPICS))
    init_from_prototypes(model, kind, train, DataCollatorWithPadding(tokenizer))
    head = kind.head(model)
    assert torch.all(head.bias == 0) and torch.allclose(head.weight.norm(dim=1), head.weight.norm(dim=1)[0])
    with torch.no_grad():
        predicted = model(**tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")).logits.argmax(-1)
    accuracy = (predicted.numpy() == np.array(train["label"])).mean()
    assert accuracy >= 0.5, accuracy  # chance is 0.25: the class means of a random body already tell them apart


def test_a_run_that_cuts_many_rows_names_the_models_longer_reach(preset_models):
    from transformers import AutoTokenizer

    from finetune.training.model import longer_context

    tokenizer = AutoTokenizer.from_pretrained(preset_models["modernbert"])
    lengths = {"share_over_max_length": 0.62, "p90_tokens": 700.0}
    assert longer_context(lengths, 128, tokenizer) == (
        "The model reads up to 8,192 tokens and 62% of the train rows are longer than task.max_length=128: "
        "task.max_length=704 reads 90% of them whole (time and memory grow with it)."
    )
    assert "task.max_length=8192, its most," in longer_context({**lengths, "p90_tokens": 9000.0}, 128, tokenizer)
    assert longer_context({**lengths, "share_over_max_length": 0.04}, 128, tokenizer) is None  # few cut
    assert longer_context(lengths, LONG_CONTEXT, tokenizer) is None  # no further to reach


# --- each architecture's tiny run ---------------------------------------------------------------
@pytest.mark.trains
def test_each_architecture_trains_through_run_py_and_scores_documents_past_512_tokens_whole(preset_run):
    model_type, run_dir = preset_run
    metrics = read_json(run_dir / "metrics.json")
    # chance is 0.25; EuroBERT averages every token's scores, so 520 filler words weigh on a long document's answer
    assert metrics["test"]["accuracy"] >= 0.75 and metrics["test"]["rows"] == 40
    lengths = metrics["train"]["token_lengths"]
    assert all(lengths[split]["max_length"] == MAX_LENGTH for split in ("train", "validation", "test"))
    assert all(lengths[split]["share_over_max_length"] == 0.0 for split in lengths)  # no row cut
    assert lengths["test"]["p90_tokens"] > 512  # a fifth of the test rows, past BERT's reach, scored whole
    losses = read_scalars(run_dir / "logs")["train/loss"]
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])  # the loss went down
    assert read_json(run_dir / "model" / "config.json")["model_type"] == model_type
    assert read_json(run_dir / "model" / "finetune.json")["max_length"] == MAX_LENGTH


@pytest.mark.trains
# Through run.py on the fused-attention architecture (ModernBERT's Wqkv); every architecture's adapters and head
# are checked in process by test_lora_adapts_each_architectures_attention_and_trains_its_head_in_full.
@pytest.mark.parametrize("model_type", ["modernbert"])
def test_lora_trains_through_run_py_on_its_default_targets(model_type, preset_models, topic_files, tmp_path):
    run_dir = tmp_path / "lora"
    result = run_py(
        "task=ag_news",
        f"model={model_type}",
        f"model.name_or_path={preset_models[model_type]}",
        f"task.data_files.train={topic_files['train']}",
        f"task.data_files.test={topic_files['test']}",
        "task.validation_size=0.2",
        f"hydra.run.dir={run_dir}",
        "hardware=cpu",
        "task.examples=[]",
        "peft=lora",
        *tiny_training(  # no evaluation, checkpoint or calibration while training: the adapters are what is tested
            trainer__learning_rate=1e-2,
            trainer__eval_strategy="no",
            trainer__save_strategy="no",
            trainer__load_best_model_at_end="false",
            task__calibration="none",
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.output[-4000:]
    targets, head = ", ".join(LORA_TARGETS[model_type]), ", ".join(HEADS[model_type])
    assert f"LoRA r=8, alpha=16 on {targets}; trained in full: {head}" in result.output
    adapter = read_json(run_dir / "adapter" / "adapter_config.json")
    assert sorted(adapter["target_modules"]) == sorted(LORA_TARGETS[model_type])
    assert not (run_dir / "model" / "adapter_config.json").exists()  # merged: a plain model
    metrics = read_json(run_dir / "metrics.json")
    trainable = lora_trainable(four_label_model(preset_models[model_type]), model_type, rank=8)
    assert metrics["train"]["parameters"]["trainable"] == trainable < metrics["train"]["parameters"]["total"] / 5
    losses = read_scalars(run_dir / "logs")["train/loss"]
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])  # the loss went down
    assert metrics["test"]["accuracy"] >= 0.8  # chance is 0.25


@pytest.mark.trains
def test_each_architecture_exports_to_onnx_matching_pytorch_on_long_texts(preset_run, tmp_path):
    from finetune import Predictor
    from finetune.serving.export import main as export_main

    model_type, run_dir = preset_run
    export_dir = tmp_path / "export"
    assert export_main([str(run_dir), "--output", str(export_dir), "--threads", "1"]) == 0
    record = read_json(export_dir / "export.json")
    assert record["source"]["model_type"] == model_type and (export_dir / "model.onnx").stat().st_size > 0
    parity = record["parity"]
    assert parity["max_abs_logit_difference"] < 1e-4 and parity["agreement"] == 1.0
    onnx = Predictor.load(export_dir, backend="onnx", threads=1)
    pytorch = Predictor.load(run_dir, backend="torch", precision="fp32")
    assert onnx.max_length == pytorch.max_length == MAX_LENGTH
    for got, expected in zip(onnx([SHORT, LONG]), pytorch([SHORT, LONG])):
        assert np.allclose(as_scores(got), as_scores(expected), atol=1e-5)


@pytest.mark.trains
def test_each_architecture_predicts_long_texts_whole_from_the_command_line(preset_run, tmp_path):
    """``python -m finetune.predict --input --output`` (its main, in this process)."""
    from finetune.serving.predict import main as predict_main

    _, run_dir = preset_run
    source = write_csv(tmp_path / "texts.csv", [{"text": SHORT}, {"text": LONG}])
    output = tmp_path / "predicted.jsonl"
    assert predict_main([str(run_dir), "--input", str(source), "--output", str(output), "--precision", "fp32"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["text"] for r in rows] == [SHORT, LONG]
    (short, _), (whole, cut) = whole_and_cut(run_dir / "model", SHORT), whole_and_cut(run_dir / "model", LONG)
    for row, scores in zip(rows, (short, whole)):  # each row's answer: the one label among its values
        assert [v for v in row.values() if v in TOPICS] == [list(TOPICS)[int(scores.argmax())]]
    confidence = [v for v in rows[1].values() if isinstance(v, float)]
    assert confidence and abs(confidence[0] - whole.max()) < np.abs(whole - cut).max() / 10  # read whole, not cut


@pytest.mark.trains
def test_each_architecture_serves_long_texts_as_it_reads_them_whole(preset_run):
    _, run_dir = preset_run
    with served(run_dir, precision="fp32") as url:
        status, answers = call(url, "/predict", {"texts": [SHORT, LONG]})
        assert status == 200
        status, info = call(url, "/info")
    assert status == 200 and info["max_length"] == MAX_LENGTH and info["labels"] == list(TOPICS)
    (short, _), (whole, cut) = whole_and_cut(run_dir / "model", SHORT), whole_and_cut(run_dir / "model", LONG)
    assert np.allclose(as_scores(answers[0]), short, atol=1e-5)
    assert np.abs(as_scores(answers[1]) - whole).max() < np.abs(whole - cut).max() / 10  # read whole, not cut


def test_the_contrastive_stage_pulls_a_class_together_and_leaves_the_pooling_and_head_alone(tiny_models, tmp_path):
    """SetFit's objective on the body's mean-pooled tokens (model.contrastive_pairs): one class's rows come closer
    than two classes' rows were; the folded pooling layer and the head take no part."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from finetune.tasks.single_label import SingleLabel
    from finetune.training.contrastive import contrastive_stage
    from finetune.training.prototypes import fold_mean_pooling, token_mean

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    model = four_label_model(tiny_models["bert"])
    assert fold_mean_pooling(model)
    rows = topic_rows(40, seed=9)
    train = Dataset.from_dict(
        {**tokenizer([r["text"] for r in rows]), "label": [list(TOPICS).index(r["label"]) for r in rows]}
    )
    labels = torch.tensor(train["label"])
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")

    def gap() -> float:
        """Mean cosine of one class's pairs minus that of two classes' pairs, on the body's mean-pooled tokens."""
        model.eval()
        with torch.no_grad():
            tokens = model.base_model(**batch, output_hidden_states=True).hidden_states[-2]  # before the folded layer
        features = torch.nn.functional.normalize(token_mean(tokens, batch["attention_mask"]), dim=1)
        cosines = features @ features.T
        return float(cosines[same].mean() - cosines[~same & ~torch.eye(len(labels), dtype=torch.bool)].mean())

    untouched = {n: p.detach().clone() for n, p in model.named_parameters() if "layer.2." in n or "classifier" in n}
    before = gap()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, seed=3, report_to=[], learning_rate=1.0)
    pad = DataCollatorWithPadding(tokenizer)
    said = contrastive_stage(model, SingleLabel(list(TOPICS)), train, pad, args, pairs=320, folded=True)
    assert said == "the body trained first on 320 pairs of training rows (SetFit's contrastive objective)"
    # 20 steps at SetFit's learning rate move a random body a little, always the same way: pinned
    assert (before, gap()) == (pytest.approx(0.0308, abs=2e-4), pytest.approx(0.0336, abs=2e-4))
    assert all(torch.equal(p, untouched[n]) for n, p in model.named_parameters() if n in untouched)
    assert args.learning_rate == 1.0  # the run's arguments are the run's: the stage trains with a copy
