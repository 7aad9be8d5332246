"""Serving: a trained run put to use, through the ``Predictor`` and its **answers** (finetune/inference/): the
predict command and its tables, the ONNX **export** of a model folder, and the HTTP server."""
