"""ONNX export: each task kind and architecture, the parity check, the int8 gate, and serving without PyTorch."""

import json
from pathlib import Path

import numpy as np
import pytest

from finetune import Predictor
from finetune.serving.export import main as export_main
from finetune.serving.predict import main as predict_main
from tests.helpers import TINY_CONFIGS, python, read_json, topic_rows, write_csv

KIND_RUNS = {"single_label": "topic_run", "multi_label": "multi_label_run", "regression": "regression_run"}
PROBES = {  # inputs each kind's run answers: texts, or pairs for the STS-B-like run
    "single_label": ["coach league goal the season match", "shares profit market", "treaty minister"],
    "multi_label": ["coach league goal treaty minister border", "software chip robot"],
    "regression": [("dog cat car house", "tree river yes yes yes"), ("dog cat", "tree river city")],
}

pytestmark = (
    pytest.mark.uses_trained_runs
)  # with the session's trained runs under pytest -n: some are asked for by name


@pytest.mark.trains
@pytest.mark.parametrize("kind", list(KIND_RUNS))
def test_fp32_export_of_each_kind_matches_the_pytorch_model_on_the_runs_validation_split(kind, request, capsys):
    run_dir = request.getfixturevalue(KIND_RUNS[kind])
    assert export_main([str(run_dir)]) == 0
    printed = capsys.readouterr()
    export_dir = run_dir / "export"
    record = read_json(export_dir / "export.json")
    assert json.loads(printed.out) == {"output": str(export_dir), **record}  # what export.json records, as JSON
    printed = printed.err  # and in words
    names = {p.name for p in export_dir.iterdir()}
    assert {"model.onnx", "export.json", "finetune.json", "config.json", "tokenizer.json"} <= names
    assert ("thresholds.json" in names) == (kind == "multi_label") and not list(run_dir.glob(".export*"))
    if kind == "multi_label":
        assert read_json(export_dir / "thresholds.json") == read_json(run_dir / "model" / "thresholds.json")
    # What the answers mean is the model record, the same file as in model/; export.json tells how it was made.
    model_record = read_json(export_dir / "finetune.json")
    assert model_record == read_json(run_dir / "model" / "finetune.json") and model_record["kind"] == kind
    assert record["outputs"] == ["logits", "embedding"]
    assert record["precision"] == "fp32" and record["opset"] == 17 and record["format"] == "onnx"
    assert record["sizes_bytes"]["model.onnx"] == (export_dir / "model.onnx").stat().st_size > 0
    parity = record["parity"]
    validation = read_json(run_dir / "metrics.json")["validation"]
    metric = parity["metric"]
    # The rebuilt split is the one the run was scored on: same rows, same metric for the PyTorch model.
    assert parity["rows"] == validation["rows"] and parity["pytorch"] == pytest.approx(validation[metric], abs=1e-6)
    assert parity["checked_on"].startswith("the validation split of the run")
    assert parity["max_abs_logit_difference"] < 1e-4 and parity["agreement"] == 1.0
    assert parity["onnx"] == pytest.approx(parity["pytorch"], abs=1e-6) and abs(parity["drop_points"]) < 1e-4
    assert (
        f"{metric}: PyTorch {parity['pytorch']:.4f}, ONNX {parity['onnx']:.4f}" in printed
        and "agreement 100.00%" in printed
    )

    torch_out = Predictor.load(run_dir, backend="torch", precision="fp32")(PROBES[kind])
    for path in (run_dir, export_dir):  # the run folder (its export/) or the export folder itself
        onnx = Predictor.load(path, backend="onnx", threads=1)
        assert onnx.backend == "onnx" and onnx.threads == 1 and "ONNX Runtime on CPU, fp32" in onnx.describe()
        assert _close(onnx(PROBES[kind]), torch_out)


def _close(first, second, tol: float = 1e-4) -> bool:
    """The kind's outputs of two backends: the same labels in the same order, scores within ``tol``."""
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(_close(first[k], second[k], tol) for k in first)
    if isinstance(first, list):
        return len(first) == len(second) and all(_close(a, b, tol) for a, b in zip(first, second))
    return abs(first - second) <= tol if isinstance(first, float) else first == second


@pytest.fixture(scope="module")
def check_file(tmp_path_factory) -> Path:
    """Unlabeled texts of varied lengths (padding matters, left or right) for models without a run."""
    rows = [{"text": r["text"] + " the" * (i % 7)} for i, r in enumerate(topic_rows(30, seed=41))]
    return write_csv(tmp_path_factory.mktemp("check") / "texts.csv", rows)


@pytest.mark.parametrize("model_type", list(TINY_CONFIGS))
def test_every_architecture_exports_with_parity(model_type, tiny_models, check_file, tmp_path, capsys):
    output = tmp_path / "export"
    assert (
        export_main(
            [str(tiny_models[model_type]), "--check-file", str(check_file), "--output", str(output), "--threads", "1"]
        )
        == 0
    )
    parity = read_json(output / "export.json")["parity"]
    assert (
        parity["rows"] == 30
        and parity["max_abs_logit_difference"] < 1e-4
        and parity["agreement"] == 1.0
        and parity["threads"] == 1
    )
    assert "pytorch" not in parity  # no labels in the file: no metric, the logits and predictions are compared
    record = read_json(output / "export.json")
    assert record["source"]["model_type"] == model_type and record["padding_side"] == (
        "left" if model_type == "xlnet" else "right"
    )


def test_int8_export_is_gated_on_the_metric_and_a_refusal_leaves_nothing(topic_run, tmp_path, capsys):
    output = tmp_path / "int8"
    assert export_main([str(topic_run), "--quantize", "int8", "--output", str(output)]) == 0
    record = read_json(output / "export.json")
    parity = record["parity"]
    assert record["precision"] == "int8" and record["int8"]["per_channel"] and record["int8"]["head_in_fp32"]
    assert parity["drop_points"] <= 0.5 and parity["agreement"] >= 0.9 and 0 < parity["max_abs_logit_difference"] < 1
    assert record["sizes_bytes"]["model.onnx"] < record["sizes_bytes"]["pytorch_weights"]
    capsys.readouterr()

    refused = tmp_path / "refused"
    assert export_main([str(topic_run), "--quantize", "int8", "--output", str(refused), "--max-drop", "-1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(
        f"error: Export refused, nothing written: int8 loses {parity['drop_points']:.2f} points of accuracy, "
        "more than --max-drop -1"
    )
    assert f"accuracy: PyTorch {parity['pytorch']:.4f}, ONNX {parity['onnx']:.4f}" in error and "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]  # neither the folder nor a temporary one

    before = {p.name: p.read_bytes() for p in output.iterdir()}  # a refused replacement keeps the export that was there
    assert (
        export_main([str(topic_run), "--quantize", "int8", "--output", str(output), "--max-drop", "-1", "--overwrite"])
        == 1
    )
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before and sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["int8"]


NO_TORCH = """
import sys
from finetune.serving.predict import main
codes = [main(sys.argv[1:4]), main(sys.argv[4:9]), main(sys.argv[9:])]
print("codes", codes, "torch imported:", "torch" in sys.modules)
"""


def test_onnx_backend_answers_a_text_a_pair_and_a_file_without_importing_torch(
    topic_run, regression_run, tmp_path, capsys
):
    for run_dir in (topic_run, regression_run):
        if not (run_dir / "export").exists():
            assert export_main([str(run_dir)]) == 0
    rows = topic_rows(20, seed=42)
    source = write_csv(tmp_path / "in.csv", rows)
    text = "coach league goal the season match"
    pair = ["dog cat car house", "--text-pair", "tree river yes yes yes"]
    args = [
        str(topic_run),
        text,
        "--backend=onnx",
        str(regression_run),
        *pair,
        "--backend=onnx",
        str(topic_run),
        "--input",
        str(source),
        "--output",
        str(tmp_path / "onnx.csv"),
        "--backend=onnx",
    ]
    result = python("-c", NO_TORCH, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("codes [0, 0, 0] torch imported: False")
    assert (
        "Model: ONNX Runtime on CPU, fp32" in result.stderr and "20/20" in result.stderr
    )  # what ran, and the progress bar

    capsys.readouterr()
    assert predict_main([str(topic_run), text, "--precision", "fp32"]) == 0
    assert predict_main([str(regression_run), *pair, "--precision", "fp32"]) == 0
    assert (
        predict_main(
            [str(topic_run), "--input", str(source), "--output", str(tmp_path / "torch.csv"), "--precision", "fp32"]
        )
        == 0
    )
    torch_printed = capsys.readouterr().out.splitlines()
    onnx_printed = result.stdout.splitlines()
    assert onnx_printed[:2] == torch_printed[:2]  # the text's and the pair's answers, as printed (3 decimals)
    onnx_file, torch_file = (
        (tmp_path / "onnx.csv").read_text().splitlines(),
        (tmp_path / "torch.csv").read_text().splitlines(),
    )
    assert [line.rsplit(",", 1)[0] for line in onnx_file] == [
        line.rsplit(",", 1)[0] for line in torch_file
    ]  # rows, order, labels
    assert np.allclose(
        [float(line.rsplit(",", 1)[1]) for line in onnx_file[1:]],
        [float(line.rsplit(",", 1)[1]) for line in torch_file[1:]],
        atol=1e-4,
    )
    onnx_metrics, torch_metrics = read_json(tmp_path / "onnx.metrics.json"), read_json(tmp_path / "torch.metrics.json")
    assert onnx_metrics == torch_metrics and onnx_metrics["rows"] == 20 and onnx_metrics["accuracy"] >= 0.75


@pytest.mark.parametrize(
    "setup, expected",
    [
        (
            "plain_model",
            "is not a run folder (no .hydra/config.yaml), so it has no validation split: "
            "give the rows to check with --check-file FILE.",
        ),
        ("output_exists", "exists and holds no export; choose a new folder (--overwrite replaces only an export)."),
        ("int8_unlabeled", "--quantize int8 is gated on the task's metric, which needs labels"),
        ("no_export", "has no ONNX export (export/export.json): create one with python -m finetune.export"),
        ("onnx_precision", "--precision applies to --backend torch"),
        ("torch_on_export", "holds an ONNX export, not a PyTorch model: use --backend onnx"),
    ],
)
def test_bad_export_and_backend_requests_are_one_message(
    setup, expected, tiny_models, topic_run, check_file, tmp_path, capsys
):
    if setup == "plain_model":
        code = export_main([str(tiny_models["bert"]), "--output", str(tmp_path / "e")])
    elif setup == "output_exists":
        (tmp_path / "e").mkdir()  # a folder of something else (here empty) is never replaced, not even with --overwrite
        code = export_main([str(topic_run), "--output", str(tmp_path / "e"), "--overwrite"])
    elif setup == "int8_unlabeled":
        code = export_main(
            [str(topic_run), "--quantize", "int8", "--check-file", str(check_file), "--output", str(tmp_path / "e")]
        )
    elif setup == "no_export":
        code = predict_main([str(tiny_models["bert"]), "a text", "--backend", "onnx"])
    elif setup == "onnx_precision":
        assert (
            export_main([str(tiny_models["bert"]), "--check-file", str(check_file), "--output", str(tmp_path / "e")])
            == 0
        )
        capsys.readouterr()  # the export's own report (stderr)
        code = predict_main([str(tmp_path / "e"), "a text", "--precision", "bf16"])
    else:
        assert (
            export_main([str(tiny_models["bert"]), "--check-file", str(check_file), "--output", str(tmp_path / "e")])
            == 0
        )
        capsys.readouterr()
        code = predict_main([str(tmp_path / "e"), "a text", "--backend", "torch"])
    error = capsys.readouterr().err
    assert code == 1 and expected in error and "Traceback" not in error and error.count("\n") == 1
    assert setup in ("output_exists", "onnx_precision", "torch_on_export") or not (tmp_path / "e").exists()
