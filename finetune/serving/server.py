"""The HTTP server of a trained run (FastAPI on uvicorn): ``python -m finetune.serve``.

    POST /predict   the kind's outputs for a text, a pair, or a list (finetune/serving/requests.py)
    GET  /health    200 {"status": "ready"} once the model is loaded; 503 while it loads
    GET  /info      what the run's answers mean: kind, labels, thresholds, backend, precision, versions
    GET  /stats     requests, texts, batches and forward passes since the start (to see the batching)
    GET  /docs      the OpenAPI page

With an API key (--api-key or FINETUNE_API_KEY) every endpoint but /health needs ``Authorization: Bearer <key>``.
The model loads once, in the background after the port opens, so that /health can say "loading";
requests are batched across callers by ``Batcher`` (finetune/serving/batching.py).
"""

import asyncio
import hmac
import inspect
import ipaddress
import json
import os
import signal
import sys
import tempfile
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from finetune.errors import FinetuneError
from finetune.inference.answers import Answers
from finetune.inference.predictor import Predictor
from finetune.inference.runners import choose_backend
from finetune.packages import versions
from finetune.runs.model_folder import ModelFolder
from finetune.serving.batching import Batcher
from finetune.serving.requests import MAX_CHARS, MAX_TEXTS, Limits, PredictRequest, RequestError, parse

SETTINGS_VARIABLE = "FINETUNE_SERVE_SETTINGS"  # how --workers hands the settings (never the key) to each worker
KEY_VARIABLE = "FINETUNE_API_KEY"  # where the command reads the API key when --api-key is not given


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
    min_confidence: Optional[float] = None  # abstain below it, unless a request gives its own
    api_key: Optional[str] = field(default=None, repr=False)  # required of every request but GET /health


def preflight(settings: Settings) -> ModelFolder:
    """The checks that need no model, before the port opens: the folder, the backend, ONNX's packages, the cut-off."""
    folder = ModelFolder.open(settings.path)
    choose_backend(folder, settings.backend, settings.device, settings.precision)
    Answers(folder.kind(), settings.min_confidence)
    return folder


class Service:
    """The loaded run and its batcher; what the endpoints share."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.folder = preflight(settings)
        self.limits = Limits(settings.max_texts, settings.max_chars, self.folder.pairs)
        self.predictor: Optional[Predictor] = None
        self.batcher: Optional[Batcher] = None
        self.error: Optional[str] = None

    def load(self) -> Predictor:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        s = self.settings
        return Predictor.load(
            s.path,
            min_confidence=s.min_confidence,
            device=s.device,
            backend=s.backend,
            threads=s.threads,
            batch_size=s.max_batch,
            precision=s.precision,
        )

    @asynccontextmanager
    async def lifespan(self, app):
        """While the server runs: the model loads and serves in a task, closed with the server."""
        task = asyncio.create_task(self.start())
        yield
        task.cancel()
        if self.batcher is not None:
            self.batcher.close()

    def not_ready(self):
        """None once the model serves; else the answer saying why not: 503 while it loads, 500 if it failed."""
        from fastapi.responses import JSONResponse

        if self.batcher is not None:
            return None
        if self.error is not None:
            return JSONResponse({"status": "failed", "error": self.error}, status_code=500)
        return JSONResponse(
            {"status": "loading", "error": "the model is loading; retry when GET /health says ready"}, status_code=503
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
        predictor, folder = self.predictor, self.folder
        kind = predictor.kind
        inputs = {True: "pairs: [first, second]", False: "single texts", None: "single texts or pairs"}[
            self.limits.pairs
        ]
        return {
            "kind": kind.name,
            "labels": kind.label_names,
            "inputs": inputs,
            "text_fields": folder.record.text_fields,
            "thresholds": kind.thresholds_by_label(),
            "calibration": folder.calibration(),
            "min_confidence": predictor.min_confidence,
            "long_text": predictor.long_text.as_dict(),
            "saved_with_model": folder.kind_files(),
            "max_length": predictor.max_length,
            "backend": predictor.backend,
            "precision": predictor.precision,
            "threads": predictor.threads,
            "model": predictor.describe(),
            "run": str(Path(self.settings.path).expanduser().resolve()),
            "model_dir": str(folder.model_dir.resolve()),
            "batching": {
                "max_batch": self.settings.max_batch,
                "max_wait_ms": self.settings.max_wait_ms,
                "max_tokens_per_pass": predictor.tokens_per_pass,
            },
            "limits": {"max_texts": self.limits.max_texts, "max_chars": self.limits.max_chars},
            "auth": "api key" if self.settings.api_key else "none",
            "versions": served_versions(predictor.backend),
        }


def served_versions(backend: str) -> Dict[str, str]:
    """The versions of what computes the answers."""
    names = ["finetune", "transformers", "tokenizers", "torch" if backend == "torch" else "onnxruntime"]
    found = versions([*names, "fastapi", "uvicorn"])
    return {"python": sys.version.split()[0], **{k: v or "not installed" for k, v in found.items()}}


def create_app(settings: Settings):
    """The FastAPI application serving ``settings.path``; the model loads when the server starts."""
    from fastapi import FastAPI

    service = Service(settings)
    app = FastAPI(
        title="finetune",
        description=f"Predictions of the run in {settings.path}, as the run means them.",
        lifespan=service.lifespan,
    )
    app.state.service = service
    add_endpoints(app, service)
    if settings.api_key:
        app.add_middleware(KeyCheck, key=settings.api_key)
    return app


def add_endpoints(app, service: Service) -> None:
    """/health, /info, /stats and /predict on ``app``, answered from ``service``."""
    from fastapi import Request

    @app.get("/health", summary="200 once the model is loaded, 503 while it loads")
    async def health():
        return service.not_ready() or {"status": "ready"}

    @app.get("/info", summary="what the run's answers mean: kind, labels, thresholds, backend, precision, versions")
    async def info():
        return service.not_ready() or service.describe()

    @app.get("/stats", summary="requests, texts, batches and forward passes since the server started")
    async def stats():
        return service.not_ready() or service.batcher.stats()

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
        return service.not_ready() or await predict_answer(service, request)


async def predict_answer(service: Service, request):
    """POST /predict once the model serves: the outputs, or a one-line error with its status."""
    from fastapi.responses import JSONResponse

    try:
        declared = int(request.headers.get("content-length") or 0)
        if declared > 8 * service.limits.max_texts * (service.limits.max_chars + 16):
            raise RequestError(
                413, f"a body of {declared} bytes: more than --max-texts texts of --max-chars characters can fill"
            )
        parsed = parse(await request.body(), service.limits)
        answers = service.predictor.answers
        if parsed.min_confidence is not None:  # the request's own cut-off
            answers = Answers(answers.kind, parsed.min_confidence)
    except RequestError as error:
        return JSONResponse({"error": str(error)}, status_code=error.status)
    except FinetuneError as error:  # a cut-off the kind cannot abstain on (regression)
        return JSONResponse({"error": str(error)}, status_code=422)
    try:
        scores = await service.batcher.scores(parsed.texts)
    except Exception as error:  # noqa: BLE001 - one failed batch answers its requests with the reason; the server goes on
        return JSONResponse({"error": f"prediction failed: {error}"}, status_code=500)
    outputs = answers.rows(scores, parsed.top_k)
    return JSONResponse(outputs[0] if parsed.single else outputs)


class KeyCheck:
    """ASGI middleware: every request but GET /health needs ``Authorization: Bearer <key>``, else 401 and one line
    of JSON. The key is compared in constant time and never echoed."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.strip().encode()  # HTTP drops the spaces around a header's value

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization")
        if given is None:
            error = "this server needs an API key: send the header 'Authorization: Bearer <key>'"
        else:
            scheme, _, token = given.strip().partition(b" ")
            if hmac.compare_digest(token.strip(), self.key) and scheme.lower() == b"bearer":
                return await self.app(scope, receive, send)
            error = "wrong API key: send the server's key as 'Authorization: Bearer <key>'"
        from fastapi.responses import JSONResponse

        await JSONResponse({"error": error}, status_code=401, headers={"WWW-Authenticate": "Bearer"})(
            scope, receive, send
        )


def exposure_warning(host: str, api_key: Optional[str]) -> Optional[str]:
    """The startup warning for a server that listens beyond this machine without a key, or None."""
    if api_key:
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"warning: listening on {host} without an API key: anyone who can reach the port can use the model; "
        f"set {KEY_VARIABLE} (or --api-key)"
    )


def app_from_environment():
    """The application for each worker of ``--workers N`` (uvicorn imports it by name in each process)."""
    values = json.loads(os.environ[SETTINGS_VARIABLE])
    key_file = values.pop("api_key_file", None)
    return create_app(Settings(**values, api_key=Path(key_file).read_text(encoding="utf-8") if key_file else None))


@contextmanager
def worker_settings(settings: Settings):
    """The settings in SETTINGS_VARIABLE for the workers while they run. The key is not there (the workers'
    environment shows in /proc/<pid>/environ): it goes in a file only this user can read, removed at the end."""
    values = asdict(settings)
    key, path = values.pop("api_key"), None
    try:
        if key:
            descriptor, path = tempfile.mkstemp(prefix="finetune-serve-key-")  # mode 0600
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(key)
        os.environ[SETTINGS_VARIABLE] = json.dumps({**values, "api_key_file": path})
        yield
    finally:
        os.environ.pop(SETTINGS_VARIABLE, None)
        if path:
            os.unlink(path)


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, access_log: bool = False
) -> int:
    """Run the server until SIGTERM or Ctrl-C: stop accepting, finish the requests in flight, return 0."""
    import uvicorn

    warning = exposure_warning(host, settings.api_key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
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
        with worker_settings(settings):
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
