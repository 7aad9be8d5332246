"""One road from scores to answers: the same rows with the same options get the same answers (labels, scores,
abstentions) from the ``Predictor``, ``python -m finetune.predict`` and ``POST /predict``, with PyTorch and with
ONNX, from the run folder and from a copy of its ``model/`` (or export) alone, moved elsewhere."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import call, read_json, served, topic_rows, write_csv

pytestmark = [pytest.mark.uses_trained_runs, pytest.mark.trains]
TOP_K = 2


@pytest.fixture(scope="module")
def export_dir(topic_run, tmp_path_factory) -> Path:
    """The topic run's fp32 ONNX export, made once for the module outside the run's folder."""
    from finetune.serving.export import main as export_main

    folder = tmp_path_factory.mktemp("answers") / "export"
    assert export_main([str(topic_run), "--output", str(folder), "--threads", "1"]) == 0
    return folder


def cli_answers(path: Path, texts, cut_off: float, folder: Path, settings: dict):
    """The predict command's rows, as the Predictor's answers: (label or ABSTAINED, confidence, top scores);
    ``settings`` as the Predictor's (fp32 for PyTorch: on a CPU with native bf16, auto would pick bf16)."""
    from finetune.serving.predict import main as predict_main

    source, output = write_csv(folder / "in.csv", [{"text": t} for t in texts]), folder / "out.jsonl"
    options = ["--min-confidence", str(cut_off), "--all-scores", "--overwrite"]
    options += [item for key, value in settings.items() for item in (f"--{key}", str(value))]
    assert predict_main([str(path), "--input", str(source), "--output", str(output), *options]) == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


def flat(answer):
    """An answer as (label or "(abstained)", {label: score} of the answered labels or of the best guess)."""
    if isinstance(answer, dict):  # abstained
        return answer["predicted"], {item["label"]: item["score"] for item in answer["best_guess"]}
    return answer[0]["label"], {item["label"]: item["score"] for item in answer}


def assert_same(first, second, tol: float) -> None:
    assert [flat(a)[0] for a in first] == [flat(b)[0] for b in second]
    for a, b in zip(first, second):
        scores_a, scores_b = flat(a)[1], flat(b)[1]
        assert scores_a.keys() == scores_b.keys()
        assert all(abs(scores_a[k] - scores_b[k]) <= tol for k in scores_a), (a, b)


def test_predictor_command_and_server_give_the_same_answers_from_any_copy(topic_run, export_dir, tmp_path):
    from finetune import Predictor
    from finetune.inference.answers import ABSTAINED

    texts = [row["text"] for row in topic_rows(12, seed=21)] + ["robot " * 30 + "chip", "the a on"]
    elsewhere = tmp_path / "elsewhere"
    model_copy = Path(shutil.copytree(topic_run / "model", elsewhere / "model"))  # nothing of the run beside it
    export_copy = Path(shutil.copytree(export_dir, elsewhere / "export"))
    # A cut-off between the texts' confidences, so that some are answered and some not.
    confidence = np.sort(Predictor.load(topic_run, precision="fp32").scores(texts).max(axis=1))
    cut_off = float((confidence[len(texts) // 2 - 1] + confidence[len(texts) // 2]) / 2)

    sources = {"torch": [topic_run, model_copy], "onnx": [export_dir, export_copy]}
    by_backend = {}
    for backend, paths in sources.items():
        settings = {"precision": "fp32"} if backend == "torch" else {"threads": 1}
        for path in paths:
            predictor = Predictor.load(path, min_confidence=cut_off, **settings)
            assert predictor.backend == backend
            answers = predictor(texts, top_k=TOP_K)
            rows = cli_answers(path, texts, cut_off, tmp_path, settings)
            with served(path, min_confidence=cut_off, **settings) as url:
                status, served_answers = call(url, "/predict", {"texts": texts, "top_k": TOP_K})
                assert status == 200
                status, per_request = call(url, "/predict", {"texts": texts, "top_k": TOP_K, "min_confidence": 0.01})
                assert status == 200 and ABSTAINED not in json.dumps(per_request)
                status, info = call(url, "/info")
                assert info["min_confidence"] == cut_off and info["kind"] == "single_label"
            abstained = [isinstance(a, dict) for a in answers]
            assert 0 < sum(abstained) < len(texts)  # the cut-off splits the texts
            assert [row["abstained"] for row in rows] == abstained
            assert [row["predicted"] for row in rows] == [flat(a)[0] for a in answers]
            for answer, row in zip(answers, rows):
                assert all(abs(row[f"p_{label}"] - s) <= 1e-6 for label, s in flat(answer)[1].items())
                assert isinstance(answer, list) or abs(row["confidence"] - answer["confidence"]) <= 1e-6
            assert_same(answers, served_answers, 1e-6)
            by_backend.setdefault(backend, []).append(answers)
    for from_run, from_copy in by_backend.values():
        assert_same(from_run, from_copy, 0.0)  # a copy of the folder answers exactly as the run does
    assert_same(by_backend["torch"][0], by_backend["onnx"][0], 1e-4)  # fp32 ONNX: the last bits differ


def test_the_model_folder_describes_itself_and_embeddings_agree_across_backends(topic_run, export_dir):
    from finetune import Predictor

    record = read_json(topic_run / "model" / "finetune.json")
    assert record["kind"] == "single_label" and record["text_fields"] == ["text"] and record["max_length"] == 32
    assert read_json(export_dir / "finetune.json") == record  # one record, copied: not a second format
    assert "task" not in read_json(export_dir / "export.json")
    texts = [row["text"] for row in topic_rows(6, seed=22)]
    torch_vectors = Predictor.load(topic_run, precision="fp32").embeddings(texts)
    onnx_vectors = Predictor.load(export_dir, threads=1).embeddings(texts)
    hidden = read_json(topic_run / "model" / "config.json")["hidden_size"]
    assert torch_vectors.shape == onnx_vectors.shape == (len(texts), hidden)
    np.testing.assert_allclose(torch_vectors, onnx_vectors, atol=1e-4)
    assert np.linalg.norm(torch_vectors[0] - torch_vectors[1]) > 1e-3  # texts get vectors of their own
    # Read as windows, a long text's vector is its windows' mean: a text of one window gets its own vector.
    windowed = Predictor.load(topic_run, precision="fp32", long_text="chunks").embeddings(texts[:2])
    np.testing.assert_allclose(windowed, torch_vectors[:2], atol=1e-5)
