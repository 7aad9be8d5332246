"""One fine-tuning run, or a sweep: ``finetune-train``, ``python -m finetune.run`` and a checkout's ``python run.py``.

    finetune-train task=ag_news model=deberta
    finetune-train task=file file=train.csv model=minilm
    finetune-train -m model=bert,roberta,distilbert

The three are one entry (``main``): the same checks before Hydra starts, the same presets, run folders under
``outputs/`` of the working folder. The presets are the checkout's ``conf/``; an installed package carries a copy
of it as ``finetune/conf`` (setup.py copies it when the package is built).

Hydra names the job after this module (``run``): its log is the run folder's ``run.log``, as with ``run.py``.
"""

import sys
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig

from finetune.config.checks import refuse_tokens_on_command_line
from finetune.config.schemas import register_configs
from finetune.distributed import agree_on_start_time
from finetune.launch import refuse_wrong_types, register_resolvers

CONFIG_NAME = "config"  # the presets' root: conf/config.yaml


def presets_dir() -> Path:
    """The folder of the presets: the copy an installed package ships (``finetune/conf``), else the checkout's
    ``conf/`` beside the package (``python run.py``, an editable install)."""
    package = Path(__file__).resolve().parent
    shipped = package / "conf"
    return shipped if (shipped / f"{CONFIG_NAME}.yaml").is_file() else package.parent / "conf"


# At import, as run.py always did: whatever imports this module to compose or run a job has them.
register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path=str(presets_dir()), config_name=CONFIG_NAME)
def train(cfg: DictConfig) -> Optional[float]:
    from finetune.launch import run_job

    return run_job(cfg)


def main() -> None:
    """Refuse what Hydra would take badly or record where it should not, then hand the command line to Hydra."""
    root = presets_dir() / f"{CONFIG_NAME}.yaml"
    if not root.is_file():
        raise SystemExit(
            f"The presets are missing: no {root}. Reinstall the package "
            "(pip install <checkout>), or run python run.py from a checkout."
        )
    refuse_tokens_on_command_line(sys.argv[1:])  # before Hydra writes the config into the run folder
    refuse_wrong_types(sys.argv[1:])  # one line where Hydra would print six
    agree_on_start_time()  # torchrun / accelerate launch: every rank writes into one run folder
    train()


if __name__ == "__main__":
    main()
