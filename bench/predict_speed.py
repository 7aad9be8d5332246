"""Inference speed: finetune's Predictor against transformers.pipeline, on one trained run.

    python bench/predict_speed.py outputs/<minilm run> [--data ../shared/data/ag_news/test.csv] [--rows 2000]

Classifies the first ROWS texts of DATA four ways in one process (start-up excluded, each
after a short warm-up): pipeline with its defaults, pipeline with batch_size=32 (both fp32),
the Predictor with its defaults, and the Predictor with --precision fp32. Prints a Markdown
table of milliseconds per text, throughput relative to the pipelines, and accuracy.
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.predict import Predictor, locate  # noqa: E402


def timed(classify, texts):
    classify(texts[:16])  # warm-up: first-call allocations, lazy initialisation
    start = time.perf_counter()
    labels = classify(texts)
    return (time.perf_counter() - start) / len(texts), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news" / "test.csv")
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()

    from transformers import pipeline

    frame = pd.read_csv(args.data, keep_default_na=False).head(args.rows)
    texts, truth = frame["text"].tolist(), frame["label"].tolist()
    model_dir = locate(args.run).model_dir
    classifier = pipeline("text-classification", model=str(model_dir), device="cpu")
    names = [classifier.model.config.id2label[i] for i in range(classifier.model.config.num_labels)]

    def pipeline_labels(batch_size):
        return lambda batch: [names.index(r["label"]) for r in classifier(batch, batch_size=batch_size)]

    def predictor_labels(precision):
        predictor = Predictor.load(args.run, device="cpu", precision=precision)
        return lambda batch: predictor.kind.predict(predictor.scores(batch)).tolist(), predictor

    rows = []
    for name, classify in [
        ("pipeline, defaults (fp32, batch 1)", pipeline_labels(1)),
        ("pipeline, batch_size=32 (fp32)", pipeline_labels(32)),
    ]:
        seconds, labels = timed(classify, texts)
        rows.append((name, seconds, labels))
    for precision in ("auto", "fp32"):
        classify, predictor = predictor_labels(precision)
        seconds, labels = timed(classify, texts)
        rows.append((f"Predictor, precision={precision} ({predictor.precision}, sorted batches of 64)", seconds, labels))

    base_default, base_batched = rows[0][1], rows[1][1]
    print(f"{len(texts)} texts of {args.data.name}, model {model_dir.name} of {args.run.name}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| method | ms / text | vs pipeline defaults | vs pipeline batch 32 | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, labels in rows:
        accuracy = sum(int(a == b) for a, b in zip(labels, truth)) / len(truth)
        print(f"| {name} | {seconds * 1000:.2f} | {base_default / seconds:.2f}x | {base_batched / seconds:.2f}x | {accuracy:.4f} |")


if __name__ == "__main__":
    main()
