"""Using a trained run: the Predictor, the predict command and its tables, and the ONNX export."""
