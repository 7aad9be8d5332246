"""The HTTP server of a trained run (FastAPI on uvicorn): ``python -m finetune.serve``.

    POST /predict   the kind's outputs for a text, a pair, or a list (finetune/serving/requests.py)
    GET  /health    200 {"status": "ready"} once the model is loaded; 503 while it loads
    GET  /info      what the run's answers mean: kind, labels, thresholds, backend, precision, versions
    GET  /stats     requests, texts, batches and forward passes since the start (to see the batching)
    GET  /docs      the OpenAPI page

The model loads once, in the background after the port opens, so that /health can say "loading";
requests are batched across callers by ``Batcher`` (finetune/serving/batching.py).
"""

import asyncio
import inspect
import json
import os
import signal
import sys
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

from finetune.errors import FinetuneError
from finetune.serving.batching import Batcher
from finetune.serving.predictor import BACKENDS, EXPORT_DIR, EXPORT_INFO, Predictor, RunInfo, locate, require_onnx
from finetune.serving.requests import MAX_CHARS, MAX_TEXTS, Limits, PredictRequest, RequestError, parse
from finetune.tasks.kind import CALIBRATION_FILE

SETTINGS_VARIABLE = "FINETUNE_SERVE_SETTINGS"  # how --workers hands the settings to each worker process


@dataclass
class Settings:
    """What to serve and how: the command line's options."""

    path: str
    backend: Optional[str] = None
    device: Optional[str] = None
    precision: str = "auto"
    threads: Optional[int] = None
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_texts: int = MAX_TEXTS
    max_chars: int = MAX_CHARS


def preflight(settings: Settings) -> RunInfo:
    """The checks that need no model, before the port opens: the folder, the backend, ONNX's packages."""
    info = locate(settings.path)
    backend = settings.backend or ("onnx" if info.export_dir == info.model_dir else "torch")
    if backend not in BACKENDS:
        raise FinetuneError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}.")
    if backend == "onnx":
        if info.export_dir is None:
            raise FinetuneError(
                f"{settings.path} has no ONNX export ({EXPORT_DIR}/{EXPORT_INFO}): create one with python -m finetune.export {settings.path}"
            )
        require_onnx()
        if settings.precision not in ("auto", None):
            raise FinetuneError(
                "--precision applies to --backend torch; an ONNX export's precision is chosen when exporting (--quantize int8)."
            )
    elif info.export_dir == info.model_dir:
        raise FinetuneError(
            f"{settings.path} holds an ONNX export, not a PyTorch model: use --backend onnx, or give the run folder."
        )
    return info


def takes_pairs(info: RunInfo, path: str) -> Optional[bool]:
    """Whether the run reads pairs (two text fields); None for a plain model folder, which does not say."""
    from_run = (
        info.export_dir == info.model_dir
        or info.model_dir != Path(path).expanduser()
        and (Path(path).expanduser() / ".hydra").is_dir()
    )
    return len(info.text_fields) == 2 if from_run else None


class Service:
    """The loaded run and its batcher; what the endpoints share."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.info = preflight(settings)
        self.limits = Limits(settings.max_texts, settings.max_chars, takes_pairs(self.info, settings.path))
        self.predictor: Optional[Predictor] = None
        self.batcher: Optional[Batcher] = None
        self.error: Optional[str] = None

    def load(self) -> Predictor:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        s = self.settings
        return Predictor.load(
            s.path, device=s.device, backend=s.backend, threads=s.threads, batch_size=s.max_batch, precision=s.precision
        )

    async def start(self) -> None:
        """Load the model in a thread (the server answers /health meanwhile), then serve the queue."""
        try:
            predictor = await asyncio.to_thread(self.load)
        except Exception as error:  # noqa: BLE001 - a model that cannot load stops the server with the reason
            self.error = str(error)
            print(f"error: {error}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.batcher = Batcher(predictor, self.settings.max_batch, self.settings.max_wait_ms)
        self.predictor = predictor
        print(f"Ready: {predictor.describe()}", file=sys.stderr, flush=True)
        await self.batcher.run()

    def describe(self) -> Dict[str, Any]:
        """GET /info: what the run's answers mean and how they are computed."""
        predictor, info = self.predictor, self.info
        kind = predictor.kind
        thresholds = kind.threshold_array().tolist() if hasattr(kind, "threshold_array") else None
        inputs = {True: "pairs: [first, second]", False: "single texts", None: "single texts or pairs"}[
            self.limits.pairs
        ]
        return {
            "kind": kind.name,
            "labels": kind.label_names,
            "inputs": inputs,
            "text_fields": info.text_fields,
            "thresholds": dict(zip(kind.label_names, thresholds)) if thresholds is not None else None,
            "calibration": saved_calibration(info.model_dir),
            "long_text": predictor.long_text.as_dict(),
            "saved_with_model": kind.model_files(),
            "max_length": predictor.max_length,
            "backend": predictor.backend,
            "precision": predictor.precision,
            "threads": predictor.threads,
            "model": predictor.describe(),
            "run": str(Path(self.settings.path).expanduser().resolve()),
            "model_dir": str(info.model_dir.resolve()),
            "batching": {
                "max_batch": self.settings.max_batch,
                "max_wait_ms": self.settings.max_wait_ms,
                "max_tokens_per_pass": predictor.tokens_per_pass,
            },
            "limits": {"max_texts": self.limits.max_texts, "max_chars": self.limits.max_chars},
            "versions": versions(predictor.backend),
        }


def saved_calibration(model_dir: Path) -> Dict[str, Any]:
    """The temperatures the run folded into the model's last layer (calibration.json), or that it has none."""
    path = model_dir / CALIBRATION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"method": "none"}


def versions(backend: str) -> Dict[str, str]:
    """The versions of what computes the answers."""
    names = [
        "finetune",
        "transformers",
        "tokenizers",
        "torch" if backend == "torch" else "onnxruntime",
        "fastapi",
        "uvicorn",
    ]
    found = {"python": sys.version.split()[0]}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def create_app(settings: Settings):
    """The FastAPI application serving ``settings.path``; the model loads when the server starts."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(service.start())
        yield
        task.cancel()
        if service.batcher is not None:
            service.batcher.close()

    app = FastAPI(
        title="finetune",
        description=f"Predictions of the run in {settings.path}, as the run means them.",
        lifespan=lifespan,
    )
    app.state.service = service

    def not_ready() -> Optional[JSONResponse]:
        if service.batcher is not None:
            return None
        if service.error is not None:
            return JSONResponse({"status": "failed", "error": service.error}, status_code=500)
        return JSONResponse(
            {"status": "loading", "error": "the model is loading; retry when GET /health says ready"}, status_code=503
        )

    @app.get("/health", summary="200 once the model is loaded, 503 while it loads")
    async def health():
        return not_ready() or {"status": "ready"}

    @app.get("/info", summary="what the run's answers mean: kind, labels, thresholds, backend, precision, versions")
    async def info():
        return not_ready() or service.describe()

    @app.get("/stats", summary="requests, texts, batches and forward passes since the server started")
    async def stats():
        return not_ready() or service.batcher.stats()

    body_schema = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    }

    @app.post(
        "/predict",
        openapi_extra=body_schema,
        summary="the run's outputs for a text, a pair, or a list of them, in input order",
    )
    async def predict(request: Request):
        waiting = not_ready()
        if waiting is not None:
            return waiting
        try:
            declared = int(request.headers.get("content-length") or 0)
            if declared > 8 * service.limits.max_texts * (service.limits.max_chars + 16):
                raise RequestError(
                    413, f"a body of {declared} bytes: more than --max-texts texts of --max-chars characters can fill"
                )
            parsed = parse(await request.body(), service.limits)
        except RequestError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        try:
            scores = await service.batcher.scores(parsed.texts)
        except Exception as error:  # noqa: BLE001 - one failed batch answers its requests with the reason; the server goes on
            return JSONResponse({"error": f"prediction failed: {error}"}, status_code=500)
        outputs = [service.predictor.kind.output(row, parsed.top_k) for row in scores]
        return JSONResponse(outputs[0] if parsed.single else outputs)

    return app


def app_from_environment():
    """The application for each worker of ``--workers N`` (uvicorn imports it by name in each process)."""
    return create_app(Settings(**json.loads(os.environ[SETTINGS_VARIABLE])))


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, access_log: bool = False
) -> int:
    """Run the server until SIGTERM or Ctrl-C: stop accepting, finish the requests in flight, return 0."""
    import uvicorn

    options = dict(host=host, port=port, access_log=access_log, log_level="info", timeout_graceful_shutdown=None)
    # uvicorn drains the connections on SIGTERM or Ctrl-C, then raises the signal again against the handler it found:
    # a handler that ignores it makes the drained exit a clean one (status 0, no traceback).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    if workers > 1:  # uvicorn's own worker processes, each loading the run; the port is shared
        if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
            options["timeout_worker_healthcheck"] = (
                120  # a worker imports the ML stack before it answers; 5 s restarted slow ones
            )
        os.environ[SETTINGS_VARIABLE] = json.dumps(asdict(settings))
        run_workers(
            uvicorn.Config("finetune.serving.server:app_from_environment", factory=True, workers=workers, **options)
        )
        return 0
    app = create_app(settings)
    uvicorn.Server(uvicorn.Config(app, **options)).run()
    return 1 if app.state.service.error else 0


def run_workers(config) -> None:
    """``uvicorn.run``'s path for ``workers > 1``, on a listening socket whose connections get TCP_NODELAY."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    listener = listening_socket(config)
    if (
        "target" in inspect.signature(Multiprocess).parameters
    ):  # uvicorn 0.29 to 0.36 at least: as its own run() calls it
        Multiprocess(config, target=uvicorn.Server(config).run, sockets=[listener]).run()
    else:
        Multiprocess(config, sockets=[listener]).run()


def listening_socket(config):
    """The socket uvicorn binds for its workers, read back from its descriptor so that it says TCP.

    uvicorn binds it with ``proto`` 0; accepted connections inherit that, and asyncio turns Nagle's
    algorithm off only for sockets that say IPPROTO_TCP. Each keep-alive answer then waited for the
    client's delayed ACK: 44 ms a request instead of 2 with two workers (uvicorn issue #3149).
    """
    import socket

    listener = config.bind_socket()
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        listener = socket.socket(fileno=listener.detach())  # the kernel's family, type and protocol
    return listener
