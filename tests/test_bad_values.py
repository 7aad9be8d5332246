"""Bad setting values: each named in one line before any work starts, and no untrained model ever saved."""

from pathlib import Path
from typing import List

import pytest

from finetune.config.checks import validate
from finetune.config.ranges import RULES
from finetune.config.resolvers import register_resolvers
from finetune.config.schemas import register_configs
from finetune.errors import FinetuneError
from finetune.launch import setup_failure
from tests.helpers import compose_config, run_py, topic_rows, write_csv

register_configs()
register_resolvers()
SMALL_RUN = [
    "trainer=fast",
    "trainer.per_device_train_batch_size=8",
    "task.max_length=32",
    "task.examples=[]",
    "hardware=cpu",
]


def small_run_args(tmp_path: Path, model: Path, run: str = "run") -> List[str]:
    """A run that trains as it stands (40 rows, one short epoch): only the bad value can stop it."""
    train = write_csv(tmp_path / "train.csv", topic_rows(40, seed=1))
    return [
        f"model.name_or_path={model}",
        f"task.data_files.train={train}",
        "task.validation_size=0.25",
        f"hydra.run.dir={tmp_path}/{run}",
        *SMALL_RUN,
    ]


# id -> (the override, the key its message must name). Zero, negative, NaN, infinity, fractions
# out of range, text where a number goes and unknown choices, in every group a run reads.
CASES = {
    # task: typed by its schema, so text and NaN in an integer field fail as Hydra composes
    "max_length zero": ("task.max_length=0", "task.max_length"),
    "max_length negative": ("task.max_length=-5", "task.max_length"),
    "max_length text": ("task.max_length=abc", "task.max_length"),
    "max_length NaN": ("task.max_length=nan", "task.max_length"),
    "validation_size above 1, not whole": ("task.validation_size=1.5", "task.validation_size"),
    "validation_size zero": ("task.validation_size=0", "task.validation_size"),
    "validation_size negative": ("task.validation_size=-0.2", "task.validation_size"),
    "validation_size NaN": ("task.validation_size=nan", "task.validation_size"),
    "validation_size text": ("task.validation_size=abc", "task.validation_size"),
    "max_train_samples zero": ("task.max_train_samples=0", "task.max_train_samples"),
    "max_eval_samples negative": ("task.max_eval_samples=-1", "task.max_eval_samples"),
    "max_test_samples zero": ("task.max_test_samples=0", "task.max_test_samples"),
    # trainer: no schema, so the range rules also catch text where a number goes
    "train batch size zero": ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size"),
    "train batch size text": ("trainer.per_device_train_batch_size=abc", "trainer.per_device_train_batch_size"),
    "train batch size fraction": ("trainer.per_device_train_batch_size=8.5", "trainer.per_device_train_batch_size"),
    "eval batch size negative": ("trainer.per_device_eval_batch_size=-8", "trainer.per_device_eval_batch_size"),
    "gradient accumulation zero": ("trainer.gradient_accumulation_steps=0", "trainer.gradient_accumulation_steps"),
    "learning rate negative": ("trainer.learning_rate=-1", "trainer.learning_rate"),
    "learning rate zero": ("trainer.learning_rate=0", "trainer.learning_rate"),
    "learning rate NaN": ("trainer.learning_rate=nan", "trainer.learning_rate"),
    "learning rate infinite": ("trainer.learning_rate=inf", "trainer.learning_rate"),
    "learning rate text": ("trainer.learning_rate=abc", "trainer.learning_rate"),
    "epochs negative": ("trainer.num_train_epochs=-1", "trainer.num_train_epochs"),
    "epochs zero": ("trainer.num_train_epochs=0", "trainer.num_train_epochs"),
    "epochs NaN": ("trainer.num_train_epochs=nan", "trainer.num_train_epochs"),
    "max_steps zero": ("trainer.max_steps=0", "trainer.max_steps"),
    "warmup negative": ("trainer.warmup_steps=-0.1", "trainer.warmup_steps"),
    "warmup above 1, not whole": ("trainer.warmup_steps=2.5", "trainer.warmup_steps"),
    "weight decay negative": ("trainer.weight_decay=-0.01", "trainer.weight_decay"),
    "eval strategy unknown": ("trainer.eval_strategy=sometimes", "trainer.eval_strategy"),
    "save strategy unknown": ("trainer.save_strategy=always", "trainer.save_strategy"),
    "logging steps zero": ("trainer.logging_steps=0", "trainer.logging_steps"),
    "save steps above 1, not whole": ("trainer.save_steps=1.5", "trainer.save_steps"),
    "save_total_limit zero": ("trainer.save_total_limit=0", "trainer.save_total_limit"),
    "trainer seed negative": ("trainer.seed=-1", "trainer.seed"),
    # hardware: typed like task
    "loader workers negative": ("hardware.dataloader_num_workers=-1", "hardware.dataloader_num_workers"),
    "num_proc zero": ("hardware.num_proc=0", "hardware.num_proc"),
    "num_proc text": ("hardware.num_proc=abc", "hardware.num_proc"),
    "precision unknown": ("hardware.precision=fp8", "hardware.precision"),
    # the run's seed: an integer numpy accepts
    "seed negative": ("seed=-1", "seed"),
    "seed 2**32": ("seed=4294967296", "seed"),
    "seed fraction": ("seed=1.5", "seed"),
    "seed text": ("seed=abc", "seed"),
}


@pytest.mark.trains
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_value_is_one_message_before_any_work(case, tmp_path, tiny_models):
    override, key = CASES[case]
    result = run_py(*small_run_args(tmp_path, tiny_models["bert"]), override, cwd=tmp_path)
    assert result.returncode == 1, result.output[-3000:]
    assert len(result.output.splitlines()) <= 3, result.output[-3000:]
    assert f"{key}=" in result.output and "Traceback" not in result.output, result.output
    if key in RULES:  # the message gives a value that works
        assert f"e.g. {key}={RULES[key].example}" in result.output, result.output
    run_dir = tmp_path / "run"
    assert not (run_dir / "model").exists() and not list(tmp_path.rglob("metrics.json"))
    # stopped before the data, the hardware and the Trainer: nothing the run writes on its way to training
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "environment.json").exists()
    assert "Tokeniz" not in result.output


@pytest.mark.trains
def test_a_bad_value_in_a_sweep_stops_it_in_one_line(tmp_path, tiny_models):
    result = run_py(
        *small_run_args(tmp_path, tiny_models["bert"]),
        "-m",
        "task.max_length=32,abc",
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and result.output.strip() == (
        "task.max_length='abc': Value 'abc' of type 'str' could not be converted to Integer, e.g. task.max_length=128."
    )
    assert not (tmp_path / "sweep").exists()


def test_all_bad_values_are_reported_together_each_with_its_range():
    with pytest.raises(FinetuneError) as error:
        validate(
            compose_config(
                "trainer.learning_rate=-1",
                "task.max_train_samples=0",
                "hardware.num_proc=0",
                "seed=-1",
                "task.max_lenght=1",
            )
        )
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == 5 and "Unknown config key 'task.max_lenght'" in str(error.value)
    assert (
        "  trainer.learning_rate=-1: must be null (sized to the data) or a number > 0, e.g. trainer.learning_rate=2e-5."
        in lines
    )
    assert "  seed=-1: must be an integer in [0, 2**32), e.g. seed=42." in lines  # once: trainer.seed is ${seed}


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.num_train_epochs=0", "trainer.max_steps=10"],  # max_steps takes the place of the epochs
        ["trainer.warmup_steps=0", "trainer.logging_steps=0.5", "trainer.save_steps=100", "trainer.eval_steps=null"],
        [
            "task.validation_size=2000",
            "task.max_train_samples=null",
            "hardware.num_proc=null",
            "trainer.save_total_limit=null",
        ],
        ["trainer.save_strategy=best", "trainer.learning_rate=1", "seed=0", "trainer.max_grad_norm=0"],
    ],
)
def test_good_values_at_the_edges_pass(overrides):
    validate(compose_config(*overrides))


@pytest.mark.trains
def test_a_validation_size_the_classes_do_not_fit_is_named_before_training(tmp_path, tiny_models):
    result = run_py(*small_run_args(tmp_path, tiny_models["bert"]), "task.validation_size=2", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "task.validation_size=2 holds out 2 of the 40 train rows" in errors[0]
    assert "needs 4 to 36" in errors[0] and "e.g. task.validation_size=4" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists() and "Tokeniz" not in result.output


@pytest.mark.trains
def test_a_library_refusing_a_setting_during_setup_is_one_line_naming_the_key(tmp_path, tiny_models):
    result = run_py(*small_run_args(tmp_path, tiny_models["bert"]), "model.attn_implementation=bogus", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "Loading the model failed; check model.attn_implementation: ValueError: " in errors[0]
    assert errors[0].endswith("(HYDRA_FULL_ERROR=1 shows the traceback)")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model").exists()
    # a new folder: the first run's, holding a failed run, is refused to any new run
    full = run_py(
        *small_run_args(tmp_path, tiny_models["bert"], "run_again"),
        "model.attn_implementation=bogus",
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert full.returncode == 1 and "Traceback" in full.output and "ValueError: " in full.output


def small_run_config(tmp_path: Path, model: Path, *overrides: str):
    """The small run's config, composed in this process; its run folder made, as Hydra would."""
    (tmp_path / "run").mkdir()
    return compose_config(*[a for a in small_run_args(tmp_path, model) if not a.startswith("hydra.")], *overrides)


@pytest.mark.trains
@pytest.mark.parametrize(
    "raising, expected",
    [  # what fails: a call inside Trainer.create_optimizer, or inside a training step
        (
            "get_optimizer_cls_and_kwargs",
            "Creating the optimizer failed; check trainer.optim, hardware.fused_optimizer: "
            "ImportError: no such optimizer",
        ),
        ("training_step", None),  # during training: a fault to see, with its traceback
    ],
)
def test_errors_inside_trainer_train_are_setup_only_before_the_first_step(
    raising, expected, tmp_path, tiny_models, monkeypatch
):
    from transformers import Trainer

    from finetune.training.train import run

    def fail(*args, **kwargs):
        raise ImportError("no such optimizer")

    monkeypatch.setattr(Trainer, raising, fail)
    cfg = small_run_config(tmp_path, tiny_models["bert"])
    with pytest.raises(ImportError) as error:
        run(cfg, tmp_path / "run")
    message = setup_failure(error.value, cfg)
    assert message == (None if expected is None else f"{expected} (HYDRA_FULL_ERROR=1 shows the traceback)")


def test_a_run_that_trains_no_step_saves_nothing(tmp_path, tiny_models, monkeypatch):
    """The last guard, for whatever slips past the checks: here the checks are switched off."""
    import finetune.training.train

    monkeypatch.setattr(finetune.training.train, "validate", lambda cfg: None)
    run_dir = tmp_path / "run"
    with pytest.raises(
        FinetuneError, match=r"The run trained no step \(trainer.num_train_epochs=-1, .*nothing was saved"
    ):
        finetune.training.train.run(
            small_run_config(tmp_path, tiny_models["bert"], "trainer.num_train_epochs=-1"), run_dir
        )
    assert not (run_dir / "model").exists() and not (run_dir / "metrics.json").exists()
    assert not list(run_dir.rglob("README.md"))


@pytest.mark.parametrize(
    "overrides, keys",
    [
        (["trainer.lr_scheduler_type=bogus"], "trainer.lr_scheduler_type"),
        (
            [
                "trainer.eval_strategy=steps",
                "trainer.eval_steps=5",
                "trainer.save_strategy=epoch",
                "trainer.load_best_model_at_end=true",
            ],
            "trainer.save_strategy, trainer.load_best_model_at_end",
        ),
        (["trainer.dataloader_prefetch_factor=2"], "trainer.dataloader_prefetch_factor"),
    ],
)
def test_what_training_arguments_refuse_is_one_line_naming_the_key(overrides, keys, tmp_path):
    from finetune.training.trainer import training_arguments

    cfg = compose_config(*overrides)
    with pytest.raises(FinetuneError) as error:
        training_arguments(cfg.trainer, {"use_cpu": True, "dataloader_num_workers": 0}, tmp_path)
    assert str(error.value).startswith(f"Invalid trainer settings: {keys}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("flag", ["--batch-size", "--max-length", "--top-k"])
@pytest.mark.parametrize("value", ["0", "-2", "abc"])
def test_predict_flags_take_whole_numbers_from_1(flag, value, tmp_path, capsys):
    from finetune.serving.predict import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args([str(tmp_path), "some text", flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: must be a whole number >= 1, got " in capsys.readouterr().err
