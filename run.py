"""Fine-tune a transformer encoder on a text classification task.

    python run.py task=ag_news model=deberta
    python run.py -m model=bert,roberta,distilbert
"""

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig

from finetune.config import FinetuneError, register_configs, register_resolvers

log = logging.getLogger("finetune")
register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    from hydra.core.hydra_config import HydraConfig

    from finetune.train import run

    try:
        metrics = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except FinetuneError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", error)
        sys.exit(1)
    return metrics["validation"].get(cfg.task.metric_for_best_model)  # the objective a sweeper optimises


if __name__ == "__main__":
    main()
