"""Which rows to label next: the rows of a pool of unlabeled texts most worth a person's label.

    python -m finetune.suggest RUN POOL [--n 32] [--strategy margin] [--output suggestions.csv]
    python -m finetune.suggest BASE_MODEL_FOLDER POOL --strategy cold_start     # no trained run yet

RUN is a run folder (or its model folder); POOL a CSV, TSV, JSON/JSONL or Parquet file with the run's text
column(s), streamed a chunk at a time. The output holds the N rows, ranked: a stable ``id`` (a hash of the text),
the pool's ``row`` number, the text column(s), an empty label column to fill in, the strategy's ``score`` and,
from a trained run, its two most probable labels with their calibrated probabilities (``predicted``,
``confidence``, ``second``, ``second_confidence``). Texts the run already has labels for (its train, validation
and test files, and any --exclude file) are left out, and so are repeats. Once labeled, the file trains as it is:
``python run.py task=file file=[train.csv,suggestions.csv]``; rows still without a label are skipped.

Strategies (finetune/labeling/strategies.py): margin, entropy, clustered (uncertain and diverse), random (the
control), cold_start (diverse, for a base model before any run).
"""

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from finetune.errors import FinetuneError
from finetune.labeling.pool import chosen, known_ids, ranked
from finetune.labeling.strategies import STRATEGIES, Strategy, strategy_named
from finetune.runs.model_folder import ModelFolder
from finetune.serving.predict import add_model_options, check_output, load_predictor, positive_int
from finetune.serving.tables import CHUNK_ROWS, write_table

KINDS = ("single_label",)  # the strategies read one probability per class that sum to one


def labeled_files(folder: ModelFolder) -> List[Path]:
    """The data files a run was trained, validated and tested on, as the run found them (None for a model folder)."""
    from omegaconf import OmegaConf

    from finetune.config.resolvers import register_resolvers

    run = folder.run
    if run is None or not run.has_config:
        return []
    register_resolvers()  # the presets name their files through resolvers (glue_file, ...)
    started_in = Path(run.hydra().runtime.cwd)
    files = []
    for value in (OmegaConf.to_container(run.task().data_files, resolve=True) or {}).values():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path:
                file = Path(path).expanduser()
                files.append(file if file.is_absolute() else started_in / file)
    return files


def check_model(folder: ModelFolder, strategy: Strategy) -> None:
    """Refuse, in one line, what the strategy cannot rank with this model."""
    if not strategy.needs_run:
        return
    if not folder.described:
        raise FinetuneError(
            f"{folder.path} is a base model, not a trained run: --strategy {strategy.name} ranks by a trained run's "
            "probabilities. Use --strategy cold_start (or random) for the first batch."
        )
    if folder.record.kind not in KINDS:
        raise FinetuneError(
            f"{folder.path} is a {folder.record.kind} run: --strategy {strategy.name} ranks single-label "
            "probabilities. Use --strategy cold_start or random."
        )


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.suggest",
        description="Suggest the rows of a pool of unlabeled texts most worth labeling next.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("path", help="a run folder (or its model folder); for cold_start, a base model folder")
    parser.add_argument("pool", type=Path, help="unlabeled texts: CSV, TSV, JSON/JSONL or Parquet")
    parser.add_argument("--n", type=positive_int, default=32, help="rows to suggest (default 32)")
    parser.add_argument("--strategy", choices=list(STRATEGIES), default="margin", help="default: margin")
    parser.add_argument("--output", type=Path, default=Path("suggestions.csv"), help="default: suggestions.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument(
        "--exclude", type=Path, nargs="*", default=[], help="more labeled files whose texts are not to be suggested"
    )
    parser.add_argument("--seed", type=int, default=0, help="for random, cold_start and the clustering (default 0)")
    parser.add_argument("--chunk-rows", type=positive_int, default=CHUNK_ROWS, help=f"default {CHUNK_ROWS}")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    add_model_options(parser, "intra-op CPU threads (default: PyTorch's choice)", answers=False)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        from tqdm.auto import tqdm

        started = time.perf_counter()
        strategy = strategy_named(args.strategy)
        check_output(args.output, args.pool, args.overwrite, "POOL")
        if not args.pool.is_file():
            raise FinetuneError(f"POOL: no such file: {args.pool}")
        folder = ModelFolder.open(args.path)
        check_model(folder, strategy)
        labeled = labeled_files(folder) + list(args.exclude)
        known = known_ids([f for f in labeled if f.is_file()], folder.record)
        absent = [str(f) for f in labeled if not f.is_file()]
        if absent:
            print(f"warning: not found, so their texts may be suggested again: {', '.join(absent)}", file=sys.stderr)
        predictor = None
        if strategy.needs_run or strategy.clusters:
            predictor = load_predictor(args)
        with tqdm(desc="Scoring the pool", unit=" rows", disable=None) as bar:  # no bar where no terminal
            kept, counts = ranked(
                args.pool, folder.record, strategy, args.n, args.seed, predictor, known, args.chunk_rows, bar
            )
        labels = folder.record.labels if folder.described else []
        suggestions = chosen(kept, folder.record, strategy, args.n, args.seed, labels, predictor)
        write_table(suggestions, args.output)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(counts.describe())
    print(
        f"Wrote {len(suggestions)} rows to {args.output} ({strategy.name}: {strategy.describe}) "
        f"in {time.perf_counter() - started:.1f} s. Fill in its '{folder.record.label_field}' column, then train on "
        "it with the labels you have."
    )
    if len(suggestions) < args.n:
        print(f"Only {len(suggestions)} rows of the pool are left to suggest.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
