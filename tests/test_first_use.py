"""What a new user meets first: defaults that learn, bad values refused before the data is read, messages
that name the file's own columns, trackers checked up front, folders a typo does not block, the device chosen."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from finetune.config.checks import validate
from finetune.config.schemas import with_schemas
from finetune.errors import FinetuneError
from tests.helpers import TINY_TRAINING, compose_config, read_json, run_py, score_rows, topic_rows, write_csv

# The tiny runs' settings without their learning rate: the preset's is the one under test.
TRAINING = [a for a in TINY_TRAINING if not a.startswith("trainer.learning_rate=")]


def tiny_run_args(tmp_path: Path, tiny_models, *extra: str):
    train = write_csv(tmp_path / "train.csv", topic_rows(40, seed=1))
    return [
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={train}",
        "task.validation_size=0.25",
        "task.examples=[]",
        *TRAINING,
        *extra,
    ]


# 1. LoRA's defaults learn


@pytest.mark.parametrize(
    "overrides, rate, why",
    [
        ([], 2e-5, "sized to the data"),
        (["peft=lora"], 2e-3, "peft.learning_rate, the fine-tuning method's default"),
        (["peft=lora", "trainer=fast"], 2e-3, "peft.learning_rate, the fine-tuning method's default"),
        (["peft=lora", "trainer.learning_rate=5e-4"], 5e-4, "trainer.learning_rate, as set"),
        (["peft=lora", "experiment=rte_seeds"], 2e-5, "trainer.learning_rate, as set"),  # the experiment pins 2e-5
        (["peft=lora", "peft.learning_rate=1e-3"], 1e-3, "peft.learning_rate"),
    ],
)
def test_lora_brings_its_learning_rate_unless_the_user_sets_one(overrides, rate, why, tmp_path):
    from finetune.training.adapters import learning_rate_note
    from finetune.training.schedule import sized_trainer
    from finetune.training.trainer import training_arguments

    cfg = with_schemas(compose_config(*overrides))
    validate(cfg)
    sized, _ = sized_trainer(5000)  # what a run of 5,000 rows fills in where the config leaves null
    assert training_arguments(cfg.trainer, sized, tmp_path).learning_rate == rate
    note = learning_rate_note(cfg.trainer, instantiate(cfg.peft, _convert_="object"))
    assert note.startswith(f"Learning rate: {rate:g} ({why}" if why != "sized to the data" else "Learning rate: sized")


def test_a_bad_lora_learning_rate_is_refused():
    with pytest.raises(FinetuneError, match=r"peft.learning_rate=-1.0: must be null \(the trainer's\) or a number > 0"):
        validate(compose_config("peft=lora", "peft.learning_rate=-1"))


# 2. Values a small file of the model can judge are refused before the data is read


@pytest.mark.trains
@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["task.max_length=512"],
            "task.max_length=512 is more than {bert} accepts (64 tokens, says tokenizer_config.json); "
            "set task.max_length=64 or less.",
        ),
        (
            ["peft=lora", "peft.target_modules=[query,qkv]"],
            "peft.target_modules: bert has no Linear layer named qkv; "
            "its Linear layers: classifier, dense, key, query, value.",
        ),
    ],
)
def test_model_limits_are_judged_before_the_data_is_read(extra, message, tmp_path, tiny_models):
    result = run_py(*tiny_run_args(tmp_path, tiny_models, *extra), f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.output.strip().splitlines()[-1].endswith(message.format(bert=tiny_models["bert"])), result.output[
        -3000:
    ]
    assert (
        "Dataset summary" not in result.output
        and "Parameters:" not in result.output
        and "Traceback" not in result.output
    )


@pytest.mark.parametrize(
    "model_type, stripped, limit",
    [
        ("bert", False, (64, "tokenizer_config.json")),
        ("bert", True, (66, "config.json")),  # 66 position embeddings
        (
            "roberta",
            True,
            (64, "config.json"),
        ),  # RoBERTa's positions start after the padding id: 2 of its 66 are not for tokens
        ("xlnet", True, (None, "")),  # relative positions: no limit
    ],
)
def test_the_length_limit_is_read_from_the_model_folder(model_type, stripped, limit, tmp_path, tiny_models):
    from finetune.training.model import PretrainedClassifier

    folder = Path(shutil.copytree(tiny_models[model_type], tmp_path / model_type))
    if stripped:
        tokenizer_config = read_json(folder / "tokenizer_config.json")
        tokenizer_config.pop("model_max_length")
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert PretrainedClassifier(name_or_path=str(folder)).length_limit() == limit


def test_lora_targets_are_checked_on_the_architecture_alone(tiny_models):
    from finetune.training.adapters import Lora
    from finetune.training.model import PretrainedClassifier

    source = PretrainedClassifier(name_or_path=str(tiny_models["distilbert"]))
    Lora(target_modules=None).check_model(source)  # q_lin, v_lin: there
    with pytest.raises(
        FinetuneError,
        match="distilbert has no Linear layer named query; "
        "its Linear layers: classifier, k_lin, lin1, lin2, out_lin, pre_classifier, q_lin, v_lin.",
    ):
        Lora(target_modules=["query"]).check_model(source)
    assert all(p.device.type == "meta" for p in source.empty_model().parameters())  # no weights were read


# 3. Messages name columns as the user's file does


def glue_file(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None)
        writer.writeheader()
        writer.writerows(rows)
    return path


def loaded(*overrides: str):
    task = instantiate(with_schemas(compose_config(*overrides)).task, _convert_="object")
    return task.load(seed=0)


def test_a_column_the_task_names_is_read_as_the_file_names_it(tmp_path):
    stsb = glue_file(
        tmp_path / "train.tsv", score_rows(40, seed=1)
    )  # GLUE's STS-B columns: ..., sentence1, sentence2, score
    splits = loaded("task=stsb", f"task.data_files.train={stsb}", "task.label_field=score")
    assert sorted(splits["train"]["label"])[-1] == 3.0
    rows = [
        {"Quality": str(i % 2), "#1 ID": str(i), "#2 ID": str(i), "#1 String": f"a b {i}", "#2 String": f"c d {i}"}
        for i in range(40)
    ]
    mrpc = glue_file(tmp_path / "mrpc.tsv", rows)
    splits = loaded("task=mrpc", f"task.data_files.train={mrpc}", "task.text_fields=['#1 String','#2 String']")
    assert sorted(splits["train"].column_names) == ["#1 String", "#2 String", "label"]
    assert all(text.startswith("a b ") for text in splits["train"]["#1 String"])


def test_a_missing_column_is_told_with_the_files_columns_and_what_the_preset_renamed(tmp_path):
    stsb = glue_file(tmp_path / "train.tsv", score_rows(40, seed=1))
    with pytest.raises(FinetuneError) as error:
        loaded("task=stsb", f"task.data_files.train={stsb}", "task.label_field=similarity")
    assert str(error.value) == (
        f"{stsb}: no label column 'similarity'. Its columns are ['index', 'sentence1', 'sentence2', 'score']; "
        "task.rename_columns reads 'score' as 'label'; set task.label_field."
    )


# 4. A tracker that refuses its store stops the run before any work


@pytest.mark.trains
def test_mlflow_refusing_a_folder_store_stops_the_run_in_one_line(tmp_path, tiny_models):
    store = tmp_path / "mlruns"
    result = run_py(
        *tiny_run_args(tmp_path, tiny_models, "trainer.report_to=[mlflow]"),
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": f"file:{store}", "MLFLOW_ALLOW_FILE_STORE": ""},
    )
    assert result.returncode == 1 and "Traceback" not in result.output and "Dataset summary" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert f"trainer.report_to names mlflow, but MLflow refuses MLFLOW_TRACKING_URI=file:{store}: " in last
    assert last.endswith(
        "Use a database store, e.g. MLFLOW_TRACKING_URI=sqlite:///mlflow.db, or leave mlflow out of trainer.report_to."
    )


# 5. A refused config leaves no run behind


@pytest.mark.trains
def test_the_corrected_command_may_use_the_folder_of_a_refused_one(tmp_path, tiny_models):
    folder = tmp_path / "X"
    args = [*tiny_run_args(tmp_path, tiny_models), f"hydra.run.dir={folder}", "trainer.max_steps=2"]
    refused = run_py(*args, "trainer.learning_rate=-1", cwd=tmp_path)
    assert refused.returncode == 1 and "trainer.learning_rate=-1: must be null (sized to the data) or a number > 0" in (
        refused.output
    )
    corrected = run_py(*args, "trainer.learning_rate=1e-3", cwd=tmp_path)
    assert corrected.returncode == 0, corrected.output[-3000:]
    assert (
        f"{folder} held a run that stopped before any work (it had only .hydra, run.log): this run replaces it."
        in corrected.output
    )
    assert (
        folder / "metrics.json"
    ).is_file() and "Learning rate: 0.001 (trainer.learning_rate, as set)" in corrected.output
    log = (folder / "run.log").read_text()
    assert "or a number > 0" not in log and log.count("Dataset summary") == 1  # the refused run's log went with it


# 6. The device: CUDA, then Apple silicon's MPS, then the CPU


@pytest.fixture
def machine(monkeypatch):
    import torch

    def has(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return has


@pytest.mark.parametrize(
    "cuda, mps, chosen", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_picks_cuda_then_mps_then_the_cpu(machine, cuda, mps, chosen):
    from finetune.devices import choose_device

    machine(cuda=cuda, mps=mps)
    assert choose_device("auto") == chosen
    assert choose_device("cpu") == "cpu"


@pytest.mark.parametrize(
    "wanted, message",
    [
        (
            "cuda",
            "hardware.device=cuda, but PyTorch sees no CUDA GPU on this machine: use auto (the best there is) or cpu.",
        ),
        (
            "mps",
            "hardware.device=mps, but PyTorch sees no Apple silicon GPU (MPS) on this machine: "
            "use auto (the best there is) or cpu.",
        ),
    ],
)
def test_a_device_that_is_not_there_is_refused(machine, wanted, message):
    from finetune.devices import choose_device

    machine(cuda=False, mps=False)
    with pytest.raises(FinetuneError) as error:
        choose_device(wanted)
    assert str(error.value) == message


def test_training_on_apple_silicon_uses_mps_in_fp32_without_the_cpu_and_cuda_levers(machine):
    from finetune.training.hardware import Hardware

    machine(cuda=False, mps=True)
    hardware = Hardware(device="auto", precision="auto", tf32=True)
    args = hardware.resolve()
    assert (args["use_cpu"], args["bf16"], args["fp16"], args["dataloader_pin_memory"], "tf32" in args) == (
        False,
        False,
        False,
        False,
        False,
    )
    assert hardware.summary()["device"] == "MPS" and not hardware.integer_dropout and hardware.padding_multiple == 1
    assert hardware.describe().startswith("Using device: MPS (Apple silicon)\nPrecision: fp32, fused AdamW: on")


def test_the_predictor_chooses_its_device_the_same_way(machine, tiny_models):
    from finetune.inference.predictor import Predictor

    machine(cuda=False, mps=False)
    assert Predictor.load(tiny_models["bert"]).describe().startswith("PyTorch on CPU")
    with pytest.raises(
        FinetuneError, match=r"--device=mps, but PyTorch sees no Apple silicon GPU \(MPS\) on this machine"
    ):
        Predictor.load(tiny_models["bert"], device="mps")
