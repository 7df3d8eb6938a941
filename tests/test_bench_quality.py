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
ROW = re.compile(r"^  (project|optuna) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$", flags=re.MULTILINE)


def bench(script: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"bench/{script}", "--sample", "--split-seeds", "100", *arguments],
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


@pytest.mark.slow
def test_the_quality_benchmark_scores_what_it_keeps_and_judges_a_change_against_the_same_anchor(tmp_path: Path) -> None:
    work = ["--work", str(tmp_path), "--anchors", "optuna", "--trials", "2", "--resamples", "200"]
    first = bench("quality.py", *work)
    kept = tmp_path / "sample" / "split100"
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

    # the text branch on the project's side only: the anchor is not run again, its figures stay
    changed = bench("quality.py", *work, "--set", "prep.text_columns=[overview, tagline]", "--set", "prep.text_components=4")
    assert re.search(r"running project-[0-9a-f]{8}\n", changed.stdout) and "running optuna" not in changed.stdout, changed.stderr[-2000:]
    again = {name: values for name, *values in ROW.findall(changed.stdout.split("\nmean over")[0])}
    assert again["optuna"] == [f"{v:.4f}" for v in rows["optuna"]]
    assert "project (prep.text_columns=['overview', 'tagline'], prep.text_components=4): mean CV" in changed.stdout
    variant = next(kept.glob("project-*.parquet"))
    assert not np.array_equal(pl.read_parquet(variant)["probability"], pl.read_parquet(kept / "project.parquet")["probability"])


@pytest.mark.slow
def test_the_choices_benchmark_compares_variants_on_the_same_folds_and_restarts_from_what_it_kept(tmp_path: Path) -> None:
    arguments = ["--work", str(tmp_path), "--variants", "xgboost + companies", "logistic regression"]
    first = bench("choices.py", *arguments)
    assert first.returncode == 0, first.stderr[-2000:]
    lines = re.findall(r"^  (xgboost|xgboost \+ companies|logistic regression) +(0\.\d{4}) +(\S*) +(0\.\d{4}) *(\S*)$",
                       first.stdout, flags=re.MULTILINE)
    assert [line[0] for line in lines] == ["xgboost", "xgboost + companies", "logistic regression"], first.stdout
    kept = json.loads((tmp_path / "sample" / "split100.json").read_text())["variants"]
    for variant, ap, ap_difference, f2, f2_difference in lines:  # the kept CV figures, and (one split) no interval
        assert (float(ap), float(f2)) == (round(kept[variant]["AP"], 4), round(kept[variant]["F2"], 4))
        if variant == "xgboost":
            assert ap_difference == "" and f2_difference == ""
        else:
            assert float(ap_difference) == pytest.approx(kept[variant]["AP"] - kept["xgboost"]["AP"], abs=6e-5)
            assert float(f2_difference) == pytest.approx(kept[variant]["F2"] - kept["xgboost"]["F2"], abs=6e-5)
    second = bench("choices.py", *arguments)
    assert second.returncode == 0 and "split.seed 100:" not in second.stdout  # nothing computed again
    assert second.stdout.strip().splitlines()[-4:] == first.stdout.strip().splitlines()[-4:]
