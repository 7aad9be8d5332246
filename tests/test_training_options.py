"""LoRA, early stopping, callbacks from the config, experiment trackers and the memory knobs,
through the real run.py."""

import json
import signal
import threading
from pathlib import Path

import pytest

from finetune.config.checks import validate
from finetune.config.resolvers import register_resolvers
from finetune.config.schemas import register_configs
from finetune.errors import FinetuneError
from tests.helpers import TINY_CONFIGS, TOPICS, compose_config, read_json, read_scalars, run_py, topic_args, topic_rows

register_configs()
register_resolvers()

# An evaluation and a checkpoint every 10 steps (20 steps an epoch, 4 epochs); nothing counts as an
# improvement (threshold 10 on accuracy), so with patience 2 the third evaluation stops the run.
EARLY_STOPPING = [
    "callbacks=early_stopping",
    "callbacks.early_stopping.early_stopping_patience=2",
    "callbacks.early_stopping.early_stopping_threshold=10",
    "trainer.eval_strategy=steps",
    "trainer.save_strategy=steps",
    "trainer.eval_steps=10",
    "trainer.save_steps=10",
]
LORA = ["peft=lora", "trainer.learning_rate=1e-2"]
TEXTS = [row["text"] for row in topic_rows(12, seed=5)]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, topic_files, tiny_models):
    """LoRA with early stopping, crashed (SIGKILL) right after its step-20 checkpoint, then resumed."""
    cwd = tmp_path_factory.mktemp("lora")
    run_dir = cwd / "run"
    args = [
        *topic_args(topic_files, tiny_models["bert"], run_dir),
        "hardware=cpu",
        "task.examples=[]",
        *LORA,
        *EARLY_STOPPING,
        "trainer.eval_accumulation_steps=1",
        "+callbacks.crash._target_=tests.callbacks.KillAfterSave",
        "+callbacks.crash.step=20",
    ]
    crashed = run_py(*args, cwd=cwd)
    assert crashed.returncode == -signal.SIGKILL, crashed.output[-4000:]
    assert (
        run_dir / "checkpoints" / "checkpoint-20" / "adapter_model.safetensors"
    ).is_file()  # a LoRA checkpoint holds the adapter
    assert not (run_dir / "checkpoints" / "checkpoint-30").exists()
    resumed = run_py(f"resume={run_dir}", cwd=cwd)
    assert resumed.returncode == 0, resumed.output[-4000:]
    return resumed, run_dir


@pytest.mark.trains
def test_lora_trains_the_adapters_and_the_head_only(lora_run):
    result, run_dir = lora_run
    sizes = TINY_CONFIGS["bert"]
    hidden, layers, rank, labels = sizes["hidden_size"], sizes["num_hidden_layers"], 8, len(TOPICS)
    adapters = layers * 2 * rank * (hidden + hidden)  # A (r x in) and B (out x r) on query and value of each layer
    head = hidden * labels + labels
    parameters = read_json(run_dir / "metrics.json")["train"]["parameters"]
    assert parameters["trainable"] == adapters + head
    assert parameters["total"] > 10 * parameters["trainable"]
    assert f"Parameters: {adapters + head:,} trainable of {parameters['total']:,}" in result.output
    assert "LoRA r=8, alpha=16 on query, value; trained in full: classifier" in result.output
    card = (run_dir / "model" / "README.md").read_text()
    assert "| fine-tuning | LoRA (r=8, alpha=16, dropout=0.1, on the architecture's defaults), merged |" in card
    assert f"| trainable parameters | {adapters + head:,} of {parameters['total']:,} |" in card


@pytest.mark.trains
def test_the_merged_model_is_a_plain_model_predicting_as_the_adapter_does(lora_run, tiny_models):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    _, run_dir = lora_run
    assert (
        not (run_dir / "model" / "adapter_config.json").exists() and (run_dir / "model" / "model.safetensors").is_file()
    )
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (run_dir / "adapter").iterdir()}
    merged = pipeline("text-classification", model=str(run_dir / "model"), top_k=None)(TEXTS)

    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_models["bert"], num_labels=len(TOPICS), ignore_mismatched_sizes=True
    )
    unmerged = PeftModel.from_pretrained(
        base, str(run_dir / "adapter")
    ).eval()  # the model as it trained: base + adapter + head
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    # The run folded its calibration temperatures into the merged head (model/calibration.json);
    # the adapter is as trained.
    calibration = run_dir / "model" / "calibration.json"
    temperatures = (
        list(read_json(calibration)["temperatures"].values()) if calibration.is_file() else [1.0] * len(TOPICS)
    )
    with torch.no_grad():
        probabilities = (
            unmerged(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits / torch.tensor(temperatures)
        ).softmax(-1)
    names = list(TOPICS)
    for text_scores, expected in zip(merged, probabilities):
        got = {s["label"]: s["score"] for s in text_scores}
        assert [got[name] for name in names] == pytest.approx(expected.tolist(), abs=1e-5)
    assert len({max(s, key=lambda s: s["score"])["label"] for s in merged}) > 1  # a trained head, not a constant


@pytest.mark.trains
def test_early_stopping_stops_at_the_expected_evaluation_and_keeps_its_count_across_a_resume(lora_run):
    """Evaluations at steps 10 and 20 (the crash), then 30:
    the count of 1 saved at step 20 makes 30 the stop (not 40)."""
    result, run_dir = lora_run
    metrics = read_json(run_dir / "metrics.json")
    stop = metrics["train"]["early_stopping"]
    assert stop["stopped"] is True and (stop["evaluation"], stop["step"], stop["patience"], stop["threshold"]) == (
        3,
        30,
        2,
        10,
    )
    assert stop["metric"] == "eval_accuracy" and metrics["train"]["steps"] == 30
    assert (
        "Early stopping at evaluation 3 (step 30, epoch 1.50): eval_accuracy has not improved on the best"
        in result.output
    )
    assert metrics["validation"]["accuracy"] == pytest.approx(
        stop["best"]
    )  # the best checkpoint was kept, not the last


@pytest.fixture(scope="module")
def knobs_run(tmp_path_factory, topic_files, tiny_models):
    """Full fine-tuning with the memory knobs, a recording callback from the command line, MLflow and W&B (offline)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    cwd = tmp_path_factory.mktemp("knobs")
    run_dir, calls = cwd / "run", cwd / "calls.jsonl"
    args = [
        *topic_args(topic_files, tiny_models["distilbert"], run_dir),
        "hardware=cpu",
        "task.examples=[]",
        "trainer.num_train_epochs=2",
        "trainer.gradient_checkpointing=true",
        "trainer.auto_find_batch_size=true",
        "trainer.eval_accumulation_steps=2",
        "+callbacks.out_of_memory._target_=tests.callbacks.OutOfMemoryAbove",
        "+callbacks.out_of_memory.batch_size=4",
        "+callbacks.record._target_=tests.callbacks.RecordCalls",
        f"+callbacks.record.path={calls}",
        "trainer.report_to=[tensorboard,mlflow,wandb]",
    ]
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(cwd),
        "WANDB_SILENT": "true",
    }
    result = run_py(*args, cwd=cwd, env=env)
    assert result.returncode == 0, result.output[-4000:]
    return result, run_dir, cwd, [json.loads(line) for line in calls.read_text().splitlines()]


@pytest.mark.trains
def test_a_callback_from_the_command_line_is_called(knobs_run):
    _, _, _, calls = knobs_run
    assert calls[-1] == {"event": "train_end", "step": 80, "batch_size": 4}
    assert [c["step"] for c in calls if c["event"] == "evaluate"] == [40, 80]  # the two epochs, at batch 4


@pytest.mark.trains
def test_auto_find_batch_size_lowers_the_batch_not_the_accumulation(knobs_run):
    """Batches above 4 "run out of memory": the Trainer tries 8, 7, 6, 5 and trains with 4, the first that fits."""
    _, run_dir, _, calls = knobs_run
    assert [c["batch_size"] for c in calls if c["event"] == "train_begin"] == [8, 7, 6, 5, 4]
    train = read_json(run_dir / "metrics.json")["train"]
    assert train["batch_size"] == 4 and train["steps"] == 80  # 160 rows / 4, 2 epochs: no accumulation added
    assert train["tokens"] == 2 * 160 * 9  # counted once per row and epoch, not for the failed tries (9 tokens a row)
    assert read_json(run_dir / "metrics.json")["test"]["accuracy"] >= 0.6  # gradient checkpointing still learns


@pytest.mark.trains
def test_mlflow_holds_the_run_with_its_flat_config_final_scores_and_model_card(knobs_run):
    import mlflow

    _, run_dir, cwd, _ = knobs_run
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    params = run.data.params
    assert (
        params["config.task.max_length"] == "32"
        and params["config.peft._target_"] == "finetune.training.adapters.FullFineTuning"
    )
    assert json.loads(params["config.task.label_names"]) == list(TOPICS)
    assert params["config.callbacks.record._target_"] == "tests.callbacks.RecordCalls"
    metrics = read_json(run_dir / "metrics.json")
    assert run.data.metrics["final/test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert run.data.metrics["final/train_batch_size"] == 4
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_accuracy")] == [40, 80]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"README.md", "metrics.json"}


@pytest.mark.trains
def test_the_listed_tensorboard_callback_serves_report_to_beside_the_trackers(knobs_run):
    _, run_dir, _, _ = knobs_run
    assert len(read_scalars(run_dir / "logs")["eval/accuracy"]) == 2
    assert not (run_dir / "checkpoints" / "runs").exists()  # no second, default TensorBoard folder


@pytest.mark.trains
def test_wandb_offline_keeps_the_run_with_its_files(knobs_run):
    _, run_dir, cwd, _ = knobs_run
    [offline] = (cwd / "wandb").glob("offline-run-*")
    assert (offline / "files" / "README.md").read_text() == (run_dir / "model" / "README.md").read_text()
    assert (offline / "files" / "metrics.json").is_file()


def test_flat_params_are_resolved_text_within_the_trackers_limit():
    from omegaconf import OmegaConf

    from finetune.training.trackers import flat_params

    cfg = OmegaConf.create(
        {"seed": 3, "task": {"label_names": [f"label_{i}" for i in range(1000)], "max_length": "${seed}", "files": {}}}
    )
    params = flat_params(cfg, max_length=6000)
    assert params["seed"] == "3" and params["task.max_length"] == "3" and params["task.files"] == "{}"
    assert (
        len(params["task.label_names"]) == 6000
        and params["task.label_names"].startswith('["label_0", ')
        and params["task.label_names"].endswith("...")
    )


@pytest.mark.parametrize(
    "model_type, targets, head",
    [
        ("bert", ["query", "value"], ["classifier"]),
        ("roberta", ["query", "value"], ["classifier"]),
        ("distilbert", ["q_lin", "v_lin"], ["pre_classifier", "classifier"]),
        ("deberta", ["in_proj"], ["pooler", "classifier"]),
        ("xlnet", ["layer_1", "layer_2"], ["sequence_summary", "logits_proj"]),
    ],
)
def test_lora_defaults_of_each_architecture(model_type, targets, head, tiny_models):
    from transformers import AutoModelForSequenceClassification

    from finetune.training.adapters import Lora, default_target_modules, head_modules, parameter_counts

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_models[model_type], num_labels=4, ignore_mismatched_sizes=True
    )
    assert default_target_modules(model) == targets and head_modules(model) == head
    head_size = sum(p.numel() for name in head for p in getattr(model, name).parameters())
    wrapped = Lora(r=4, lora_alpha=8, lora_dropout=0.0).wrap(model)
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "modules_to_save" in name for name in trainable)
    adapters = sum(p.numel() for name, p in wrapped.named_parameters() if "lora_" in name)
    assert parameter_counts(wrapped)["trainable"] == adapters + head_size


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["callbacks=early_stopping", "trainer.load_best_model_at_end=false"],
            "without trainer.load_best_model_at_end=true the run would keep the last",
        ),
        (
            ["callbacks=early_stopping", "trainer.eval_strategy=no", "trainer.load_best_model_at_end=false"],
            "set trainer.eval_strategy=epoch",
        ),
        (
            ["callbacks=early_stopping", "trainer.save_strategy=steps"],
            "trainer.save_strategy=steps differs from trainer.eval_strategy=epoch",
        ),
        (
            ["callbacks=early_stopping", "callbacks.early_stopping.early_stopping_patience=0"],
            "callbacks.early_stopping.early_stopping_patience=0: must be an integer >= 1",
        ),
        (["+trainer.early_stopping_patience=3"], "Early stopping is a callback: callbacks=early_stopping"),
        (["+callbacks.mine=3"], "callbacks.mine must be a node with a _target_"),
        (["peft.r=16"], "peft.r is a LoRA setting, but this run fine-tunes every weight: add peft=lora."),
        (["peft=lora", "peft.lora_dropout=1.5"], "peft.lora_dropout=1.5: must be a number in [0, 1)"),
    ],
)
def test_inconsistent_settings_are_refused_before_any_work(overrides, message):
    with pytest.raises(FinetuneError) as error:
        validate(compose_config(*overrides))
    assert message in str(error.value)


def test_the_default_callbacks_are_listed_with_their_classes():
    """The presets list what a user may remove; the signal stop, which every run has, is not among them."""
    cfg = compose_config("callbacks=early_stopping")
    assert {name: node._target_ for name, node in cfg.callbacks.items()} == {
        "stop_on_non_finite_loss": "finetune.training.callbacks.StopOnNonFiniteLoss",
        "tensorboard": "finetune.training.callbacks.ResumableTensorBoard",
        "early_stopping": "finetune.training.callbacks.EarlyStopping",
    }
    validate(cfg)
    validate(compose_config("~callbacks.stop_on_non_finite_loss", "~callbacks.tensorboard"))  # both optional


# The signal stop (StopOnSignal) as the presets of older versions and the saved configs of their runs list it.
LISTED_STOP_ON_SIGNAL = {
    "now": "+callbacks.stop_on_signal._target_=finetune.training.callbacks.StopOnSignal",
    "before the package was split": "+callbacks.stop_on_signal._target_=finetune.callbacks.StopOnSignal",
}


@pytest.mark.parametrize("listed", LISTED_STOP_ON_SIGNAL.values(), ids=LISTED_STOP_ON_SIGNAL)
def test_a_preset_that_still_lists_stop_on_signal_is_valid(listed):
    validate(compose_config(listed))


def test_the_callbacks_every_run_has_are_named_where_the_config_code_reads_them():
    from finetune.config.checks import RUN_CALLBACK_TARGETS
    from finetune.training.callbacks import RUN_CALLBACKS

    assert RUN_CALLBACK_TARGETS == tuple(f"{c.__module__}.{c.__qualname__}" for c in RUN_CALLBACKS)


def tiny_trainer(tmp_path, model_folder, callbacks, max_steps=8):
    """A TaskTrainer on 32 topic rows through build_trainer, as train.py builds it: batches of 4, no checkpoint
    of its own before ``max_steps``, no tracker."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from finetune.tasks.registry import KINDS
    from finetune.training.trainer import build_trainer

    names = list(TOPICS)
    rows = topic_rows(32, seed=7)
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    data = Dataset.from_dict(
        {"text": [r["text"] for r in rows], "labels": [names.index(r["label"]) for r in rows]}
    ).map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
    kind = KINDS["single_label"](names)
    kind.fit(data["labels"])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_folder, num_labels=len(names), ignore_mismatched_sizes=True
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "checkpoints"),
        use_cpu=True,
        per_device_train_batch_size=4,
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=max_steps,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    return build_trainer(args, model, tokenizer, data, data, kind, callbacks)


def config_callbacks(*overrides):
    from finetune.config.schemas import with_schemas
    from finetune.training.callbacks import instantiate_callbacks

    return instantiate_callbacks(with_schemas(compose_config(*overrides)).callbacks)  # as finetune/launch.py reads it


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [LISTED_STOP_ON_SIGNAL["now"]],
        [LISTED_STOP_ON_SIGNAL["before the package was split"]],
        [LISTED_STOP_ON_SIGNAL["now"], "+callbacks.again._target_=finetune.training.callbacks.StopOnSignal"],
    ],
    ids=["not listed", "listed", "listed by its old name", "listed twice"],
)
def test_every_trainer_has_one_stop_on_signal_the_listed_one_if_any(overrides, tmp_path, tiny_models):
    from finetune.training.callbacks import StopOnNonFiniteLoss, StopOnSignal

    callbacks = config_callbacks(*overrides)
    listed = [c for c in callbacks if isinstance(c, StopOnSignal)]
    trainer = tiny_trainer(tmp_path, tiny_models["bert"], callbacks)
    handler = trainer.callback_handler.callbacks
    assert [c for c in handler if isinstance(c, StopOnSignal)] == [trainer.stop]
    assert trainer.stop.signum is None and (not listed or trainer.stop is listed[0])  # the config's own, if listed
    assert sum(isinstance(c, StopOnNonFiniteLoss) for c in handler) == 1  # the preset's others, as listed


@pytest.mark.trains
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_run_whose_config_lists_no_stop_on_signal_and_saves_a_checkpoint(
    signum, tmp_path, tiny_models
):
    from transformers import TrainerCallback

    class SignalAtStep3(TrainerCallback):  # a Ctrl-C or kill while step 3 runs
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                signal.raise_signal(signum)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    assert "stop_on_signal" not in compose_config().callbacks
    trainer = tiny_trainer(tmp_path, tiny_models["bert"], [*config_callbacks(), SignalAtStep3()])
    before = signal.getsignal(signum)
    trainer.train()
    assert trainer.stop.signum == signum and trainer.state.global_step == 3  # the step finished, then the stop
    assert (tmp_path / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    assert signal.getsignal(signum) is before  # the handlers are given back when training ends


def saved_run(tmp_path, saved) -> Path:
    """A stopped run's folder: its saved config and a complete checkpoint."""
    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(saved, run_dir / ".hydra" / "config.yaml")
    return run_dir


@pytest.mark.parametrize("listed", LISTED_STOP_ON_SIGNAL.values(), ids=LISTED_STOP_ON_SIGNAL)
def test_resume_true_continues_a_run_saved_when_the_presets_listed_stop_on_signal(listed, tmp_path):
    """The saved config lists stop_on_signal, the same command line composes none now: no change to refuse."""
    from finetune.runs.resume import resumed_config

    saved = compose_config(listed)
    run_dir = saved_run(tmp_path, saved)
    cfg = compose_config("resume=true")
    resumed = resumed_config(cfg, run_dir, ["resume=true"])
    assert resumed.callbacks.stop_on_signal._target_ == "finetune.training.callbacks.StopOnSignal"  # trains with it

    without_nan_stop = compose_config(listed, "~callbacks.stop_on_non_finite_loss")  # another callback: a change
    with pytest.raises(FinetuneError, match="changes callbacks.stop_on_non_finite_loss: "):
        resumed_config(cfg, saved_run(tmp_path / "other", without_nan_stop), ["resume=true"])
