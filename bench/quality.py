"""Quality: the project's pipeline against two anchors on the same hold-out rows, split seeds 100-109.

    python bench/quality.py                                  # split seeds 100-109, Optuna-200 and AutoGluon
    python bench/quality.py --sample --split-seeds 100 --trials 2 --anchors optuna   # a quick look

For each split seed, a scratch copy of this repository (the working tree as it is, params
included) gets raw rows (the real export as extract writes it, else the embedded sample) and
`split.seed` at that value. Then, on that split's hold-out rows:

  project:    `dvc repro evaluate` there, as a user runs it; data/predictions/test.parquet;
  optuna:     the Optuna TPE reference of bench/search.py (--trials trials, 200 by default) on
              the same prepared training rows, refitted on all of them;
  autogluon:  AutoGluon-Tabular (medium_quality, --time-limit seconds, no neural networks,
              average precision as its metric) on the raw training rows, list and text fields as
              text, its own feature handling. It runs in an environment of its own
              (--autogluon-python; bench/autogluon-requirements.txt says how to make it): its
              pins exclude the project's numpy, pandas, scikit-learn and xgboost.

It prints, per split and as the mean over the splits, F2 at 0.35, AP, recall and precision of
each, then a paired bootstrap (--resamples resamples of each split's hold-out rows, the same
rows for both sides) 95% interval of the mean difference between the project and each anchor.
Targets: the project's mean F2 and AP each >= the better anchor's + 0.01, and the interval of at
least one of the two above 0 against that anchor. A missed target exits 1, naming it.

--set SECTION.KEY=VALUE (repeatable) changes the project's params only, as `dvc exp run -S`
does: a feature or model choice is judged against the same anchors. The project's mean CV on
each split's training rows (train's out-of-fold F2 and AP) is printed too: choices are adopted
by it (issue 18's rule), never by the hold-out figures.

Per-split work is kept under --work (default bench/out/quality), so a run that stops restarts
where it stopped: the anchors' probabilities are reused while the prepared rows and the grid are
the same; the project's while stages/, reel_driver/, dvc.yaml, params.yaml, pyproject.toml, bench/search.py and
--set are.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, fbeta_score, precision_score, recall_score

import search as search_bench  # bench/search.py: the scratch repository and the Optuna reference

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 0.35
MARGIN = 0.01
ANCHORS = ("optuna", "autogluon")
# raw fields AutoGluon does not get: identifiers and row timestamps say nothing about the film
NOT_FEATURES = ("imdb_id", "tmdb_id", "created_at", "updated_at")


PROJECT_FILES = ("dvc.yaml", "params.yaml", "pyproject.toml", "bench/search.py")


def digest(*parts: bytes) -> str:
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(hashlib.sha256(part).digest())
    return hashed.hexdigest()[:16]


def project_key(changes: dict) -> str:
    """What the project's run reads, as it is on disk (committed or not): the stages, the pipeline,
    params.yaml, the dependencies, the scratch copy's preparation, and --set. Not the commit: a
    commit that changes none of them (the docs, another bench) keeps the kept answers."""
    files = [*sorted((ROOT / "stages").glob("*.py")), *sorted((ROOT / "reel_driver").rglob("*.py")), *(ROOT / name for name in PROJECT_FILES)]
    return digest(*(part for file in files for part in (str(file.relative_to(ROOT)).encode(), file.read_bytes())),
                  json.dumps(changes, sort_keys=True).encode())


def anchor_key(workspace: Path, anchor: str, settings: argparse.Namespace) -> str:
    """What an anchor's answer depends on: the prepared rows, the grid and search settings, its own limits."""
    import yaml

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    grid = {k: v for k, v in params.items() if not isinstance(v, dict)}
    limits = {"optuna": settings.trials, "autogluon": settings.time_limit}[anchor]
    files = [workspace / "data" / "prepared" / name for name in ("train.parquet", "test.parquet", "train_raw.parquet")]
    return digest(*(f.read_bytes() for f in files), json.dumps([grid, params["search"], limits], sort_keys=True).encode())


# AutoGluon-Tabular on the raw training rows, run inside a prepared workspace by the interpreter of
# AutoGluon's own environment (argv: output path, time limit)
AUTOGLUON = f"""
import sys, tempfile
import polars as pl
from autogluon.tabular import TabularPredictor

def as_table(rows):
    lists = [name for name, dtype in rows.schema.items() if isinstance(dtype, pl.List)]
    rows = rows.with_columns(pl.col(lists).list.join(", "), pl.col(pl.Enum, pl.Categorical).cast(pl.String))
    return rows.drop({NOT_FEATURES!r}, strict=False).to_pandas()

train = pl.read_parquet("data/prepared/train_raw.parquet")
held = pl.read_parquet("data/prepared/test.parquet").select("imdb_id", "label")  # prep's hold-out rows
raw = pl.read_parquet("data/raw/training.parquet").drop("label")
test = held.join(raw, on="imdb_id", how="left").select(train.columns)
with tempfile.TemporaryDirectory(prefix="autogluon-") as scratch:
    predictor = TabularPredictor(label="label", eval_metric="average_precision", path=scratch, verbosity=0)
    predictor.fit(as_table(train), presets="medium_quality", time_limit=int(sys.argv[2]),
                  excluded_model_types=["NN_TORCH", "FASTAI"])
    probabilities = predictor.predict_proba(as_table(test.drop("label")))[1].to_numpy()
held.with_columns(probability=probabilities).write_parquet(sys.argv[1])
"""


def run_anchor(workspace: Path, anchor: str, out: Path, settings: argparse.Namespace) -> None:
    if anchor == "optuna":
        command = [sys.executable, str(workspace / "bench" / "search.py"), "_reference", str(settings.trials), str(out)]
    else:
        # this file alone, in AutoGluon's environment: it imports nothing of the project's
        command = [str(settings.autogluon_python), "-c", AUTOGLUON, str(out), str(settings.time_limit)]
    result = subprocess.run(command, cwd=workspace, env={**os.environ, "PYTHONPATH": str(workspace)},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{anchor} failed in {workspace}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def split_probabilities(split_seed: int, settings: argparse.Namespace, real: bool) -> tuple[dict[str, pl.DataFrame], dict]:
    """Every method's hold-out probabilities for one split, and the project's CV figures (train's
    out-of-fold F2 and AP): from --work where still valid, else computed."""
    kept = settings.work / f"split{split_seed}"
    kept.mkdir(parents=True, exist_ok=True)
    index = kept / "keys.json"
    keys = json.loads(index.read_text()) if index.exists() else {}
    # the project with --set changes is kept beside the default one: the anchors stay the same
    project = f"project-{digest(json.dumps(settings.changes, sort_keys=True).encode())[:8]}" if settings.changes else "project"
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        workspace = Path(scratch) / "repo"
        search_bench.prepare(workspace, split_seed, real, sample_rows=settings.sample_rows)  # raw rows, prep and analyze at this split seed
        wanted = {project: project_key(settings.changes), **{a: anchor_key(workspace, a, settings) for a in settings.anchors}}
        for method, key in wanted.items():
            path = kept / f"{method}.parquet"
            if keys.get(method) == key and path.exists():
                continue
            print(f"  split.seed {split_seed}: running {method}", flush=True)
            if method == project:
                if settings.changes:
                    workspace = Path(scratch) / "variant"
                    search_bench.prepare(workspace, split_seed, real, settings.changes, settings.sample_rows)
                raw = (workspace / "data" / "raw" / "training.parquet").read_bytes()
                search_bench.dvc(workspace, "repro", "evaluate")
                if (workspace / "data" / "raw" / "training.parquet").read_bytes() != raw:
                    sys.exit(f"split.seed {split_seed}: `dvc repro evaluate` replaced the raw rows (extract ran)")
                pl.read_parquet(workspace / "data" / "predictions" / "test.parquet").select(
                    "imdb_id", "label", "probability").write_parquet(path)
                trained = json.loads((workspace / "metrics" / "train.json").read_text())
                (kept / f"{method}.cv.json").write_text(json.dumps(
                    {"F2": trained["out_of_fold"]["score"], "AP": trained["out_of_fold"]["average_precision"],
                     "scoring": trained["scoring"]}))
            else:
                run_anchor(workspace, method, path, settings)
            keys[method] = key
            index.write_text(json.dumps(keys, indent=1))  # each method kept as soon as it is done
    frames = {method: pl.read_parquet(kept / f"{method}.parquet").sort("imdb_id") for method in wanted}
    frames["project"] = frames.pop(project)
    ids = frames["project"].get_column("imdb_id")
    for method, frame in frames.items():  # the same hold-out rows, with the same labels, for every method
        if not (frame.get_column("imdb_id").equals(ids) and frame.get_column("label").equals(frames["project"]["label"])):
            sys.exit(f"split.seed {split_seed}: {method}'s hold-out rows are not the project's")
    return frames, json.loads((kept / f"{project}.cv.json").read_text())


METRICS = {
    "F2": lambda labels, probabilities: fbeta_score(labels, probabilities >= THRESHOLD, beta=2, zero_division=0),
    "AP": average_precision_score,
    "recall": lambda labels, probabilities: recall_score(labels, probabilities >= THRESHOLD, zero_division=0),
    "precision": lambda labels, probabilities: precision_score(labels, probabilities >= THRESHOLD, zero_division=0),
}


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    return {name: float(metric(labels, probabilities)) for name, metric in METRICS.items()}


# The bootstrap scores 4 x resamples x splits resampled hold-outs: sklearn's checks cost 1.5 ms an AP and
# 3 ms an F2 call here (525 rows), 5 minutes for 1,000 resamples of 10 splits; counting with numpy is the
# same arithmetic (a test holds both to sklearn's figures, ties included) in a few microseconds
def f2_counted(labels: np.ndarray, probabilities: np.ndarray) -> float:
    flagged = probabilities >= THRESHOLD
    tp = int(np.sum(flagged & (labels == 1)))
    fp, fn = int(np.sum(flagged)) - tp, int(np.sum(labels)) - tp
    return 5 * tp / (5 * tp + 4 * fn + fp) if tp else 0.0


def ap_counted(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """sklearn's average precision: precision at each distinct score, weighed by the recall it adds."""
    order = np.argsort(-probabilities, kind="mergesort")
    scores, hits = probabilities[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(hits)[last_of_tie]
    if tps[-1] == 0:
        return 0.0
    precision, recall = tps / (last_of_tie + 1), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


COUNTED = {"F2": f2_counted, "AP": ap_counted}


def paired_interval(splits: list[dict[str, np.ndarray]], anchor: str, metric: str, resamples: int) -> tuple[float, float, float]:
    """The mean over splits of (project - anchor) in ``metric``, and a 95% interval from resampling each
    split's hold-out rows (the same resample for both sides)."""
    score = COUNTED[metric]
    rng = np.random.default_rng(0)
    observed = np.mean([score(s["label"], s["project"]) - score(s["label"], s[anchor]) for s in splits])
    means = np.empty(resamples)
    for b in range(resamples):
        differences = []
        for split in splits:
            rows = rng.integers(0, len(split["label"]), len(split["label"]))
            labels = split["label"][rows]
            differences.append(score(labels, split["project"][rows]) - score(labels, split[anchor][rows]))
        means[b] = np.mean(differences)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(observed), float(low), float(high)


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = [f"  {'method':<10} {'F2@0.35':>8} {'AP':>7} {'recall':>7} {'precision':>9}"]
    lines += [f"  {name:<10} {r['F2']:8.4f} {r['AP']:7.4f} {r['recall']:7.4f} {r['precision']:9.4f}" for name, r in rows.items()]
    return "\n".join(lines)


def parse_change(change: str) -> tuple[str, object]:
    import yaml

    key, separator, value = change.partition("=")
    if not separator or not key:
        sys.exit(f"bench: --set {change!r}: expected SECTION.KEY=VALUE")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-seeds", type=int, nargs="+", default=list(range(100, 110)))
    parser.add_argument("--anchors", nargs="+", choices=ANCHORS, default=list(ANCHORS))
    parser.add_argument("--trials", type=int, default=200, help="the Optuna reference's trials")
    parser.add_argument("--time-limit", type=int, default=300, help="AutoGluon's seconds")
    parser.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    parser.add_argument("--sample", action="store_true", help="the embedded sample even where the real export is")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "quality")
    search_bench.add_sample_rows(parser)
    parser.add_argument("--autogluon-python", type=Path, default=ROOT / "bench" / "out" / "autogluon-venv" / "bin" / "python",
                        help="the interpreter of an environment made from bench/autogluon-requirements.txt")
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a params.yaml change for the project's side only (a YAML value), as `dvc exp run -S`; "
                             "e.g. --set 'prep.text_columns=[overview, tagline]'")
    settings = parser.parse_args()
    settings.changes = dict(parse_change(change) for change in settings.changes)
    if "autogluon" in settings.anchors and not (settings.autogluon_python.exists() and subprocess.run(
            [str(settings.autogluon_python), "-c", "import autogluon.tabular, polars"], capture_output=True).returncode == 0):
        sys.exit(f"bench: no AutoGluon at {settings.autogluon_python}: make its environment as "
                 "bench/autogluon-requirements.txt says, or pass --autogluon-python (or --anchors optuna)")
    real = search_bench.REAL_EXPORT.exists() and not settings.sample
    settings.work = settings.work / ("real" if real else f"sample{settings.sample_rows or ''}")
    methods = ["project", *settings.anchors]

    splits, per_split, cross_validated = [], [], []
    for split_seed in settings.split_seeds:
        frames, cv = split_probabilities(split_seed, settings, real)
        cross_validated.append(cv)
        labels = frames["project"].get_column("label").to_numpy()
        split = {"label": labels, **{m: frames[m].get_column("probability").to_numpy() for m in methods}}
        splits.append(split)
        per_split.append({m: scores(labels, split[m]) for m in methods})
        print(f"\nsplit.seed {split_seed}, {'the real export' if real else 'the sample'}: "
              f"{len(labels)} hold-out rows, {int(labels.sum())} positive")
        print(table(per_split[-1]))
        print(f"  project's CV on the training rows (train's out-of-fold): F2 {cv['F2']:.4f}, AP {cv['AP']:.4f}")

    mean = {m: {k: float(np.mean([s[m][k] for s in per_split])) for k in ("F2", "AP", "recall", "precision")}
            for m in methods}
    seeds = " ".join(map(str, settings.split_seeds))
    print(f"\nmean over split seeds {seeds}")
    print(table(mean))
    changed = ", ".join(f"{key}={value!r}" for key, value in settings.changes.items()) or "params.yaml as it is"
    print(f"  project ({changed}): mean CV on the training rows F2 {np.mean([c['F2'] for c in cross_validated]):.4f}, "
          f"AP {np.mean([c['AP'] for c in cross_validated]):.4f} (what choices are adopted by; the hold-out decides nothing)")
    print(f"paired bootstrap, {settings.resamples} resamples of each split's hold-out rows: "
          "mean difference project - anchor [95% interval]")
    intervals = {}
    for anchor in settings.anchors:
        for metric in ("F2", "AP"):
            intervals[anchor, metric] = paired_interval(splits, anchor, metric, settings.resamples)
            observed, low, high = intervals[anchor, metric]
            print(f"  {metric:<3} against {anchor:<10} {observed:+.4f} [{low:+.4f}, {high:+.4f}]")

    better = {metric: max(settings.anchors, key=lambda a: mean[a][metric]) for metric in ("F2", "AP")}
    checks = [
        (f"mean {metric} >= the better anchor's ({better[metric]}, {mean[better[metric]][metric]:.4f}) + {MARGIN}",
         mean["project"][metric] >= mean[better[metric]][metric] + MARGIN)
        for metric in ("F2", "AP")
    ]
    checks.append(("a paired interval above 0 against the better anchor (F2 or AP)",
                   any(intervals[better[metric], metric][1] > 0 for metric in ("F2", "AP"))))
    for name, ok in checks:
        print(f"  {'pass' if ok else 'FAIL'}  {name}")
    missed = [name for name, ok in checks if not ok]
    if missed:
        sys.exit(f"missed targets (split seeds {seeds}): {'; '.join(missed)}")


if __name__ == "__main__":
    main()
