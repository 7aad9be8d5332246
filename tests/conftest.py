"""Shared fixtures: generated data sets and tiny random models of each architecture, all offline."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

# Offline before any Hugging Face library is imported: a hub lookup must fail at once, not retry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FINETUNE_SHARED_DATA", REPO.parent / "shared" / "data"))

TOPICS = {  # label name -> words only that class uses; each text mixes them with shared filler
    "World": ["treaty", "minister", "election", "border", "embassy", "rebels"],
    "Sports": ["match", "coach", "league", "goal", "season", "striker"],
    "Business": ["shares", "profit", "market", "merger", "investors", "quarterly"],
    "Sci/Tech": ["software", "chip", "internet", "laboratory", "satellite", "robot"],
}
FILLER = ["the", "a", "on", "in", "after", "new", "report", "said", "today", "week", "big", "people"]
PAIR_WORDS = ["dog", "cat", "car", "house", "tree", "river", "city", "man", "woman", "child"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER) | set(PAIR_WORDS) | {"yes", "no", '"'})

TINY_CONFIGS = {  # model_type -> AutoConfig.for_model kwargs: 2 layers, 64 wide (32 learns too unreliably)
    "bert": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=66),
    "distilbert": dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=66),
    "roberta": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=66),
    "xlnet": dict(d_model=64, n_layer=2, n_head=2, d_inner=128),  # relative positions: no length limit
    "deberta": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=66),
}


def topic_rows(n: int, seed: int) -> List[Dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(TOPICS)[i % len(TOPICS)]
        words = rng.sample(TOPICS[label], 4) + rng.sample(FILLER, 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: List[Dict], delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter, quoting=quoting, quotechar=None if quoting == csv.QUOTE_NONE else '"')
        writer.writeheader()
        writer.writerows(rows)
    return path


def pair_rows(n: int, seed: int, labeled: bool = True) -> List[Dict[str, str]]:
    """GLUE-RTE-like rows: the pair is entailed when the second sentence says "yes"."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        entailed = i % 2 == 0
        first = " ".join(rng.sample(PAIR_WORDS, 5))
        second = " ".join(rng.sample(PAIR_WORDS, 3) + ["yes" if entailed else "no"])
        row = {"index": str(i), "sentence1": ('"' if i % 7 == 0 else "") + first, "sentence2": second}
        if labeled:  # like GLUE's train.tsv: the label name, and (an extra column) its id
            row["label"] = "entailment" if entailed else "not_entailment"
            row["label_id"] = str(int(not entailed))
        rows.append(row)
    return rows


@pytest.fixture(scope="session")
def topic_files(tmp_path_factory) -> Dict[str, Path]:
    """AG-News-like train.csv (label names) and test.csv (label ids), easy to learn."""
    folder = tmp_path_factory.mktemp("topics")
    test = [{"text": r["text"], "label": list(TOPICS).index(r["label"])} for r in topic_rows(40, seed=2)]
    return {"train": write_csv(folder / "train.csv", topic_rows(200, seed=1)), "test": write_csv(folder / "test.csv", test)}


def glue_tsv_files(folder: Path, train: List[Dict], test: List[Dict]) -> Dict[str, Path]:
    """train.tsv and test.tsv as GLUE ships them: tab-separated, unquoted."""
    return {split: write_csv(folder / f"{split}.tsv", rows, "\t", csv.QUOTE_NONE) for split, rows in (("train", train), ("test", test))}


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory) -> Dict[str, Path]:
    """RTE-like train.tsv and an unlabeled test.tsv, unquoted like GLUE's (one field starts with a bare quote)."""
    return glue_tsv_files(tmp_path_factory.mktemp("pairs"), pair_rows(160, seed=3), pair_rows(30, seed=4, labeled=False))


def save_tokenizer(folder: Path, padding_side: str = "right") -> None:
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    BertTokenizerFast(vocab=vocab, model_max_length=64, padding_side=padding_side).save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Dict[str, Path]:
    """A random 2-layer model of each architecture, saved with a small WordPiece tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("models")
    folders = {}
    for model_type, sizes in TINY_CONFIGS.items():
        torch.manual_seed(0)
        config = AutoConfig.for_model(model_type, vocab_size=len(VOCAB), pad_token_id=0, **sizes)
        folder = root / model_type
        AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
        save_tokenizer(folder, padding_side="left" if model_type == "xlnet" else "right")  # XLNet pads on the left
        folders[model_type] = folder
    return folders


def read_scalars(log_dir: Path) -> Dict[str, List[float]]:
    """TensorBoard scalars written into ``log_dir``, by tag, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: Dict[str, List[float]] = {}
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return scalars


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def multi_label_rows(n: int, seed: int) -> List[Dict[str, str]]:
    """GoEmotions-like rows: each text mixes the words of one or two topics, labeled with both ("World,Sports")."""
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = []
    for i in range(n):
        labels = [names[i % 4]] + ([names[(i // 4) % 4]] if i % 3 == 0 and (i // 4) % 4 != i % 4 else [])
        words = [w for label in labels for w in rng.sample(TOPICS[label], 3)] + rng.sample(FILLER, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": ",".join(labels)})
    return rows


def score_rows(n: int, seed: int, labeled: bool = True) -> List[Dict[str, str]]:
    """STS-B-like rows: the score is the number of "yes" in the second sentence (0-3), as GLUE's TSV lays it out."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        score = i % 4
        row = {"index": str(i), "sentence1": " ".join(rng.sample(PAIR_WORDS, 4)), "sentence2": " ".join(rng.sample(PAIR_WORDS, 3) + ["yes"] * score)}
        if labeled:
            row["score"] = f"{score:.3f}"
        rows.append(row)
    return rows


@pytest.fixture(scope="session")
def multi_label_files(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("multi_label")
    return {"train": write_csv(folder / "train.csv", multi_label_rows(200, seed=21)), "test": write_csv(folder / "test.csv", multi_label_rows(40, seed=22))}


@pytest.fixture(scope="session")
def regression_files(tmp_path_factory) -> Dict[str, Path]:
    """STS-B-like train.tsv (scores) and an unlabeled test.tsv."""
    return glue_tsv_files(tmp_path_factory.mktemp("regression"), score_rows(160, seed=23), score_rows(20, seed=24, labeled=False))


TINY_TRAINING = [  # small, quick and still learning: the synthetic classes are separable by keywords
    "trainer=fast",
    "trainer.num_train_epochs=4",
    "trainer.learning_rate=2e-3",
    "trainer.per_device_train_batch_size=8",
    "trainer.logging_steps=2",
    "task.max_length=32",
]


def run_py(*args: str, cwd: Path, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    result.output = result.stdout + result.stderr
    return result


def topic_args(topic_files, model_dir: Path, run_dir: Path):
    return [
        "task=ag_news", "model=distilbert", f"model.name_or_path={model_dir}",
        f"task.data_files.train={topic_files['train']}", f"task.data_files.test={topic_files['test']}",
        "task.validation_size=0.2", f"hydra.run.dir={run_dir}", *TINY_TRAINING,
    ]


def compose_config(*overrides: str, with_hydra: bool = False):
    """The run's config as run.py composes it from conf/, with ``overrides`` (``with_hydra``: and Hydra's own node)."""
    from hydra import compose, initialize_config_dir

    from finetune.config import register_configs, register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)
