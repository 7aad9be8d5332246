"""Publish a finished run's model on the Hugging Face Hub: everything in its model/ folder.

    finetune-publish RUN --repo-id user/name [--private] [--token hf_...] [--dry-run]
    python -m finetune.publish RUN --repo-id user/name --dry-run

model/ is what a consumer needs: the (calibrated) weights, the tokenizer, the model card (README.md, which
the Hub shows as the model's page) and the inference settings (finetune.json, the kind's files). The repository
is created when it does not exist (--private: private; an existing public one is refused); the folder is uploaded
as one commit.

--dry-run lists what would be sent (each file and its size, the repository, private or public, the license and
where the token would come from) and sends nothing. The token is --token, else HF_TOKEN, else the login that
`hf auth login` keeps.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from finetune.errors import FinetuneError, one_line
from finetune.runs.saved import METRICS_FILE, MODEL_CARD, MODEL_CONFIG, MODEL_DIR, SavedRun

SKIPPED_DIRS = (".git", ".cache")  # what upload_folder leaves out of a folder by default


def finished_model_dir(path: Path) -> Path:
    """The model/ folder of a finished run; anything else is refused with one message."""
    run = SavedRun(path)
    if not run.folder.is_dir():
        raise FinetuneError(f"No such folder: {path}")
    model = (run.model_dir / MODEL_CONFIG).is_file() and run.model_card_path.is_file()
    if run.is_finished and model:
        return run.model_dir
    parent = SavedRun(run.folder.resolve().parent)
    hint = (
        f" It looks like a run's {MODEL_DIR}/ folder: give the run's folder, {parent.folder}."
        if run.folder.resolve().name == MODEL_DIR and parent.is_finished
        else ""
    )
    missing = METRICS_FILE if not run.is_finished else f"{MODEL_DIR}/ with its {MODEL_CONFIG} and {MODEL_CARD}"
    raise FinetuneError(
        f"{path} is not a finished run: it has no {missing}. finetune-publish takes the folder of a run whose "
        f"training finished (it holds {METRICS_FILE} and {MODEL_DIR}/; of a sweep, one job's folder).{hint}"
    )


def files_to_send(folder: Path) -> List[Tuple[str, int]]:
    """Each file under ``folder`` (its path in the repository) and its size, as upload_folder sends them."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not set(relative.parts[:-1]) & set(SKIPPED_DIRS):
            files.append((relative.as_posix(), path.stat().st_size))
    return files


def size_text(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def card_license(model_dir: Path) -> Optional[str]:
    """The license the model card's front matter names, if any."""
    from huggingface_hub.repocard import metadata_load

    try:
        return (metadata_load(model_dir / MODEL_CARD) or {}).get("license")
    except Exception:  # front matter that is not YAML: no license to read
        return None


def token_source(token: Optional[str]) -> Optional[str]:
    """Where the token comes from (never the token itself); None where there is none."""
    from huggingface_hub import get_token

    if token:
        return "--token"
    if os.environ.get("HF_TOKEN"):
        return "HF_TOKEN"
    return "the cached login (hf auth login)" if get_token() else None


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise FinetuneError(f"--repo-id {repo_id}: {one_line(str(error))}") from None


def plan(args: argparse.Namespace) -> Tuple[Path, List[Tuple[str, int]]]:
    """What would be sent, printed; every check that needs no Hub."""
    check_repo_id(args.repo_id)
    model_dir = finished_model_dir(args.run)
    files = files_to_send(model_dir)
    license = card_license(model_dir)
    source = token_source(args.token)
    visibility = "private" if args.private else "public where it is created; an existing one keeps its visibility"
    print(f"{model_dir} -> https://huggingface.co/{args.repo_id} (model repository, {visibility})")
    width = max(len(name) for name, _ in files)
    for name, size in files:
        print(f"  {name:<{width}}  {size_text(size):>9}")
    print(f"  {len(files)} files, {size_text(sum(size for _, size in files))}")
    print(
        f"license: {license} (the model card's)"
        if license
        else f"license: none in the model card: fill in license: in the front matter of {model_dir / MODEL_CARD}"
    )
    print(f"token: from {source}" if source else "token: none found: pass --token, set HF_TOKEN or run hf auth login")
    return model_dir, files


def check_can_send(args: argparse.Namespace) -> None:
    """What a real upload needs besides the folder: the Hub not switched off, and a token."""
    from finetune.hub import offline

    if offline():
        raise FinetuneError("HF_HUB_OFFLINE is set: publishing needs the Hub. Unset it, or try --dry-run.")
    if token_source(args.token) is None:
        raise FinetuneError("No Hugging Face token: pass --token, set HF_TOKEN, or log in with hf auth login.")


def upload(args: argparse.Namespace, model_dir: Path) -> str:
    """Create the repository (if need be) and upload model/ as one commit; the repository's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    try:
        url = api.create_repo(args.repo_id, private=args.private, repo_type="model", exist_ok=True)
        if args.private and not api.repo_info(args.repo_id, repo_type="model").private:
            raise FinetuneError(
                f"{args.repo_id} exists and is public: --private does not change it. Make it private on the Hub "
                "first, or choose another --repo-id."
            )
        api.upload_folder(
            repo_id=args.repo_id,
            folder_path=model_dir,
            repo_type="model",
            commit_message=f"Upload {Path(args.run).resolve().name} (finetune)",
        )
    except FinetuneError:
        raise
    except Exception as error:  # the Hub's answer (no access, no network, a bad token) in one line
        raise FinetuneError(
            f"Publishing to {args.repo_id} failed: {type(error).__name__}: {one_line(str(error))}"
        ) from None
    return str(url)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="finetune-publish",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("run", type=Path, help="a finished run's folder (the one holding model/)")
    parser.add_argument("--repo-id", required=True, help="the model repository on the Hub: user/name or org/name")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", help="a Hugging Face token with write access (default: HF_TOKEN, else your login)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent, and send nothing")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if not args.dry_run:
            check_can_send(args)
        model_dir, _ = plan(args)
        if args.dry_run:
            print("Dry run: nothing was sent.")
            return 0
        url = upload(args, model_dir)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Published: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
