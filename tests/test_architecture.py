"""The layout holds by contract: pyproject.toml's import-linter contracts pass on the code, and
each of them fails when the code crosses it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # --no-cache: grimp's cache would answer for a copy from the repository's last run
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent)})


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "crossing", "broken"), [
    ("reel_driver/data/schema.py", "from reel_driver.model import metrics", "reel_driver's layers"),
    ("reel_driver/commands/predict.py", "from reel_driver.serving import api", "reel_driver's layers"),
    ("stages/train.py", "from stages import prep", "no stage imports another"),
    ("reel_driver/serving/api.py", "import stages.train", "the package never imports the stages"),
    ("reel_driver/cli.py", "import polars", "cli imports none of the heavy libraries"),
])
def test_a_crossing_breaks_its_contract(tmp_path: Path, module: str, crossing: str, broken: str) -> None:
    for part in ("reel_driver", "stages"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path)
    edited = tmp_path / module
    edited.write_text(edited.read_text() + f"\n{crossing}  # a crossing\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    # that contract alone, and the report names the line that crosses it
    assert result.stdout.count("BROKEN") == 1 and f"{broken}" in result.stdout.split("BROKEN")[0].splitlines()[-1], result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout


def test_the_installed_package_is_reel_driver_and_stages_runs_from_the_repository(tmp_path: Path) -> None:
    # outside the repository: what the installed distribution provides, and nothing named stages
    probe = ("import importlib.util, reel_driver; print(reel_driver.__name__, "
             "importlib.util.find_spec('stages') is None)")
    outside = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             env={"PATH": str(LINT_IMPORTS.parent)})
    assert outside.stdout.split() == ["reel_driver", "True"], outside.stderr
    # inside it, dvc.yaml's command finds the stage
    help_ = subprocess.run([sys.executable, "-c", "import stages.extract; print(stages.extract.__file__)"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert help_.stdout.strip() == str(REPO / "stages" / "extract.py"), help_.stderr
