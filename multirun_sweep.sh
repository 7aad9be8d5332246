#!/usr/bin/env bash
# The standard comparison: models x tasks x seeds as one Hydra sweep, ending with its
# leaderboard (summary.md / summary.csv in the sweep folder).
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-m MODELS] [-t TASKS] [-s SEEDS] [-k FOLDS] [HYDRA_OVERRIDE ...]

Fine-tunes every model on every task with every seed (python run.py -m ...), then prints
the leaderboard. Lists are comma-separated. Options win over environment variables:

  -m MODELS   model presets        (env MODELS, default: distilbert,bert,roberta,xlnet,deberta)
  -t TASKS    task presets         (env TASKS,  default: ag_news)
  -s SEEDS    seeds                (env SEEDS,  default: 42)
  -k FOLDS    k-fold cross-validation: run every fold 0..FOLDS-1 (env FOLDS, default: none)
  -h          this help

Any further arguments are Hydra overrides, passed through to every job, for example:
  $(basename "$0") -t rte -s 1,2,3 trainer.num_train_epochs=5
  $(basename "$0") -m minilm -k 5 task.max_train_samples=2000
  $(basename "$0") -m minilm task.data_files.train=data/train.csv task.max_train_samples=2000
  $(basename "$0") hydra/launcher=slurm hydra.launcher.partition=gpu
USAGE
}

models="${MODELS:-distilbert,bert,roberta,xlnet,deberta}"
tasks="${TASKS:-ag_news}"
seeds="${SEEDS:-42}"
folds="${FOLDS:-}"
while getopts "m:t:s:k:h" option; do
  case "$option" in
    m) models="$OPTARG" ;;
    t) tasks="$OPTARG" ;;
    s) seeds="$OPTARG" ;;
    k) folds="$OPTARG" ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

cross_validation=()
if [ -n "$folds" ]; then
  case "$folds" in
    *[!0-9]*|0|1) echo "-k $folds: the number of folds must be an integer >= 2, e.g. -k 5" >&2; exit 2 ;;
  esac
  cross_validation=(task.folds="$folds" "task.fold=range($folds)")
fi

exec "${PYTHON:-python}" "$(dirname "$0")/run.py" -m model="$models" task="$tasks" seed="$seeds" "${cross_validation[@]}" "$@"
