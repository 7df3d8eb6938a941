"""dvc.lock against the workspace without the data: the repository's own lock is current, and
the review refuses a stale one in one line."""

import subprocess
import sys
from pathlib import Path

import pytest

from reel_driver.config import paths
from reel_driver.config.errors import PipelineError
from reel_driver.review import lock

# per stage, the cached data its dvc.lock entry records
RECORDED = {
    "extract": {"data/raw/training.parquet"},
    "prep": {"data/raw/training.parquet", "data/prepared/train.parquet"},
    "train": {"data/prepared/train.parquet", "models/model.json"},
    "evaluate": {"models/model.json"},
}


@pytest.mark.parametrize(
    ("status", "found"),
    [
        # a fresh clone: the database stage, and cached data it has not pulled
        ({"extract": [{"changed outs": {"data/raw/training.parquet": "not in cache"}}, "always changed"],
          "prep": [{"changed deps": {"data/raw/training.parquet": "deleted"}},
                   {"changed outs": {"data/prepared/train.parquet": "not in cache"}}]}, []),
        ({}, []),
        ({"train": [{"changed deps": {"data/prepared/train.parquet": "deleted", "stages/train.py": "modified"}}]},
         ["train: stages/train.py modified"]),
        ({"prep": [{"changed deps": {"params.yaml": {"split": "modified", "prep": "modified"}}}]},
         ["prep: params.yaml split modified, params.yaml prep modified"]),
        # git-tracked: a metric file edited by hand, or deleted, is no absent data
        ({"evaluate": [{"changed outs": {"metrics/evaluate.json": "modified", "models/model.json": "deleted"}}],
          "analyze": [{"changed outs": {"metrics/analysis.json": "deleted"}}]},
         ["evaluate: metrics/evaluate.json modified", "analyze: metrics/analysis.json deleted"]),
        # cached data that is here, and differs: someone ran one stage and not the next
        ({"prep": [{"changed deps": {"data/raw/training.parquet": "modified"}}]},
         ["prep: data/raw/training.parquet modified"]),
        # an output or dependency new to dvc.yaml: absent, and the lock has no hash for it
        ({"evaluate": [{"changed outs": {"reports/review.md": "deleted"}}],
          "train": [{"changed deps": {"data/raw/training.parquet": "deleted"}}]},
         ["evaluate: reports/review.md deleted", "train: data/raw/training.parquet deleted"]),
        ({"extract": ["always changed", {"changed deps": {"params.yaml": {"extract": "modified"}}}],
          "train": ["changed command"]},
         ["extract: params.yaml extract modified", "train: changed command"]),
    ],
)
def test_stale(status: dict, found: list[str]) -> None:
    assert lock.stale(status, RECORDED) == found


def test_the_committed_lock_is_current(repo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What CI sees of any clone: the lock matches the code, params and metrics beside it."""
    monkeypatch.chdir(repo_copy)
    lock.check()


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name}: {old!r}"
    path.write_text(text.replace(old, new, 1))


def test_a_stale_lock_names_each_difference(repo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What DVC itself reports for a param, code and a git-tracked metric changed after the run."""
    monkeypatch.chdir(repo_copy)
    _replace(repo_copy / "params.yaml", "  test_size: 0.15", "  test_size: 0.2")
    _replace(repo_copy / "stages/train.py", '"""train:', '"""train (edited):')
    _replace(repo_copy / paths.EVALUATE_METRICS, '"recall": ', '"recall": 0.99, "was": ')
    with pytest.raises(PipelineError) as stale:
        lock.check()
    differences = str(stale.value).split(" (", 1)[1].rsplit("): ", 1)[0].split("; ")
    assert differences == ["prep: params.yaml split modified", "train: stages/train.py modified",
                           "evaluate: metrics/evaluate.json modified"]


def test_the_review_refuses_a_stale_lock_in_one_line(repo_copy: Path) -> None:
    _replace(repo_copy / "params.yaml", "  budget: 18 ", "  budget: 19 ")
    review = subprocess.run([sys.executable, "-m", "reel_driver.cli", "review", "main"], cwd=repo_copy,
                            capture_output=True, text=True)
    assert (review.returncode, review.stdout) == (1, "")
    assert review.stderr.splitlines() == [
        "error: dvc.lock does not match the workspace, so its metrics are not this code's and params' "
        "(train: params.yaml search modified): run the pipeline again (`dvc repro`, with the database for a "
        "real-data run) and commit dvc.lock and metrics/"
    ]
