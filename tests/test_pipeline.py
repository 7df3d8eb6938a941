"""dvc.yaml and the code agree, and the pipeline is reproducible byte for byte."""

import ast
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import polars as pl
import pytest
import yaml

from reel_driver.config import paths
from reel_driver.config.params import GRID_KEYS, Params
from tests.conftest import REPO, small_params, user_env

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
STAGE_MODULES = {p.stem for p in (REPO / "stages").glob("*.py")} - {"__init__"}


def out_paths(stage: dict) -> list[str]:
    """A stage's outs; an out with options (cache: false) is a one-key mapping."""
    return [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]


ALL_OUTS = [out for stage in STAGES.values() for out in out_paths(stage)]
CODE = ("stages/", "reel_driver/")


def module_tree(name: str) -> ast.Module:
    return ast.parse((REPO / "stages" / f"{name}.py").read_text())


@functools.cache
def import_graph() -> grimp.ImportGraph:
    return grimp.build_graph("reel_driver", "stages", cache_dir=None)


def code_files(name: str) -> set[str]:
    """The files stage ``name`` runs: its module and every module of the package it imports, directly or
    not (the packages' __init__.py files hold docstrings only: test_package_inits_are_docstrings)."""
    modules = {f"stages.{name}", *import_graph().find_upstream_modules(f"stages.{name}")}
    return {module.replace(".", "/") + ".py" for module in modules if not (REPO / module.replace(".", "/")).is_dir()}


def attributes_of(name: str, owner: str) -> set[str]:
    """Names used as ``owner.X`` in module ``name``."""
    return {
        node.attr
        for node in ast.walk(module_tree(name))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == owner
    }


def test_stages_holds_exactly_the_dvc_stages_each_with_its_command() -> None:
    # that no stage imports another is a contract of pyproject.toml's (tests/test_architecture.py)
    assert set(STAGES) == STAGE_MODULES
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"python -m stages.{name}"


def test_package_inits_are_docstrings() -> None:
    for init in [REPO / "stages" / "__init__.py", *(REPO / "reel_driver").rglob("__init__.py")]:
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0].value, ast.Constant), init


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_modules_the_stage_imports(name: str) -> None:
    declared = {d for d in STAGES[name]["deps"] if d.startswith(CODE)}
    assert declared == code_files(name)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_data_paths_are_the_ones_in_reel_driver_paths(name: str) -> None:
    stage = STAGES[name]
    declared = {d for d in stage.get("deps", []) if not d.startswith(CODE)} | set(out_paths(stage))
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


def test_dvc_repro_on_the_sample_twice_gives_identical_bytes(reproduced: Path, reproduced_copy: Path) -> None:
    def dvc(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=reproduced_copy, env=user_env(),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    # no database settings (the session's isolation): extract.source auto took the sample, as in a
    # newcomer's clone, whatever run the repository commits (tests/test_lock.py: that it is current)
    assert json.loads((reproduced / paths.DATA_METRICS).read_text())["rows"] == 1200  # the sample's
    dvc("repro", "--force")
    assert _outputs(reproduced_copy) == _outputs(reproduced)
    # only the database-facing stage is ever out of date
    assert dvc("status").split() == ["extract:", "always", "changed"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_users_dvc_flows(reproduced_copy: Path) -> None:
    """After a committed dvc repro: an experiment on one grid key, metrics diff, a threshold change that
    reruns evaluate alone, and a queued experiment whose MLflow run lands in the main store."""
    repo_copy, env = reproduced_copy, user_env()
    # the copy's MLflow store names the original's artifact folder: start from none, as a clone does
    (repo_copy / "mlflow.db").unlink()
    shutil.rmtree(repo_copy / "mlruns")

    def run(*args: str) -> str:
        result = subprocess.run(args, cwd=repo_copy, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    dvc = lambda *args: run(sys.executable, "-m", "dvc", *args)  # noqa: E731
    dvc("exp", "run", "-S", "scale_pos_weight=9")
    assert json.loads((repo_copy / "metrics/train.json").read_text())["best_params"]["scale_pos_weight"] == 9
    diff = dvc("metrics", "diff", "main", "--md", "--all")
    pinned = next(line for line in diff.splitlines() if "best_params.scale_pos_weight" in line)
    assert float(pinned.split("|")[4]) == 9  # the workspace column
    assert "| metrics/evaluate.json | recall" in diff
    review = subprocess.run([sys.executable, "-m", "reel_driver.cli", "review", "main"], cwd=repo_copy, env=env,
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
    gated = subprocess.run([sys.executable, "-m", "reel_driver.cli", "review", "main"], cwd=repo_copy, env=env,
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
    # --only-changed drops a metric no experiment moved (recall, on the sample with the ensemble): the
    # hold-out metrics that did move come first, in README's order
    shown = [column for column in header if column in ("recall", "precision", "f2")]
    assert header[0] == "Experiment" and shown and header[1:1 + len(shown)] == shown, header
    assert {"scale_pos_weight", "max_depth", "evaluate.threshold"} <= set(header), header
    assert "shallow" in table.stdout

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_owners_database_runs_are_reviewed_in_a_clone_without_the_database(
    repo_copy: Path, atp_db: str, tmp_path: Path
) -> None:
    """The owner's flow on a real PostgreSQL: a run, a movie relabeled in the review screens and a
    new arrival, a second run; each pushed to a DVC remote (a directory) and committed. A clone with
    no database then does what CI does: the review prints the database runs' metrics and names the
    movie (its data read from the remote), `dvc pull` restores every output byte for byte, `dvc
    status` is clean; and a newcomer's `dvc repro` there takes the sample."""
    from reel_driver.data import database, sample
    from tests.conftest import insert_rows
    from tests.test_extract import execute

    owner = user_env()  # REEL_DRIVER_PG_DSN names the test server (atp_db): extract.source auto reads it
    no_database = {name: value for name, value in owner.items() if name not in database.SERVER_VARIABLES}

    def run(*args: str, cwd: Path = repo_copy, env: dict = owner, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0 or not ok, f"{args}: {result.stdout}{result.stderr}"
        return result

    dvc = lambda *args, **where: run(sys.executable, "-m", "dvc", *args, **where)  # noqa: E731
    table = sample.generate(1300, 5)  # not the sample's 1200 rows: the two cannot be mistaken
    insert_rows(atp_db, table)
    small_params(repo_copy)
    run("git", "checkout", "-q", "-b", "main")
    dvc("remote", "add", "--default", "store", str(tmp_path / "remote"))
    first_run = dvc("repro").stderr
    assert "1300 rows from PostgreSQL table atp.training (extract.source auto, REEL_DRIVER_PG_DSN is set)" in first_run
    dvc("push")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "the owner's first run")

    test_ids = set(pl.read_parquet(repo_copy / "data/prepared/test.parquet").get_column("imdb_id"))
    flipped = table.filter(pl.col("reviewed"), pl.col("label") == "would_not_watch", pl.col("media_type") == "movie",
                           ~pl.col("anomalous"), ~pl.col("imdb_id").is_in(list(test_ids))).row(0, named=True)
    execute(atp_db, f"UPDATE atp.training SET label = 'would_watch', human_labeled = true, reviewed = true "
                    f"WHERE imdb_id = '{flipped['imdb_id']}'")
    arrival = table.filter(pl.col("media_type") == "movie").head(1).with_columns(imdb_id=pl.lit("tt80000001"), label=None, reviewed=False)
    insert_rows(atp_db, arrival)
    assert "Running stage 'train'" in dvc("repro").stdout  # a confirmed label changed: that retrains
    dvc("push")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "the owner's second run")
    outputs = _outputs(repo_copy)

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(repo_copy), str(clone))
    # the review checks the lock first: a stale one would be this one line, and no report
    review = run(sys.executable, "-m", "reel_driver.cli", "review", "HEAD~1", cwd=clone, env=no_database, ok=False)
    report = review.stdout
    assert report.startswith("## Recall gate\n\nhold-out recall "), review.stderr
    if review.returncode:  # the gate may fail on a small sample: then one line says why
        assert review.stderr.strip().startswith("error: review: hold-out recall") and "Traceback" not in review.stderr
    assert re.search(r"\| metrics/data\.json +\| rows +\| 1300 +\| 1301 +\| 1 +\|", report)  # the database's rows
    recall = json.loads((repo_copy / paths.EVALUATE_METRICS).read_text())["recall"]
    assert f"hold-out recall {recall:.4f}" in report
    assert "1 label changed: 1 to would_watch, 0 to would_not_watch (0 of them in the hold-out)." in report
    assert f"| {flipped['media_title']} | {flipped['imdb_id']} | train | would_watch | would_not_watch |" in report
    assert "; 0 added, 0 removed." in report  # the new arrival is not a training row
    assert re.search(r"\| metrics/data\.json +\| labels\.unlabeled +\|", report)  # ... but the data metrics count it

    dvc("pull", cwd=clone, env=no_database)
    assert _outputs(clone) == outputs
    assert dvc("status", cwd=clone, env=no_database).stdout.split() == ["extract:", "always", "changed"]
    assert dvc("data", "status", cwd=clone, env=no_database).stdout.strip() == "No changes."
    assert "Cache and remote 'store' are in sync." in dvc("status", "--cloud", cwd=clone, env=no_database).stdout

    # a newcomer's clone of this main, with no database: the sample (extract and prep suffice to show it)
    newcomer = dvc("repro", "prep", cwd=clone, env=no_database).stderr
    assert "1200 rows from the synthetic sample (seed 42) (extract.source auto, none of" in newcomer
    assert json.loads((clone / paths.DATA_METRICS).read_text())["rows"] == 1200
