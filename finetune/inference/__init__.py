"""Inference: answering with a trained model, below training (which scores and shows examples with it) and serving
(the predict command, the HTTP server and the ONNX export).

Vocabulary: a **kind** (finetune/tasks/kind.py) is what a task's labels mean; a **run** is one training's folder
and a **model folder** its ``model/``, which describes itself (finetune/runs/saved.py); an **export** is the
model folder in ONNX. The ``Predictor`` turns texts into scores or embeddings, and **answers**
(finetune/inference/answers.py) turn scores into what a caller gets: labels, thresholds, top-k, abstention.
"""
