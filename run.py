"""Fine-tune a transformer encoder on a text classification task.

python run.py task=ag_news model=deberta
python run.py -m model=bert,roberta,distilbert
"""

import sys
from typing import Optional

import hydra
from omegaconf import DictConfig

from finetune.config.checks import refuse_tokens_on_command_line
from finetune.config.schemas import register_configs
from finetune.distributed import agree_on_start_time
from finetune.launch import refuse_wrong_types, register_resolvers

register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    from finetune.launch import run_job

    return run_job(cfg)


if __name__ == "__main__":
    refuse_tokens_on_command_line(sys.argv[1:])  # before Hydra writes the config into the run folder
    refuse_wrong_types(sys.argv[1:])  # one line where Hydra would print six
    agree_on_start_time()  # torchrun / accelerate launch: every rank writes into one run folder
    main()
