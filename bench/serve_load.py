"""Load test of ``python -m finetune.serve``: throughput and latency at 1, 8 and 32 concurrent clients.

    python bench/serve_load.py runs/minilm_ag [--int8 runs/minilm_ag/export_int8] [--rows 2000] [--clients 1,8,32]

The run is the one bench/predict_speed.py uses (docs/benchmarks/inference.md). For each backend (PyTorch
with its default precision, and the int8 ONNX export), in one process:

1. offline: the ``Predictor`` classifies the first ROWS texts of DATA in one call (what
   ``finetune.predict`` does with a file), and one text at a time (the median of --single-calls calls, 200 by default);
2. served: ``python -m finetune.serve`` on a free loopback port; for each number of clients,
   that many client threads send the ROWS texts, one text per request, each client waiting
   for its answer before sending the next (keep-alive connections). Each level sends exactly
   ROWS requests; every request has a timeout; the server is stopped with SIGTERM at the end.

The offline measurement is taken before the first level and again after each (the server idle
meanwhile), and the ratios are against their mean, so that the machine's busy moments weigh on
both sides alike.

Prints, per backend and clients: texts per second, p50/p95/p99 latency, and the two ratios the
targets name: served throughput against offline (target at 32 clients: >= 0.8x) and the p50 of
one client against one ``Predictor`` call on one text (target: <= 1.5x).
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from finetune.inference.predictor import Predictor  # noqa: E402

TIMEOUT_S = 60  # one request; a level or start-up that takes longer than a few minutes fails the benchmark


def offline(path: Path, backend: str, texts: List[str], single_calls: int) -> Dict[str, float]:
    """Texts per second of one Predictor call on all texts, and the median ms of a call on one text."""
    predictor = Predictor.load(path, backend=backend)
    predictor.scores(texts[:64])  # warm-up
    started = time.perf_counter()
    predictor.scores(texts)
    throughput = len(texts) / (time.perf_counter() - started)
    single = []
    for text in texts[:single_calls]:
        started = time.perf_counter()
        predictor(text)
        single.append(time.perf_counter() - started)
    return {"throughput": throughput, "one_text_ms": 1000 * statistics.median(single), "how": predictor.describe()}


def start_server(path: Path, backend: str) -> (subprocess.Popen, int):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "finetune.serve", str(path), "--backend", backend, "--port", str(port)],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "FINETUNE_API_KEY"},  # measured without a key's check
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {server.stderr.read()}")
        try:
            status, _ = request(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "GET", "/health")
            if status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the server was not ready within 300 s")


def request(connection: http.client.HTTPConnection, method: str, path: str, payload=None):
    connection.request(
        method,
        path,
        body=None if payload is None else json.dumps(payload),
        headers={"content-type": "application/json"},
    )
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def load(port: int, texts: List[str], clients: int) -> Dict[str, float]:
    """``clients`` threads send the texts one per request, each in turn: throughput and latency percentiles."""
    latencies: List[float] = []
    failures: List[str] = []
    next_row, lock = iter(range(len(texts))), threading.Lock()

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        while True:
            with lock:
                row = next(next_row, None)
            if row is None:
                return
            started = time.perf_counter()
            status, answer = request(connection, "POST", "/predict", {"text": texts[row]})
            latencies.append(time.perf_counter() - started)
            if status != 200:
                failures.append(f"{status} {answer}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    p50, p95, p99 = (1000 * float(np.percentile(latencies, q)) for q in (50, 95, 99))
    return {"throughput": len(texts) / wall, "p50": p50, "p95": p95, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ag_news" / "test.csv")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--int8", type=Path, default=None, help="the int8 export folder (default RUN/export_int8)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument(
        "--single-calls", type=int, default=200, help="Predictor calls on one text, for the median one-text latency"
    )
    parser.add_argument("--backends", default="torch,onnx_int8")
    args = parser.parse_args()
    texts = pd.read_csv(args.data, keep_default_na=False)["text"].head(args.rows).tolist()
    levels = [int(c) for c in args.clients.split(",")]
    paths = {"torch": (args.run, "torch"), "onnx_int8": (args.int8 or args.run / "export_int8", "onnx")}
    print(f"{len(texts)} texts of {args.data.name}, run {args.run.name}; one text per request, clients: {levels}\n")
    print(
        "| backend | clients | texts/s | p50 ms | p95 ms | p99 ms | vs offline throughput | p50 vs one Predictor call |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.backends.split(","):
        path, backend = paths[name]
        server, port = start_server(path, backend)
        served = {}
        try:
            load(port, texts[:64], 8)  # warm-up
            # Offline and served take turns, level by level, and each ratio is taken against the mean
            # of the offline measurements: a busy moment of the machine slows both sides alike.
            references = [offline(path, backend, texts, args.single_calls)]
            for clients in levels:
                served[clients] = load(port, texts, clients)
                references.append(offline(path, backend, texts, args.single_calls))
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(120)
        throughput = statistics.mean(r["throughput"] for r in references)
        one_text = statistics.mean(r["one_text_ms"] for r in references)
        spread = ", ".join(f"{r['throughput']:.0f}" for r in references)
        print(
            f"| {name} offline ({references[0]['how']}; mean of {len(references)}: {spread}) | - | "
            f"{throughput:.1f} | {one_text:.2f} (one text) | | | 1.00x | |"
        )
        for clients, r in served.items():
            print(
                f"| {name} served | {clients} | {r['throughput']:.1f} | "
                f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
                f"{r['throughput'] / throughput:.2f}x | {r['p50'] / one_text:.2f}x |",
                flush=True,
            )
        print(f"| {name}: server stopped by SIGTERM, exit code {code} | | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
