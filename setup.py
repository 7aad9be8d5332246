"""The one build step pyproject.toml cannot declare: the presets ship inside the package.

``conf/`` at the top of the checkout stays their source (``python run.py`` reads it there). A built package
(``pip install .``, a wheel, an sdist's wheel) carries a copy as ``finetune/conf``, where an installed
``finetune-train`` finds it (finetune/run.py, ``presets_dir``). An editable install (``pip install -e .``)
copies nothing: the package finds the checkout's ``conf/`` beside itself.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PRESETS = Path("conf")  # setup.py runs in the project's root
TARGET = ("finetune", "conf")


class BuildPyWithPresets(build_py):
    """build_py, then every file of conf/ copied into the built package as finetune/conf."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib, *TARGET)
        shutil.rmtree(target, ignore_errors=True)  # a preset removed from conf/ leaves no copy behind
        for source, built in self._presets(target):
            self.mkpath(str(built.parent))
            self.copy_file(str(source), str(built))

    def get_outputs(self, include_bytecode: bool = True) -> list:
        presets = [] if self.editable_mode else [str(b) for _, b in self._presets(Path(self.build_lib, *TARGET))]
        return super().get_outputs(include_bytecode) + presets

    @staticmethod
    def _presets(target: Path):
        for source in sorted(PRESETS.rglob("*")):
            if source.is_file() and "__pycache__" not in source.parts:
                yield source, target / source.relative_to(PRESETS)


setup(cmdclass={"build_py": BuildPyWithPresets})
