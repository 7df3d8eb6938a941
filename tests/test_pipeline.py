"""dvc.yaml and the code agree, and the pipeline is reproducible byte for byte."""

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import paths
from stages.params import Params
from tests.conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
STAGE_MODULES = {p.stem for p in (REPO / "stages").glob("*.py")} & set(STAGES)


def module_tree(name: str) -> ast.Module:
    return ast.parse((REPO / "stages" / f"{name}.py").read_text())


def stages_imports(name: str) -> set[str]:
    """The stages.* modules that ``name`` imports directly."""
    found = set()
    for node in ast.walk(module_tree(name)):
        if isinstance(node, ast.ImportFrom) and node.module == "stages":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
            found.add(node.module.removeprefix("stages."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("stages.") for a in node.names if a.name.startswith("stages.")}
    return found


def imported_closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(stages_imports(module))
    return seen


def attributes_of(name: str, owner: str) -> set[str]:
    """Names used as ``owner.X`` in module ``name``."""
    return {
        node.attr
        for node in ast.walk(module_tree(name))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == owner
    }


def test_every_stage_has_its_module_and_command() -> None:
    assert set(STAGES) == STAGE_MODULES
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"python -m stages.{name}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_imports_another(name: str) -> None:
    assert not (stages_imports(name) & (STAGE_MODULES - {name}))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_modules_the_stage_imports(name: str) -> None:
    declared = {d for d in STAGES[name]["deps"] if d.startswith("stages/")}
    assert declared == {f"stages/{m}.py" for m in imported_closure(name)}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_data_paths_are_the_ones_in_stages_paths(name: str) -> None:
    stage = STAGES[name]
    declared = {d for d in stage.get("deps", []) if not d.startswith("stages/")} | set(stage.get("outs", []))
    used = {str(getattr(paths, constant)) for constant in attributes_of(name, "paths")}
    assert declared == used


def sections_read(name: str) -> set[str]:
    """params.yaml sections that module ``name`` reads: ``params.load().X`` or ``settings.X``."""
    found = set()
    for node in ast.walk(module_tree(name)):
        if isinstance(node, ast.Attribute) and node.attr in Params.model_fields:
            value = node.value
            loaded = isinstance(value, ast.Call) and ast.unparse(value.func) == "params.load"
            if loaded or (isinstance(value, ast.Name) and value.id == "settings"):
                found.add(node.attr)
    return found


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_the_sections_the_stage_reads(name: str) -> None:
    assert set(STAGES[name].get("params", [])) == sections_read(name)


def test_every_out_of_one_stage_is_written_once() -> None:
    outs = [out for stage in STAGES.values() for out in stage.get("outs", [])]
    assert len(outs) == len(set(outs))


def _outputs(repo: Path) -> dict[str, str]:
    outs = [out for stage in STAGES.values() for out in stage.get("outs", [])]
    return {out: hashlib.sha256((repo / out).read_bytes()).hexdigest() for out in outs}


def _inputs_of(lock: Path) -> dict:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {
        name: (stage["cmd"], stage.get("params"), [d for d in stage.get("deps", []) if d["path"].startswith("stages/")])
        for name, stage in stages.items()
    }


def test_dvc_repro_twice_gives_identical_bytes_and_matches_the_lock(repo_copy: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=repo_copy, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    committed_lock = _inputs_of(repo_copy / "dvc.lock")
    dvc("repro")
    first = _outputs(repo_copy)
    # the committed dvc.lock records today's code and params (data bytes may
    # differ with another pyarrow, so only the inputs are compared)
    assert _inputs_of(repo_copy / "dvc.lock") == committed_lock
    dvc("repro", "--force")
    assert _outputs(repo_copy) == first
    # only the database-facing stage is ever out of date
    assert dvc("status").split() == ["extract:", "always", "changed"]
