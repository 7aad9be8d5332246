"""``python -m finetune.serve``: serve a trained run (or its ONNX export) over HTTP, batched across requests.

python -m finetune.serve outputs/<run>                              # http://127.0.0.1:8000, PyTorch
python -m finetune.serve outputs/<run>/export_int8 --threads 2      # the int8 ONNX export, without PyTorch
curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["first text", "second"]}'
"""

import argparse
import sys
from typing import Optional, Sequence

from finetune.errors import FinetuneError
from finetune.serving.cli import add_model_options, positive_int
from finetune.serving.predictor import default_threads
from finetune.serving.requests import MAX_CHARS, MAX_TEXTS
from finetune.serving.server import Service, Settings, serve


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
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: a line per request costs time under load)"
    )
    args = parser.parse_args(argv)
    if args.max_wait_ms < 0:
        parser.error(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    threads = args.threads or (max(1, default_threads() // args.workers) if args.workers > 1 else None)
    settings = Settings(
        args.path,
        args.backend,
        args.device,
        args.precision,
        threads,
        args.max_batch,
        args.max_wait_ms,
        args.max_texts,
        args.max_chars,
    )
    try:
        Service(settings)  # the folder, backend and packages, checked before the port opens
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return serve(settings, args.host, args.port, args.workers, args.access_log)
