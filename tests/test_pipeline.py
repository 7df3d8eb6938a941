"""dvc.yaml and the code agree, and the pipeline is reproducible byte for byte."""

import ast
import json
import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from stages import paths
from stages.params import GRID_KEYS, Params
from tests.conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
STAGE_MODULES = {p.stem for p in (REPO / "stages").glob("*.py")} & set(STAGES)


def out_paths(stage: dict) -> list[str]:
    """A stage's outs; an out with options (cache: false) is a one-key mapping."""
    return [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]


ALL_OUTS = [out for stage in STAGES.values() for out in out_paths(stage)]


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
    declared = {d for d in stage.get("deps", []) if not d.startswith("stages/")} | set(out_paths(stage))
    used = {str(getattr(paths, constant)) for constant in attributes_of(name, "paths")}
    assert declared == used


def sections_read(name: str) -> set[str]:
    """params.yaml sections that module ``name`` reads: ``params.load().X`` or ``settings.X``."""
    found = set()
    for node in ast.walk(module_tree(name)):
        if isinstance(node, ast.Attribute) and (node.attr in Params.model_fields or node.attr == "grid"):
            value = node.value
            loaded = isinstance(value, ast.Call) and ast.unparse(value.func) == "params.load"
            if loaded or (isinstance(value, ast.Name) and value.id == "settings"):
                found |= set(GRID_KEYS) if node.attr == "grid" else {node.attr}
    return found


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_the_sections_the_stage_reads(name: str) -> None:
    assert set(STAGES[name].get("params", [])) == sections_read(name)


def test_every_out_of_one_stage_is_written_once() -> None:
    assert len(ALL_OUTS) == len(set(ALL_OUTS))


def _outputs(repo: Path) -> dict[str, str]:
    """SHA-256 of every output file (a directory output: of every file in it)."""
    files = [f for out in ALL_OUTS for f in ([repo / out] if (repo / out).is_file() else sorted((repo / out).rglob("*")))]
    return {str(f.relative_to(repo)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def _code_of(lock: Path) -> dict:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {
        name: (stage["cmd"], [d for d in stage.get("deps", []) if d["path"].startswith("stages/")])
        for name, stage in stages.items()
    }


def _small_params(repo: Path) -> None:
    """A small sample and a short search: the flows, not the figures, are under test."""
    path = repo / "params.yaml"
    small = yaml.safe_load(path.read_text())
    small["extract"]["sample_rows"] = 1200
    small["search"].update(budget=4, cv_folds=3)
    path.write_text(yaml.safe_dump(small, sort_keys=False))


def test_dvc_repro_twice_gives_identical_bytes_and_matches_the_lock(repo_copy: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=repo_copy, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    committed_lock = _code_of(repo_copy / "dvc.lock")
    _small_params(repo_copy)
    dvc("repro")
    first = _outputs(repo_copy)
    # the committed dvc.lock records today's code (data bytes may differ with
    # another pyarrow, and the params here are smaller, so only code is compared)
    assert _code_of(repo_copy / "dvc.lock") == committed_lock
    dvc("repro", "--force")
    assert _outputs(repo_copy) == first
    # only the database-facing stage is ever out of date
    assert dvc("status").split() == ["extract:", "always", "changed"]


@pytest.mark.slow
def test_the_users_dvc_flows(repo_copy: Path) -> None:
    """dvc repro, an experiment on one grid key, metrics diff, a threshold change that
    reruns evaluate alone, and a queued experiment whose MLflow run lands in the main store."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }

    def run(*args: str) -> str:
        result = subprocess.run(args, cwd=repo_copy, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    dvc = lambda *args: run(sys.executable, "-m", "dvc", *args)  # noqa: E731
    _small_params(repo_copy)
    run("git", "checkout", "-q", "-b", "main")
    dvc("repro")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")

    dvc("exp", "run", "-S", "scale_pos_weight=9")
    assert json.loads((repo_copy / "metrics/train.json").read_text())["best_params"]["scale_pos_weight"] == 9
    diff = dvc("metrics", "diff", "main", "--md", "--all")
    pinned = next(line for line in diff.splitlines() if "best_params.scale_pos_weight" in line)
    assert float(pinned.split("|")[4]) == 9  # the workspace column
    assert "| metrics/evaluate.json | recall" in diff
    review = subprocess.run([sys.executable, "-m", "stages.cli", "review", "main"], cwd=repo_copy, env=env,
                            capture_output=True, text=True)
    report = review.stdout
    assert report.startswith("## Recall gate\n\nhold-out recall ") and "## Params against main" in report
    assert "## Metrics against main" in report and "| params.yaml | scale_pos_weight" in report
    # the data did not move: the data section says so, row by row
    assert "## Data against main\n\nTraining rows: " in report and "; 0 added, 0 removed." in report
    assert "0 labels changed: 0 to would_watch, 0 to would_not_watch (0 of them in the hold-out)." in report
    assert report.count("](dvc_plots/review/") == 5 and (repo_copy / "dvc_plots/review/roc.png").exists()
    if review.returncode:  # the gate may fail on a small sample: then one line says why
        assert review.stderr.strip().startswith("error: review: hold-out recall") and "Traceback" not in review.stderr
    experiment_params = (repo_copy / "params.yaml").read_text()
    settings = yaml.safe_load(experiment_params)
    settings["review"]["recall_floor"] = 1.0
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    gated = subprocess.run([sys.executable, "-m", "stages.cli", "review", "main"], cwd=repo_copy, env=env,
                           capture_output=True, text=True)
    assert gated.returncode == 1 and gated.stdout.startswith("## Recall gate")
    assert gated.stderr.strip().splitlines()[-1].startswith("error: review: hold-out recall")
    assert "is below review.recall_floor 1" in gated.stderr
    (repo_copy / "params.yaml").write_text(experiment_params)  # the experiment's params, as dvc.lock has them

    output = dvc("exp", "run", "-S", "evaluate.threshold=0.5")
    assert "Stage 'train' didn't change, skipping" in output and "Running stage 'evaluate'" in output
    assert json.loads((repo_copy / "metrics/evaluate.json").read_text())["threshold"] == 0.5

    dvc("exp", "run", "--queue", "-S", "max_depth=3", "--name", "shallow")
    dvc("exp", "run", "--run-all")
    assert "shallow" in dvc("exp", "list", "--name-only").split()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["reel-driver"])
    queued = runs[runs["tags.dvc_exp_name"] == "shallow"]
    assert set(queued["tags.stage"]) == {"train", "evaluate"}
    assert all(uri.startswith((repo_copy / "mlruns").resolve().as_uri()) for uri in queued["artifact_uri"])

    # README's "what did my experiments change" command fits a 120-column terminal, nothing cut
    readme = (REPO / "README.md").read_text()
    command = shlex.split(next(line for line in readme.splitlines() if line.startswith("dvc exp show --only-changed")))
    table = subprocess.run([sys.executable, "-m", "dvc", *command[1:], "--no-pager"], cwd=repo_copy,
                           env={**env, "COLUMNS": "120"}, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    lines = [line.rstrip() for line in table.stdout.splitlines()]
    assert max(map(len, lines)) <= 120 and "…" not in table.stdout, table.stdout
    header = lines[1].split()
    assert header[:4] == ["Experiment", "recall", "precision", "f2"]
    assert {"scale_pos_weight", "max_depth", "evaluate.threshold"} <= set(header), header
    assert "shallow" in table.stdout

@pytest.mark.slow
def test_a_label_flipped_in_the_database_is_named_by_the_next_review(repo_copy: Path, atp_db: str) -> None:
    """The owner's relabel loop on today's table: a reviewed movie's label changes in the
    review screens, new arrivals come in; the next `dvc repro` retrains on the change
    only, and `reel-driver review main` names the movie."""
    from tests.conftest import insert_rows
    from tests.test_extract import execute

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=repo_copy, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result

    from stages import sample

    table = sample.generate(1200, 5)
    insert_rows(atp_db, table)
    _small_params(repo_copy)
    settings = yaml.safe_load((repo_copy / "params.yaml").read_text())
    settings["extract"]["source"] = "postgres"
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    run("git", "checkout", "-q", "-b", "main")
    run(sys.executable, "-m", "dvc", "repro")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")

    test_ids = set(pl.read_parquet(repo_copy / "data/prepared/test.parquet").get_column("imdb_id"))
    flipped = table.filter(pl.col("reviewed"), pl.col("label") == "would_not_watch", pl.col("media_type") == "movie",
                           ~pl.col("anomalous"), ~pl.col("imdb_id").is_in(list(test_ids))).row(0, named=True)
    execute(atp_db, f"UPDATE atp.training SET label = 'would_watch', human_labeled = true, reviewed = true "
                    f"WHERE imdb_id = '{flipped['imdb_id']}'")
    arrival = table.filter(pl.col("media_type") == "movie").head(1).with_columns(imdb_id=pl.lit("tt80000001"), label=None, reviewed=False)
    insert_rows(atp_db, arrival)

    output = run(sys.executable, "-m", "dvc", "repro").stdout
    assert "Running stage 'train'" in output  # a confirmed label changed: that retrains
    review = subprocess.run([sys.executable, "-m", "stages.cli", "review", "main"], cwd=repo_copy, env=env,
                            capture_output=True, text=True)
    report = review.stdout
    assert "1 label changed: 1 to would_watch, 0 to would_not_watch (0 of them in the hold-out)." in report
    assert f"| {flipped['media_title']} | {flipped['imdb_id']} | train | would_watch | would_not_watch |" in report
    assert "; 0 added, 0 removed." in report  # the new arrival is not a training row
    assert re.search(r"\| metrics/data\.json +\| labels\.unlabeled +\|", report)  # ... but the data metrics count it
