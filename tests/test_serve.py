"""The HTTP server (python -m finetune.serve): request checks, the CLI's answers for each kind and backend,
batching across requests, and a clean SIGTERM, on the session's tiny runs served on a free loopback port."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from finetune.serving.requests import Limits, RequestError, parse
from finetune.serving.serve import main as serve_main
from tests.helpers import REPO, body, call, free_socket, read_json, served, wait_ready, write_csv

pytestmark = pytest.mark.uses_trained_runs

KIND_RUNS = {
    "single_label": "topic_run",
    "pairs": "pair_run",
    "multi_label": "multi_label_run",
    "regression": "regression_run",
}
PROBES = {  # what each run reads, of varied lengths so that sorting and padding matter
    "single_label": [
        "coach league goal the season match",
        "shares profit market",
        "treaty minister",
        "robot " * 20 + "chip",
    ],
    "pairs": [("dog cat car house tree", "river city yes"), ("man", "woman child no"), ("tree " * 10, "dog yes")],
    "multi_label": ["coach league goal treaty minister border", "software chip robot", "the a on"],
    "regression": [
        ("dog cat car house", "tree river yes yes yes"),
        ("dog cat", "tree river city"),
        ("man woman", "yes"),
    ],
}


@pytest.mark.parametrize(
    "request_body, pairs, expected",
    [
        ({"text": "a"}, False, (["a"], True)),
        ({"text": "a", "text_pair": "b"}, True, ([("a", "b")], True)),
        ({"texts": ["a", "b", "c"]}, False, (["a", "b", "c"], False)),
        ({"texts": [["a", "b"], ["c", "d"]]}, True, ([("a", "b"), ("c", "d")], False)),
        ({"inputs": "a"}, False, (["a"], True)),
        ({"inputs": ["a", "b"]}, False, (["a", "b"], False)),  # a run of single texts: a list of two texts
        ({"inputs": ["a", "b"]}, True, ([("a", "b")], True)),  # a run of pairs: TEI's pair
        ({"inputs": [["a", "b"]], "truncate": True}, True, ([("a", "b")], False)),
    ],
)
def test_each_request_shape_reads_as_the_texts_it_holds(request_body, pairs, expected):
    parsed = parse(body(request_body), Limits(pairs=pairs))
    assert (parsed.texts, parsed.single) == expected


@pytest.mark.parametrize(
    "raw, limits, status, message",
    [
        (b"", Limits(), 400, "empty body"),
        (b"{not json", Limits(), 400, "the body is not JSON"),
        (body(["a"]), Limits(), 422, "the body must be a JSON object such as"),
        (body({"txt": "a"}), Limits(), 422, "unknown field 'txt'"),
        (body({}), Limits(), 422, "give exactly one of text, texts or inputs (got none)"),
        (
            body({"text": "a", "texts": ["b"]}),
            Limits(),
            422,
            "give exactly one of text, texts or inputs (got text and texts)",
        ),
        (body({"text": 5}), Limits(), 422, "text must be a string, got a number (5)"),
        (
            body({"texts": "a"}),
            Limits(),
            422,
            "texts must be a list of texts or of [first, second] pairs, got a string",
        ),
        (body({"texts": ["a", None]}), Limits(), 422, "texts[1] must be a text or a [first, second] pair, got null"),
        (body({"texts": [["a", 1]]}), Limits(), 422, "texts[0][1] must be a string, got a number (1)"),
        (body({"texts": []}), Limits(), 422, "the list of texts is empty"),
        (body({"texts": ["a", ["b", "c"]]}), Limits(), 422, "a mix of single texts and pairs"),
        (
            body({"text": "a", "text_pair": "b"}),
            Limits(pairs=False),
            422,
            "this run classifies one text at a time, not pairs",
        ),
        (body({"inputs": [["a", "b"]]}), Limits(pairs=False), 422, "this run classifies one text at a time, not pairs"),
        (body({"text": "a"}), Limits(pairs=True), 422, "this run classifies pairs"),
        (
            body({"texts": ["a"] * 4}),
            Limits(max_texts=3),
            413,
            "4 texts in one request; this server takes at most 3 (--max-texts)",
        ),
        (
            body({"texts": ["a", "b" * 11]}),
            Limits(max_chars=10),
            413,
            "text 1 has 11 characters; this server takes at most 10 (--max-chars)",
        ),
        (body({"text": "a", "top_k": 0}), Limits(), 422, "top_k must be a whole number >= 1, got 0"),
        (body({"inputs": "a", "raw_scores": True}), Limits(), 422, "raw_scores is not served"),
        (body({"texts": ["a"], "text_pair": "b"}), Limits(), 422, "text_pair goes with text"),
    ],
)
def test_a_bad_request_gets_its_status_and_one_line_naming_the_problem(raw, limits, status, message):
    with pytest.raises(RequestError) as caught:
        parse(raw, limits)
    assert caught.value.status == status and message in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_without_a_model_stops_before_the_port_opens(tmp_path, capsys):
    assert serve_main([str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip() == f"error: No such folder: {tmp_path / 'missing'}"
    assert serve_main([str(tmp_path), "--backend", "onnx"]) == 1
    assert "holds no model" in capsys.readouterr().err


def test_the_api_key_comes_from_the_option_else_the_variable_and_an_empty_one_stops(monkeypatch, tmp_path, capsys):
    from finetune.serving.serve import parse_args, settings_of

    monkeypatch.setenv("FINETUNE_API_KEY", "from-the-variable")
    assert settings_of(parse_args(["run", "--api-key", "from-the-option"])).api_key == "from-the-option"
    settings = settings_of(parse_args(["run"]))
    assert settings.api_key == "from-the-variable" and "from-the-variable" not in repr(settings)
    monkeypatch.delenv("FINETUNE_API_KEY")
    assert settings_of(parse_args(["run"])).api_key is None
    assert serve_main([str(tmp_path), "--api-key", " "]) == 1
    assert capsys.readouterr().err == "error: --api-key is empty: give a key, or unset it to serve without one\n"


@pytest.mark.parametrize(
    "host, api_key, warns",
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("192.168.1.7", None, True),
        ("myhost.example", None, True),
        ("0.0.0.0", "k3y", False),
        ("127.0.0.1", None, False),
        ("127.0.1.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
)
def test_listening_beyond_this_machine_without_a_key_warns_in_one_line(host, api_key, warns):
    from finetune.serving.server import exposure_warning

    warning = exposure_warning(host, api_key)
    assert (warning is not None) == warns
    if warns:
        assert warning.startswith(f"warning: listening on {host} without an API key") and "\n" not in warning
        assert "anyone who can reach the port can use the model" in warning and "FINETUNE_API_KEY" in warning


def test_workers_read_the_key_from_a_private_file_not_from_their_environment(monkeypatch):
    import stat

    from finetune.serving import server

    monkeypatch.delenv(server.SETTINGS_VARIABLE, raising=False)
    monkeypatch.setattr(server, "create_app", lambda settings: settings)  # the settings each worker would serve
    settings = server.Settings("run", max_batch=8, api_key="s3cret-key")
    with server.worker_settings(settings):
        shared = json.loads(os.environ[server.SETTINGS_VARIABLE])
        key_file = Path(shared["api_key_file"])
        assert "s3cret-key" not in os.environ[server.SETTINGS_VARIABLE] and "api_key" not in shared
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.read_text() == "s3cret-key"
        assert server.app_from_environment() == settings
    assert not key_file.exists() and server.SETTINGS_VARIABLE not in os.environ
    with server.worker_settings(server.Settings("run")):  # no key: no file
        assert json.loads(os.environ[server.SETTINGS_VARIABLE])["api_key_file"] is None
        assert server.app_from_environment() == server.Settings("run")


# --- servers on a free loopback port ------------------------------------------------------------


def cli_rows(run_dir: Path, texts, tmp_path: Path, backend: str):
    """``python -m finetune.predict --input --output --all-scores`` on ``texts``: the rows it wrote."""
    from finetune.runs.model_folder import ModelFolder
    from finetune.serving.predict import main as predict_main

    fields = ModelFolder.open(run_dir).record.text_fields
    rows = [dict(zip(fields, t if isinstance(t, tuple) else (t,))) for t in texts]
    source, output = write_csv(tmp_path / f"in_{backend}.csv", rows), tmp_path / f"out_{backend}.jsonl"
    options = ["--precision", "fp32"] if backend == "torch" else ["--backend", "onnx"]
    assert predict_main([str(run_dir), "--input", str(source), "--output", str(output), "--all-scores", *options]) == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


def same_answers(first, second, tol: float = 1e-6) -> bool:
    """Two answers of the server: the same labels in the same order, scores within ``tol`` (a batch's
    company changes the padding and the order of the sums, so fp32 scores move in the ninth decimal)."""
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(same_answers(first[k], second[k], tol) for k in first)
    if isinstance(first, list):
        return len(first) == len(second) and all(same_answers(a, b, tol) for a, b in zip(first, second))
    return abs(first - second) <= tol if isinstance(first, float) else first == second


def assert_same_as_cli(kind: str, answers, rows) -> None:
    """The server's answers against the CLI's rows: labels identical, scores within 1e-6."""
    assert len(answers) == len(rows)
    for answer, row in zip(answers, rows):
        if kind == "regression":  # one vocabulary: the answer's field is the column's name
            assert set(answer) == {"predicted"} and answer["predicted"] == pytest.approx(row["predicted"], abs=1e-6)
            continue
        for item in answer:
            assert item["score"] == pytest.approx(row[f"p_{item['label']}"], abs=1e-6)
        if kind == "multi_label":
            assert sorted(item["label"] for item in answer) == sorted(filter(None, row["predicted"].split(",")))
        else:
            assert answer[0]["label"] == row["predicted"] and len(answer) == len([k for k in row if k.startswith("p_")])
            assert answer[0]["score"] == pytest.approx(row["confidence"], abs=1e-6)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """An fp32 ONNX export of a run, made once per module outside the run's folder
    (the session's runs stay as they are)."""
    from finetune.serving.export import main as export_main

    folders = {}

    def export(run_dir: Path) -> Path:
        if run_dir not in folders:
            folders[run_dir] = tmp_path_factory.mktemp("serve_exports") / run_dir.name
            assert export_main([str(run_dir), "--output", str(folders[run_dir]), "--threads", "1"]) == 0
        return folders[run_dir]

    return export


@pytest.mark.trains
@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("kind", list(KIND_RUNS))
def test_the_server_answers_as_the_cli_for_each_kind_and_backend(kind, backend, request, exports, tmp_path):
    run_dir = request.getfixturevalue(KIND_RUNS[kind])
    path, settings = (run_dir, {"precision": "fp32"}) if backend == "torch" else (exports(run_dir), {"threads": 1})
    probes = PROBES[kind]
    rows = cli_rows(path, probes, tmp_path, backend)
    as_lists = [list(t) if isinstance(t, tuple) else t for t in probes]
    with served(path, **settings) as url:
        status, answers = call(url, "/predict", {"texts": as_lists})
        assert status == 200
        assert_same_as_cli(kind, answers, rows)
        one = (
            {"text": probes[0][0], "text_pair": probes[0][1]}
            if kind in ("pairs", "regression")
            else {"text": probes[0]}
        )
        for payload, expected in (
            (one, answers[0]),  # one input: its output, not a list
            ({"inputs": as_lists[0]}, answers[0]),  # TEI: a text, or a pair
            ({"inputs": as_lists[::-1]}, answers[::-1]),
        ):  # TEI: a list, in its own order
            status, answer = call(url, "/predict", payload)
            assert status == 200 and same_answers(answer, expected), (payload, answer)
        status, info = call(url, "/info")
    expected_kind = "single_label" if kind == "pairs" else kind
    assert (
        status == 200 and info["kind"] == expected_kind and info["backend"] == backend and info["precision"] == "fp32"
    )
    assert info["inputs"] == ("pairs: [first, second]" if kind in ("pairs", "regression") else "single texts")
    assert (info["thresholds"] is not None) == (kind == "multi_label") and info["versions"]["fastapi"]
    if kind == "multi_label":
        saved = read_json(run_dir / "model" / "thresholds.json")["thresholds"]
        assert (
            info["thresholds"] == pytest.approx(saved, abs=0)
            and info["saved_with_model"]["thresholds.json"]["thresholds"] == saved
        )
    id2label = read_json(run_dir / "model" / "config.json")["id2label"]
    assert info["labels"] == [id2label[str(i)] for i in range(len(id2label))]
    calibration = (
        run_dir / "model" / "calibration.json"
    )  # regression fits none; the classifiers' temperatures, as the run saved them
    assert info["calibration"] == (read_json(calibration) if calibration.is_file() else {"method": "none"})
    assert info["long_text"]["strategy"] == "truncate"  # the tiny runs read every text whole
    assert info["batching"]["max_tokens_per_pass"] == 1024  # the CPU budget of either backend


@pytest.mark.trains
def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_answers(topic_run):
    probes = PROBES["single_label"]
    requests = [[probes[i % 4], probes[(i + 1) % 4]][: 1 + i % 2] for i in range(24)]
    with served(topic_run, precision="fp32", max_wait_ms=200) as url:
        alone = [call(url, "/predict", {"texts": texts})[1] for texts in requests]  # one at a time: a pass each
        _, before = call(url, "/stats")
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda texts: call(url, "/predict", {"texts": texts}), requests))
        _, after = call(url, "/stats")
        bad = call(url, "/predict", {"texts": ["fine", 7]})  # a bad request between good ones changes nothing
        again = call(url, "/predict", {"texts": requests[0]})
    assert before["forward_passes"] == before["batches"] == len(requests) and before["texts"] == sum(map(len, requests))
    assert all(
        status == 200 for status, _ in together
    )  # each caller gets its own texts' answers, whatever it was batched with
    assert all(same_answers(answer, expected) for (_, answer), expected in zip(together, alone))
    passes = after["forward_passes"] - before["forward_passes"]
    assert after["requests"] - before["requests"] == len(requests) and passes < len(requests) / 2, after
    assert bad == (422, {"error": "texts[1] must be a text or a [first, second] pair, got a number (7)"})
    assert again[0] == 200 and same_answers(again[1], alone[0])


API_KEY = "k3y-never-echoed"


@pytest.mark.trains
def test_with_an_api_key_every_endpoint_but_health_needs_it_and_the_key_is_never_echoed(topic_run, capfd):
    import httpx

    payload = {"texts": PROBES["single_label"][:2]}
    endpoints = [("POST", "/predict"), ("GET", "/info"), ("GET", "/stats"), ("GET", "/docs"), ("GET", "/openapi.json")]
    with served(topic_run, precision="fp32") as url:
        expected = call(url, "/predict", payload)
        assert call(url, "/info")[1]["auth"] == "none"
    with served(topic_run, precision="fp32", api_key=API_KEY) as url:
        refused = {
            (method, path, header): httpx.request(method, url + path, headers=header and {"authorization": header})
            for method, path in endpoints
            for header in [None, "Bearer wrong-key", f"Basic {API_KEY}", API_KEY]
        }
        right = {"authorization": f"Bearer {API_KEY}"}
        answered = httpx.post(url + "/predict", content=body(payload), headers=right)
        info = httpx.get(url + "/info", headers=right)
        documented = [httpx.get(url + path, headers=right).status_code for path in ("/docs", "/openapi.json")]
        health = httpx.get(url + "/health")
    for (_, path, header), response in refused.items():
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", (path, header)
        assert "\n" not in response.text and API_KEY not in response.text
        assert response.json()["error"].startswith(
            "this server needs an API key" if header is None else "wrong API key"
        )
    assert expected[0] == 200 and answered.status_code == 200 and same_answers(answered.json(), expected[1])
    assert info.status_code == 200 and info.json()["auth"] == "api key" and API_KEY not in info.text
    assert documented == [200, 200] and (health.status_code, health.json()) == (200, {"status": "ready"})
    assert API_KEY not in "".join(capfd.readouterr())


@pytest.mark.trains
def test_requests_queued_together_go_through_the_model_in_one_pass_in_their_own_order(topic_run):
    from finetune.inference.predictor import Predictor
    from finetune.serving.batching import Batcher

    predictor = Predictor.load(topic_run, precision="fp32")
    texts = PROBES["single_label"]
    expected = predictor.scores(texts)
    requests = [texts[i:] for i in range(4)] + [texts[::-1]]

    async def together():
        batcher = Batcher(predictor, max_batch=64, max_wait_ms=0)
        worker = asyncio.create_task(batcher.run())
        answers = await asyncio.gather(*(batcher.scores(r) for r in requests))
        worker.cancel()
        return answers, batcher.stats()

    passes, rows = predictor.forward_passes, predictor.rows_passed  # the predictor counts since it loaded
    answers, stats = asyncio.run(together())
    assert stats == {"requests": 5, "texts": 14, "batches": 1, "forward_passes": passes + 1, "rows": rows + 14}
    for request_texts, answer in zip(requests, answers):
        np.testing.assert_allclose(answer, expected[[texts.index(t) for t in request_texts]], atol=1e-6)


def test_the_workers_socket_gives_each_connection_tcp_nodelay():
    import uvicorn

    from finetune.serving.server import listening_socket

    listener = listening_socket(uvicorn.Config(app=None, host="127.0.0.1", port=0, log_level="warning"))

    async def accepted_nodelay():
        accepted = asyncio.get_running_loop().create_future()

        class Report(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(
                    transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                )
                transport.close()

        server = await asyncio.get_running_loop().create_server(Report, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        value = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        return value

    assert listener.proto == socket.IPPROTO_TCP
    assert asyncio.run(accepted_nodelay()) != 0  # Nagle off: answers go out at once, not after the client's delayed ACK


def test_a_request_is_answered_when_its_own_pass_ends_not_the_whole_batch():
    from types import SimpleNamespace

    from finetune.serving.batching import Batcher

    second_pass = threading.Event()

    def passes(texts):  # two passes, shortest first: "b" then "a"; the second waits until the test lets it go
        yield np.array([1]), np.array([[0.2, 0.8]])
        assert second_pass.wait(10)
        yield np.array([0]), np.array([[0.9, 0.1]])

    predictor = SimpleNamespace(batch_size=64, passes=passes, forward_passes=0, rows_passed=0)

    async def scenario():
        batcher = Batcher(predictor, max_batch=64, max_wait_ms=0)
        first, short = asyncio.ensure_future(batcher.scores(["a"])), asyncio.ensure_future(batcher.scores(["b"]))
        worker = asyncio.create_task(batcher.run())
        answer = await asyncio.wait_for(short, 10)  # while "a"'s pass has not run
        waiting = not first.done()
        second_pass.set()
        answers = await asyncio.wait_for(first, 10), answer
        worker.cancel()
        return waiting, answers, batcher.stats()

    waiting, (long_answer, short_answer), stats = asyncio.run(scenario())
    assert waiting and stats["batches"] == 1
    np.testing.assert_allclose(short_answer, [[0.2, 0.8]])
    np.testing.assert_allclose(long_answer, [[0.9, 0.1]])


@pytest.mark.trains
def test_sigterm_finishes_the_request_in_flight_then_exits_0(topic_run):
    import httpx

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    command = [
        sys.executable,
        "-m",
        "finetune.serve",
        str(topic_run),
        "--port",
        str(port),
        "--max-wait-ms",
        "0",
        "--threads",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "FINETUNE_API_KEY"}  # a key the tester set would refuse /stats
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        texts = [PROBES["single_label"][3] * 3] * 1024
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call, url, "/predict", {"texts": texts}, 300)
            while call(url, "/stats")[1]["requests"] == 0:  # the big request has reached the batcher
                time.sleep(0.01)
            server.send_signal(signal.SIGTERM)
            status, answers = pending.result()
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    output = server.stdout.read()
    assert status == 200 and len(answers) == 1024 and answers[0] == answers[-1]
    assert "Shutting down" in output and "Finished server process" in output and "Traceback" not in output
    with pytest.raises(httpx.TransportError):
        call(url, "/health", timeout=2)
