"""bench/quality.py and bench/choices.py run end to end on the sample: figures recomputed from what
they keep, anchors reused across a --set, verdicts that count, a restart that computes nothing."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, fbeta_score

ROOT = Path(__file__).resolve().parent.parent
# the module's quality run is built once, on one worker, and a bench run takes minutes
pytestmark = [pytest.mark.xdist_group("bench_quality"), pytest.mark.timeout(600)]
ROW = re.compile(r"^  (project|optuna) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$", flags=re.MULTILINE)


def bench(script: str, *arguments: str) -> subprocess.CompletedProcess:
    # a 1,500-row sample: the figures' bookkeeping, not their size, is under test
    return subprocess.run([sys.executable, f"bench/{script}", "--sample", "--sample-rows", "1500", "--split-seeds", "100",
                           *arguments],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def test_the_bootstraps_counted_f2_and_ap_are_sklearns() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import quality

    rng = np.random.default_rng(0)
    for rows in (5, 60, 525):
        labels = (rng.random(rows) < 0.2).astype(np.int8)
        probabilities = np.round(rng.random(rows), 1)  # many ties
        assert quality.f2_counted(labels, probabilities) == pytest.approx(
            fbeta_score(labels, probabilities >= 0.35, beta=2, zero_division=0), abs=1e-12)
        if labels.any():
            assert quality.ap_counted(labels, probabilities) == pytest.approx(
                average_precision_score(labels, probabilities), abs=1e-12)
    assert quality.f2_counted(np.zeros(4, np.int8), np.ones(4)) == 0.0


QUALITY = ["--anchors", "optuna", "--trials", "2", "--resamples", "200"]


# a change on the project's side (XGBoost alone): what the choices benchmark's tuned variant is held to
ALONE = ["--set", "train.ensemble=[]"]


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One quality run on the sample's split 100, its --work folder and what it printed."""
    work = tmp_path_factory.mktemp("quality")
    return work, bench("quality.py", "--work", str(work), *QUALITY)


@pytest.fixture(scope="module")
def alone_run(quality_run: tuple[Path, subprocess.CompletedProcess]) -> subprocess.CompletedProcess:
    """The same split again with train.ensemble [] on the project's side, in the same --work folder."""
    return bench("quality.py", "--work", str(quality_run[0]), *QUALITY, *ALONE)


@pytest.mark.slow
def test_the_quality_benchmark_scores_what_it_keeps_and_judges_a_change_against_the_same_anchor(
        quality_run: tuple[Path, subprocess.CompletedProcess], alone_run: subprocess.CompletedProcess) -> None:
    tmp_path, first = quality_run
    kept = tmp_path / "sample1500" / "split100"
    assert "split.seed 100: running optuna" in first.stdout, first.stderr[-2000:]
    rows = {name: [float(v) for v in values] for name, *values in ROW.findall(first.stdout.split("\nmean over")[0])}
    assert set(rows) == {"project", "optuna"}
    for method in rows:  # the printed F2 and AP are the kept probabilities' own
        frame = pl.read_parquet(kept / f"{method}.parquet")
        labels, probabilities = frame["label"].to_numpy(), frame["probability"].to_numpy()
        assert rows[method][0] == pytest.approx(fbeta_score(labels, probabilities >= 0.35, beta=2), abs=6e-5)
        assert rows[method][1] == pytest.approx(average_precision_score(labels, probabilities), abs=6e-5)
    assert re.search(r"project's CV on the training rows \(train's out-of-fold\): F2 0\.\d{4}, AP 0\.\d{4}", first.stdout)
    assert len(re.findall(r"^  (F2|AP) +against optuna +[-+]\d\.\d{4} \[[-+]\d\.\d{4}, [-+]\d\.\d{4}\]$",
                          first.stdout, flags=re.MULTILINE)) == 2
    verdicts = re.findall(r"^  (pass|FAIL)  ", first.stdout, flags=re.MULTILINE)
    assert len(verdicts) == 3 and first.returncode == (1 if "FAIL" in verdicts else 0), first.stderr[-2000:]

    # a change on the project's side only: the anchor is not run again, its figures stay
    changed = alone_run
    assert re.search(r"running project-[0-9a-f]{8}\n", changed.stdout) and "running optuna" not in changed.stdout, changed.stderr[-2000:]
    again = {name: values for name, *values in ROW.findall(changed.stdout.split("\nmean over")[0])}
    assert again["optuna"] == [f"{v:.4f}" for v in rows["optuna"]]
    assert "project (train.ensemble=[]): mean CV" in changed.stdout
    variant = next(kept.glob("project-*.parquet"))
    assert not np.array_equal(pl.read_parquet(variant)["probability"], pl.read_parquet(kept / "project.parquet")["probability"])


@pytest.mark.slow
def test_the_choices_benchmark_compares_variants_on_the_same_folds_and_restarts_from_what_it_kept(
        tmp_path: Path, quality_run: tuple[Path, subprocess.CompletedProcess], alone_run: subprocess.CompletedProcess) -> None:
    arguments = ["--work", str(tmp_path), "--variants", "xgboost + companies", "xgboost, tuned"]
    first = bench("choices.py", *arguments)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = json.loads((tmp_path / "sample1500" / "split100.json").read_text())["variants"]
    cv, hold_out = first.stdout.split("\nThe hold-out rows")
    for part, printed in (("CV", cv), ("hold-out", hold_out)):
        lines = re.findall(r"^  (xgboost|xgboost \+ companies|xgboost, tuned) +(0\.\d{4}) +(\S*) +(0\.\d{4}) *(\S*) *(\S*)$",
                           printed, flags=re.MULTILINE)
        assert [line[0] for line in lines] == ["xgboost", "xgboost + companies", "xgboost, tuned"], first.stdout
        for variant, ap, ap_difference, f2, f2_difference, against in lines:  # the kept figures; one split: no interval
            scores = kept[variant][part]
            assert (float(ap), float(f2)) == (round(scores["AP"], 4), round(scores["F2"], 4))
            if variant == "xgboost":
                assert ap_difference == f2_difference == against == ""
            else:
                assert against == "xgboost"
                assert float(ap_difference) == pytest.approx(scores["AP"] - kept["xgboost"][part]["AP"], abs=6e-5)
                assert float(f2_difference) == pytest.approx(scores["F2"] - kept["xgboost"][part]["F2"], abs=6e-5)

    # the tuned variant, fitted on every training row, is the project's own model with XGBoost alone:
    # on the hold-out rows it scores what the project's `dvc repro evaluate` scores with train.ensemble []
    assert alone_run.returncode in (0, 1) and "running optuna" not in alone_run.stdout, alone_run.stderr[-2000:]
    sys.path.insert(0, str(ROOT / "bench"))
    import quality

    name = f"project-{quality.digest(json.dumps({'train.ensemble': []}, sort_keys=True).encode())[:8]}.parquet"
    project = pl.read_parquet(quality_run[0] / "sample1500" / "split100" / name)
    labels, probabilities = project["label"].to_numpy(), project["probability"].to_numpy()
    assert kept["xgboost, tuned"]["hold-out"]["AP"] == pytest.approx(average_precision_score(labels, probabilities), abs=1e-9)
    assert kept["xgboost, tuned"]["hold-out"]["F2"] == pytest.approx(fbeta_score(labels, probabilities >= 0.35, beta=2), abs=1e-9)

    second = bench("choices.py", *arguments)
    assert second.returncode == 0 and "split.seed 100:" not in second.stdout  # nothing computed again
    assert second.stdout.strip().splitlines()[-10:] == first.stdout.strip().splitlines()[-10:]
