"""What the tests share: generated data, tiny model settings, and running run.py and the commands as a user does.

Fixtures live in conftest.py; everything else a test file needs from another is here, so that no
test file imports from another.
"""

import csv
import functools
import json
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

# Offline before any Hugging Face library is imported: a hub lookup must fail at once, not retry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Under pytest-xdist, each worker (and what it starts) gets its share of the cores: workers x threads <= cores,
# else the workers' thread pools fight over them. Set before torch is imported; a value the user set wins.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)

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
    "bert": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=66
    ),
    "distilbert": dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=66),
    "roberta": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=66
    ),
    "xlnet": dict(d_model=64, n_layer=2, n_head=2, d_inner=128),  # relative positions: no length limit
    "deberta": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=66
    ),
}


# The long-context encoders of conf/model/ (ModernBERT, mmBERT and Ettin share one architecture): the
# preset -> its model_type, and each model_type's tiny settings. Rotary positions: no position table, so the
# tiny models take the real ones' 8,192 tokens; the special token ids are the test tokenizer's ([CLS] 2, [SEP] 3).
PRESET_ARCHITECTURES = {
    "modernbert": "modernbert",
    "mmbert": "modernbert",
    "ettin": "modernbert",
    "eurobert": "eurobert",
    "gte": "gte",
}
LONG_CONTEXT = 8192
TINY_ROTARY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
LONG_CONTEXT_CONFIGS = {  # ModernBERT's second layer sees 8 tokens around each (local_attention): fewer than a text has
    "modernbert": dict(TINY_ROTARY, local_attention=8, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3),
    "eurobert": dict(TINY_ROTARY, bos_token_id=2, eos_token_id=3, mask_token_id=4),
    "gte": dict(TINY_ROTARY),
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
        writer = csv.DictWriter(
            f,
            fieldnames=list(rows[0]),
            delimiter=delimiter,
            quoting=quoting,
            quotechar=None if quoting == csv.QUOTE_NONE else '"',
        )
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


def glue_tsv_files(folder: Path, train: List[Dict], test: List[Dict]) -> Dict[str, Path]:
    """train.tsv and test.tsv as GLUE ships them: tab-separated, unquoted."""
    return {
        split: write_csv(folder / f"{split}.tsv", rows, "\t", csv.QUOTE_NONE)
        for split, rows in (("train", train), ("test", test))
    }


def save_tokenizer(folder: Path, padding_side: str = "right", model_max_length: int = 64) -> None:
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    BertTokenizerFast(vocab=vocab, model_max_length=model_max_length, padding_side=padding_side).save_pretrained(folder)


def save_long_context_model(folder: Path, model_type: str) -> Path:
    """A random 2-layer model of a long-context architecture (LONG_CONTEXT_CONFIGS) with the test tokenizer,
    both accepting LONG_CONTEXT tokens as the real checkpoints do."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(VOCAB),
        pad_token_id=0,
        max_position_embeddings=LONG_CONTEXT,
        **LONG_CONTEXT_CONFIGS[model_type],
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    save_tokenizer(folder, model_max_length=LONG_CONTEXT)
    return folder


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
        row = {
            "index": str(i),
            "sentence1": " ".join(rng.sample(PAIR_WORDS, 4)),
            "sentence2": " ".join(rng.sample(PAIR_WORDS, 3) + ["yes"] * score),
        }
        if labeled:
            row["score"] = f"{score:.3f}"
        rows.append(row)
    return rows


TINY_TRAINING = [  # small, quick and still learning: the synthetic classes are separable by keywords
    "trainer=fast",
    "trainer.num_train_epochs=4",
    "trainer.learning_rate=2e-3",
    "trainer.per_device_train_batch_size=8",
    "trainer.logging_steps=2",
    "task.max_length=32",
    # what the sized defaults would choose otherwise for these few rows: an evaluation and checkpoint per
    # epoch, the best kept, a fitted temperature, a fresh head (the few-label regime has tests of its own)
    "trainer.eval_strategy=epoch",
    "trainer.save_strategy=epoch",
    "trainer.load_best_model_at_end=true",
    "task.calibration=temperature",
    "model.head=fresh",
]


FAKE_TOKEN = "hf_FakeTokenForTestsOnly0123456789"  # in the environment of the topic run: it must reach no file
MAY_START_PROCESSES = False  # set per test by conftest: only a test marked `trains` starts processes


def _started(command, cwd: Path, timeout: int, env) -> subprocess.CompletedProcess:
    assert MAY_START_PROCESSES, (
        "this test starts a process: mark it @pytest.mark.trains (pytest -m 'not trains' must stay quick)"
    )
    result = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    result.output = result.stdout + result.stderr
    return result


def run_py(*args: str, cwd: Path = REPO, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` as a user runs it; ``.output`` holds stdout and stderr together."""
    return _started([sys.executable, str(REPO / "run.py"), *args], cwd, timeout, env)


def python(*args: str, cwd: Path = REPO, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """``python ARGS``: a program of the test's own, in a fresh interpreter."""
    return _started([sys.executable, *args], cwd, timeout, env)


def program(*command: str, cwd: Path = REPO, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """Any program (an installed console script, another environment's python) with ARGS, as a user runs it."""
    return _started(list(command), cwd, timeout, env)


def cli(module: str, *args: str, cwd: Path = REPO, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """``python -m finetune.<module> ARGS`` (predict, export, compare) as a user runs it."""
    return _started([sys.executable, "-m", f"finetune.{module}", *args], cwd, timeout, env)


def start_and_wait_for_checkpoint(args, cwd: Path, run_dir: Path, step: int) -> subprocess.Popen:
    """Start run.py and return once checkpoint-<step> is complete (the Trainer writes trainer_state.json last)."""
    process = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marker = run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not marker.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {marker} before the run ended:\n{process.communicate()[0][-4000:]}")
        time.sleep(0.02)
    return process


def printed(run_dir: Path) -> Path:
    """Where conftest keeps what run.py printed for a session's run: beside its folder."""
    return run_dir.with_name(run_dir.name + ".out")


def topic_args(topic_files, model_dir: Path, run_dir: Path):
    return [
        "task=ag_news",
        "model=distilbert",
        f"model.name_or_path={model_dir}",
        f"task.data_files.train={topic_files['train']}",
        f"task.data_files.test={topic_files['test']}",
        "task.validation_size=0.2",
        f"hydra.run.dir={run_dir}",
        *TINY_TRAINING,
    ]


def compose_config(*overrides: str, with_hydra: bool = False):
    """The run's config as run.py composes it from conf/, with ``overrides`` (``with_hydra``: and Hydra's own node).

    Each caller gets a copy of its own: the tests compose the same presets many times, and composing is slow.
    """
    import copy

    # Keyed also on what composing reads besides conf/: the working folder (Hydra's runtime node) and the
    # folders of the user's own presets.
    key = (overrides, with_hydra, os.getcwd(), os.environ.get("FINETUNE_CONFIG_DIR"))
    return copy.deepcopy(_composed(*key))


@functools.lru_cache(maxsize=None)
def _composed(overrides: Tuple[str, ...], with_hydra: bool, cwd: str, config_dirs: Optional[str]):
    from hydra import compose, initialize_config_dir

    from finetune.config.resolvers import register_resolvers
    from finetune.config.schemas import register_configs

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)


def body(value) -> bytes:
    return json.dumps(value).encode()


def free_socket():
    """A listening-ready TCP socket on a free loopback port."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def call(url: str, path: str, payload=None, timeout: float = 60, headers=None):
    """(status, JSON answer) of a GET, or of a POST of ``payload`` (bytes sent as they are)."""
    import httpx

    if payload is None:
        response = httpx.get(url + path, timeout=timeout, headers=headers)
    else:
        content = payload if isinstance(payload, bytes) else body(payload)
        response = httpx.post(url + path, content=content, timeout=timeout, headers=headers)
    return response.status_code, response.json()


def wait_ready(url: str, timeout: float = 180):
    """Poll /health until ready: every answer before is 503 "loading"."""
    import time

    import httpx

    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            status, answer = call(url, "/health", timeout=5)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if status == 200:
            assert answer == {"status": "ready"} and all(s == (503, "loading") for s in seen), seen
            return seen
        seen.append((status, answer.get("status")))
        time.sleep(0.1)
    raise AssertionError(f"the server was not ready within {timeout} s")


@contextmanager
def served(path: Path, **settings):
    """The server of ``path``, in this process (uvicorn in a thread), on a free port: its URL."""
    import threading

    import uvicorn

    from finetune.serving.server import Settings, create_app

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(str(path), **settings)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
