"""``python -m finetune.serve``: serve a trained run (or its ONNX export) over HTTP, batched across requests.

python -m finetune.serve outputs/<run>                              # http://127.0.0.1:8000, PyTorch
python -m finetune.serve outputs/<run>/export_int8 --threads 2      # the int8 ONNX export, without PyTorch
curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["first text", "second"]}'
FINETUNE_API_KEY=$(cat key.txt) python -m finetune.serve outputs/<run> --host 0.0.0.0   # every interface, with a key
curl -s HOST:8000/predict -H "authorization: Bearer $(cat key.txt)" -d '{"text": "a"}'  # what its clients send
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from finetune.errors import FinetuneError
from finetune.inference.runners import default_threads
from finetune.serving.predict import add_model_options, positive_int
from finetune.serving.requests import MAX_CHARS, MAX_TEXTS
from finetune.serving.server import KEY_VARIABLE, Service, Settings, serve


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.serve",
        description="Serve a trained run over HTTP: POST /predict, GET /health, /info, /stats, /docs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "path",
        help="a run folder (its model/, or its export/ with --backend onnx), a model folder, or an export folder",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument("--port", type=int, default=8000)
    add_model_options(
        parser, "intra-op CPU threads per worker (default: the CPUs this process may use, divided among --workers)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="server processes sharing the port, each with the model (workers x threads <= cores)",
    )
    add_batching_options(parser)
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every endpoint but /health (else 401); better: set the "
        f"environment variable {KEY_VARIABLE}, since a command-line argument shows in ps (the option wins)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: a line per request costs time under load)"
    )
    args = parser.parse_args(argv)
    if args.max_wait_ms < 0:
        parser.error(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    return args


def add_batching_options(parser: argparse.ArgumentParser) -> None:
    """--max-batch, --max-wait-ms, --max-texts and --max-chars: how requests are batched and bounded."""
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=64,
        help="texts gathered across requests into one batch (default 64), run in passes of neighbours by length",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch waits for more requests once several arrive together (default 5)",
    )
    parser.add_argument(
        "--max-texts",
        type=positive_int,
        default=MAX_TEXTS,
        help=f"texts in one request (default {MAX_TEXTS}); more: 413",
    )
    parser.add_argument(
        "--max-chars",
        type=positive_int,
        default=MAX_CHARS,
        help=f"characters in one text (default {MAX_CHARS}); more: 413",
    )


def settings_of(args: argparse.Namespace) -> Settings:
    """The server's settings from the command line; the key from --api-key, else from FINETUNE_API_KEY."""
    threads = args.threads or (max(1, default_threads() // args.workers) if args.workers > 1 else None)
    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_VARIABLE)
    return Settings(
        args.path,
        args.backend,
        args.device,
        args.precision,
        threads,
        args.max_batch,
        args.max_wait_ms,
        args.max_texts,
        args.max_chars,
        args.min_confidence,
        api_key,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    settings = settings_of(args)
    if settings.api_key is not None and not settings.api_key.strip():
        source = "--api-key" if args.api_key is not None else KEY_VARIABLE
        print(f"error: {source} is empty: give a key, or unset it to serve without one", file=sys.stderr)
        return 1
    try:
        Service(settings)  # the folder, backend, packages and cut-off, checked before the port opens
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return serve(settings, args.host, args.port, args.workers, args.access_log)
