#!/usr/bin/env bash
# The standard comparison: every model preset on a task, one Hydra multirun.
#   ./multirun_sweep.sh [TASK] [extra Hydra overrides...]
#   ./multirun_sweep.sh rte trainer.num_train_epochs=5
set -euo pipefail
cd "$(dirname "$0")"
task="${1:-ag_news}"
shift || true
exec python run.py -m task="$task" model=distilbert,bert,roberta,xlnet,deberta "$@"
