"""The saved run: a **run** is one training's folder, its record of how a model was made; its **model folder**
(``model/``) describes itself, so that it answers alone; an **export** is that model folder in ONNX.
``saved.py`` alone names their files; ``model_folder.py`` reads a model folder; ``folders.py`` claims and locks
run folders; ``resume.py`` continues one; the report, the environment and the per-example results are what a
finished run leaves."""
