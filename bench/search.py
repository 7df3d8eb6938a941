"""Search: the project's search against the owner's Optuna search, best CV against seconds.

    python bench/search.py                        # split seeds 100-103; budgets 6 to 60; 200 trials
    python bench/search.py --sample --split-seeds 100 --budgets 6 --trials 2 --plot /tmp/anytime.png

For each split seed, a scratch copy of this repository (the working tree as it is, params
included) gets raw rows, the hold-out split at that seed, prepared rows and the selection
(`dvc repro analyze`). Then each search runs in a fresh process that imports only its own side,
on the same prepared training rows, the same StratifiedKFold folds (search.cv_folds,
search.seed), the same objective (F2 at search.threshold, the mean over the folds) and the same
grid (params.yaml's top-level hyperparameter lists):

  project:   reel_driver/model/search.py as train calls it (params read as train reads them, with
             search.budget set as `dvc exp run -S` would; the strategy of params.yaml), once per
             budget in --budgets, each its own process;
  reference: the owner's later approach, Optuna TPE (seed 42), MedianPruner, sklearn's
             XGBClassifier per fold, --trials trials, its best CV so far after each trial.

What is timed is the same span on both sides: from the selected training features in memory
to the best configuration known.
  project:   reel_driver/model/fitting.py's timed_search, the call train makes: search.make_folds +
             search.search (what train logs as search seconds; train runs it with MLflow loading
             on a thread beside it, which is not here);
  reference: the frame to pandas, the fold slices and study.optimize; the seconds after each
             trial are read in an Optuna callback.
Process start, imports, reading the files and the refit of the best configuration (untimed: it
gives the hold-out figures) are outside both spans.

It prints, per split seed and as the mean over the split seeds, a table of best CV against
seconds (the project at each budget; the reference at each trial that raised its best CV and at
some others), the time each search
needs to reach the CV the other ends with, and the hold-out F2 and AP of the refitted best
configuration at the default budget (params.yaml's search.budget); it draws both curves to
--plot (PNG). Targets, on the mean over the split seeds, at the default budget: seconds <= 0.10
x the reference's, CV >= the reference's final CV - 0.005, hold-out F2 and AP >= the
reference's. A missed target exits 1 with a last line naming it.

Data: the real export (../shared/data/atp_training.parquet) when it is there, else the embedded
synthetic sample (--sample forces it). Nothing in this repository is written but the plot.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL_EXPORT = ROOT.parent / "shared" / "data" / "atp_training.parquet"
# copied into the scratch repository: the working tree and git, not caches or outputs
SKIPPED = shutil.ignore_patterns(".dvc/cache", "tmp", "mlruns", "mlflow.db", "__pycache__", "*.egg-info", "dvc_plots")
BUDGETS = [6, 12, 18, 24, 36, 48, 60]
# the targets, judged on the mean over the split seeds (one split's CV moves more than 0.005 with the split)
TIME_RATIO = 0.10
CV_MARGIN = 0.005

# the dvc of this Python's environment, as a user of it types `dvc`
DVC = str(Path(sys.executable).with_name("dvc")) if Path(sys.executable).with_name("dvc").exists() else "dvc"


def dvc(workspace: Path, *arguments: str) -> None:
    # the stages' `python` is this one, as in an activated environment, even when it was not activated
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    result = subprocess.run([DVC, *arguments], cwd=workspace, env={**os.environ, "PATH": path},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:  # dvc's own words (a stage's traceback, a missing `python` on PATH)
        sys.exit(f"bench: `dvc {' '.join(arguments)}` failed in {workspace}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


def add_sample_rows(parser: argparse.ArgumentParser) -> None:
    """--sample-rows: a smaller (or larger) sample, for both sides alike; the tests' quick runs."""
    parser.add_argument("--sample-rows", type=int, metavar="N",
                        help="the sample's rows (default: params.yaml's extract.sample_rows); not with the real export")


def prepare(workspace: Path, split_seed: int, real: bool, changes: dict | None = None,
            sample_rows: int | None = None) -> str:
    """A scratch repository with raw data, prepared rows and the selection in place; ``changes``
    ({"prep.text_columns": [...], ...}) set in its params.yaml first, as `dvc exp run -S` would;
    the sample of ``sample_rows`` rows where given."""
    import yaml

    shutil.copytree(ROOT, workspace, ignore=SKIPPED)
    params_file = workspace / "params.yaml"
    settings = yaml.safe_load(params_file.read_text())
    settings["split"]["seed"] = split_seed
    if sample_rows:
        settings["extract"]["sample_rows"] = sample_rows
    for dotted, value in (changes or {}).items():
        *sections, key = dotted.split(".")
        target = settings
        for section in sections:
            target = target[section]
        if key not in target:
            sys.exit(f"bench: params.yaml has no {dotted}")
        target[key] = value
    params_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    if real:
        # what extract writes from the production table, without a server
        code = (
            "import polars as pl; from reel_driver.config import paths; from reel_driver.data import outputs, schema; "
            f"real = pl.read_parquet({str(REAL_EXPORT)!r}); "
            "real = real.with_columns(pl.col('label', 'media_type').cast(pl.String)); "
            "outputs.write_parquet(schema.conform(real).sort('imdb_id'), paths.RAW)"
        )
        subprocess.run([sys.executable, "-c", code], cwd=workspace, check=True)
        # extract always reruns, and without a database it writes the sample: frozen, a later
        # `dvc repro` (bench/quality.py's) keeps these rows
        dvc(workspace, "freeze", "extract")
        dvc(workspace, "repro", "-s", "prep")
        dvc(workspace, "repro", "-s", "analyze")
        return f"the real export ({REAL_EXPORT})"
    dvc(workspace, "repro", "analyze")
    return "the synthetic sample"


def child(workspace: Path, *arguments: str) -> dict:
    """Run one side in a fresh process in the workspace, importing the workspace's stages; its last line."""
    command = [sys.executable, str(workspace / "bench" / "search.py"), *arguments]
    env = {**os.environ, "PYTHONPATH": str(workspace)}
    result = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(arguments)} failed in {workspace}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _project(budget: int) -> None:
    """The project's search at one budget; run inside a prepared workspace."""
    import polars as pl

    from reel_driver.config import params, paths
    from reel_driver.model import fitting, metrics, search

    settings = params.check([f"search.budget={budget}"])
    columns = json.loads(paths.SELECTION.read_text())["columns"]
    features, labels = fitting.training_matrix(pl.read_parquet(paths.PREPARED_TRAIN), columns)
    outcome, seconds = fitting.timed_search(features, labels, settings.grid, settings.search, settings.train.device)

    test = pl.read_parquet(paths.PREPARED_TEST)
    booster = fitting.refit(features, labels, outcome, settings.search.seed, settings.train.device)
    probabilities = booster.predict(search.matrix(test.select(columns)))
    held = test.get_column("label").to_numpy()
    print(json.dumps({
        "seconds": seconds, "cv_score": outcome.best_score, "best_params": outcome.best,
        "configurations": outcome.configurations, "fits": outcome.fits, "rows": len(labels),
        "holdout_f2": metrics.objective("f2", held, probabilities, settings.search.threshold, 0.0),
        "holdout_ap": metrics.objective("average_precision", held, probabilities, 0.5, 0.0),
        "peak_rss_mib": peak_rss_mib(),
    }))


def _reference(trials: int, probabilities_path: str | None = None) -> None:
    """The owner's search as the issue measures it; run inside a prepared workspace. With
    ``probabilities_path``, the refit's hold-out probabilities go there too (bench/quality.py)."""
    import numpy as np
    import optuna
    import polars as pl
    import yaml
    from sklearn.metrics import average_precision_score, fbeta_score
    from sklearn.model_selection import StratifiedKFold
    from xgboost import XGBClassifier

    settings = yaml.safe_load(Path("params.yaml").read_text())
    search = settings["search"]
    grid = {k: v if isinstance(v, list) else [v] for k, v in settings.items() if not isinstance(v, dict)}
    columns = json.loads(Path("models/selection.json").read_text())["columns"]
    train, test = pl.read_parquet("data/prepared/train.parquet"), pl.read_parquet("data/prepared/test.parquet")
    selected, labels = train.select(columns), train.get_column("label").to_numpy()
    threshold = search["threshold"]

    def model(config: dict) -> XGBClassifier:
        return XGBClassifier(**config, random_state=42, tree_method="hist", enable_categorical=True)

    def objective(trial: optuna.Trial) -> float:
        config = {k: trial.suggest_categorical(k, values) for k, values in grid.items()}
        scores = []
        for step, (fit_x, fit_y, held_x, held_y) in enumerate(folds):
            probabilities = model(config).fit(fit_x, fit_y).predict_proba(held_x)[:, 1]
            scores.append(fbeta_score(held_y, probabilities >= threshold, beta=2, zero_division=0))
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    curve: list[tuple[float, float]] = []  # after each trial: seconds since the start, best CV so far

    def after(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        curve.append((time.perf_counter() - started, study.best_value))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=42),
                                pruner=optuna.pruners.MedianPruner())
    started = time.perf_counter()
    features = selected.to_pandas()
    splitter = StratifiedKFold(n_splits=search["cv_folds"], shuffle=True, random_state=search["seed"])
    folds = [(features.iloc[a], labels[a], features.iloc[b], labels[b]) for a, b in splitter.split(features, labels)]
    study.optimize(objective, n_trials=trials, callbacks=[after])
    seconds = time.perf_counter() - started

    refit = model(study.best_params).fit(features, labels)
    probabilities = refit.predict_proba(test.select(columns).to_pandas())[:, 1]
    held = test.get_column("label").to_numpy()
    if probabilities_path:
        test.select("imdb_id", "label").with_columns(probability=probabilities).write_parquet(probabilities_path)
    print(json.dumps({
        "seconds": seconds, "cv_score": study.best_value, "best_params": study.best_params, "curve": curve,
        "fits": sum(len(t.intermediate_values) for t in study.trials),
        "holdout_f2": float(fbeta_score(held, probabilities >= threshold, beta=2, zero_division=0)),
        "holdout_ap": float(average_precision_score(held, probabilities)),
        "peak_rss_mib": peak_rss_mib(),
    }))


def first_reaching(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(size, seconds) of the first point of a (size, seconds, CV) curve at or above target."""
    return next(((size, seconds) for size, seconds, cv in curve if cv >= target), None)


def mean_curve(curves: list[list[tuple[int, float, float]]]) -> list[tuple[int, float, float]]:
    """Point by point (same sizes on every split seed): the mean seconds and the mean CV."""
    return [(points[0][0], sum(p[1] for p in points) / len(points), sum(p[2] for p in points) / len(points))
            for points in zip(*curves)]


def checkpoints(budgets: list[int], trials: int) -> list[int]:
    """The reference's trials shown in the table: the project's budgets, every 50th, the last."""
    return sorted({t for t in [*budgets, *range(50, trials, 50), trials] if t <= trials})


def table(project: list[tuple[int, float, float]], reference: list[tuple[int, float, float]], shown: list[int],
          improvements: bool) -> str:
    """Best CV against seconds: every project budget; the reference's trials in `shown`, and with
    `improvements` every trial that raised its best CV."""
    lines = ["  search      size  seconds  best CV   (size: project configurations, reference trials)"]
    lines += [f"  project   {size:6d} {seconds:8.2f}   {cv:.4f}" for size, seconds, cv in project]
    previous = -math.inf
    for size, seconds, cv in reference:
        if size in shown or (improvements and cv > previous):
            lines.append(f"  reference {size:6d} {seconds:8.2f}   {cv:.4f}")
        previous = cv
    return "\n".join(lines)


def time_to_quality(project: list[tuple[int, float, float]], reference: list[tuple[int, float, float]]) -> str:
    """The seconds each search needs to reach the CV the other one ends with."""
    lines = []
    for name, curve, other, unit, other_unit in (
            ("project", project, reference, "budget", "trials"),
            ("reference", reference, project, "trial", "budget")):
        size, seconds, target = other[-1]
        where = f"{other_unit} {size}" if other_unit == "budget" else f"{size} {other_unit}"
        found = first_reaching(curve, target)
        reached = (f"at {unit} {found[0]}, {found[1]:.2f} s ({found[1] / seconds:.2f} x the other's {seconds:.2f} s)"
                   if found else f"never within {unit} {curve[-1][0]} ({curve[-1][1]:.2f} s, CV {curve[-1][2]:.4f})")
        lines.append(f"  time to quality: {name} reaches the other's final CV {target:.4f} ({where}): {reached}")
    return "\n".join(lines)


def at_default(runs: list[dict], budgets: list[int], default: int) -> dict:
    return runs[budgets.index(default)]


def verdict(project: dict, reference: dict) -> list[str]:
    checks = [
        (f"time ratio <= {TIME_RATIO:.2f}", project["seconds"] / reference["seconds"] <= TIME_RATIO),
        (f"CV score >= reference - {CV_MARGIN}", project["cv_score"] >= reference["cv_score"] - CV_MARGIN),
        ("hold-out F2 >= reference", project["holdout_f2"] >= reference["holdout_f2"]),
        ("hold-out AP >= reference", project["holdout_ap"] >= reference["holdout_ap"]),
    ]
    return [f"  {'pass' if ok else 'FAIL'}  {name}" for name, ok in checks]


def plot(path: Path, project: dict[int, list], reference: dict[int, list], title: str) -> None:
    """Best CV against seconds: faint lines per split seed, bold ones for the mean."""
    import matplotlib

    matplotlib.use("Agg")  # a file, no screen
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for name, curves, colour, step in (("project", project, "tab:blue", False),
                                       ("reference (Optuna TPE)", reference, "tab:orange", True)):
        draw = axes.step if step else axes.plot
        for curve in curves.values():
            draw([p[1] for p in curve], [p[2] for p in curve], color=colour, alpha=0.25, linewidth=1,
                 **({"where": "post"} if step else {}))
        mean = mean_curve(list(curves.values()))
        draw([p[1] for p in mean], [p[2] for p in mean], color=colour, linewidth=2.5, label=f"{name}, mean",
             **({"where": "post"} if step else {"marker": "o"}))
        if not step:
            for size, seconds, cv in mean:
                axes.annotate(str(size), (seconds, cv), textcoords="offset points", xytext=(0, 6), ha="center",
                              fontsize=8, color=colour)
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda seconds, _: f"{seconds:g}"))
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel("seconds (the search alone; log scale)")
    axes.set_ylabel("best CV F2 so far")
    axes.set_title(title, fontsize=9)
    axes.legend(title="faint: each split seed; numbers: project budget", fontsize=8, title_fontsize=8,
                loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def default_budget() -> int:
    import yaml

    return int(yaml.safe_load((ROOT / "params.yaml").read_text())["search"]["budget"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[100, 101, 102, 103])
    parser.add_argument("--budgets", type=int, nargs="+", default=BUDGETS, help="the project's search.budget values")
    parser.add_argument("--trials", type=int, default=200, help="the reference's Optuna trials")
    parser.add_argument("--sample", action="store_true", help="the embedded sample even where the real export is")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "out" / "search_anytime.png")
    add_sample_rows(parser)
    arguments = parser.parse_args()
    default = default_budget()
    budgets = sorted({*arguments.budgets, default})
    real = REAL_EXPORT.exists() and not arguments.sample

    print(f"cpus {os.cpu_count()}, python {sys.version.split()[0]}; project budgets {budgets} "
          f"(default {default}), reference {arguments.trials} trials")
    shown = checkpoints(budgets, arguments.trials)
    projects, references, ours, theirs = {}, {}, [], []
    for split_seed in arguments.split_seeds:
        with tempfile.TemporaryDirectory(prefix="bench-search-") as scratch:
            workspace = Path(scratch) / "repo"
            data = prepare(workspace, split_seed, real, sample_rows=arguments.sample_rows)
            load = os.getloadavg()[0]  # the machine's other work, which both sides' seconds include
            runs = [child(workspace, "_project", str(budget)) for budget in budgets]
            reference = child(workspace, "_reference", str(arguments.trials))
        projects[split_seed] = [(b, run["seconds"], run["cv_score"]) for b, run in zip(budgets, runs)]
        references[split_seed] = [(t + 1, seconds, cv) for t, (seconds, cv) in enumerate(reference["curve"])]
        ours.append(at_default(runs, budgets, default))
        theirs.append(reference)
        print(f"\nsplit.seed {split_seed}, {data}: {runs[0]['rows']} training rows; "
              f"load average {load:.1f} before the searches, {os.getloadavg()[0]:.1f} after")
        print(table(projects[split_seed], references[split_seed], shown, improvements=True))
        print(time_to_quality(projects[split_seed], references[split_seed]))
        best = ", ".join(f"{k}={v:g}" for k, v in ours[-1]["best_params"].items())
        print(f"  hold-out at budget {default}: project F2 {ours[-1]['holdout_f2']:.4f} AP {ours[-1]['holdout_ap']:.4f}"
              f"; reference F2 {reference['holdout_f2']:.4f} AP {reference['holdout_ap']:.4f}")
        print(f"  project's best at budget {default}: {best}")
        print(f"  peak RSS: project {max(run['peak_rss_mib'] for run in runs):.0f} MiB, "
              f"reference {reference['peak_rss_mib']:.0f} MiB")

    seeds = " ".join(map(str, arguments.split_seeds))
    project_mean, reference_mean = mean_curve(list(projects.values())), mean_curve(list(references.values()))
    mean = {key: sum(run[key] for run in ours) / len(ours) for key in ("seconds", "cv_score", "holdout_f2", "holdout_ap")}
    their_mean = {key: sum(run[key] for run in theirs) / len(theirs)
                  for key in ("seconds", "cv_score", "holdout_f2", "holdout_ap")}
    print(f"\nmean over split seeds {seeds}")
    print(table(project_mean, reference_mean, shown, improvements=False))
    print(time_to_quality(project_mean, reference_mean))
    print(f"  at the default budget {default}: project {mean['seconds']:.2f} s CV {mean['cv_score']:.4f} "
          f"hold-out F2 {mean['holdout_f2']:.4f} AP {mean['holdout_ap']:.4f}; reference ({arguments.trials} trials) "
          f"{their_mean['seconds']:.2f} s CV {their_mean['cv_score']:.4f} hold-out F2 {their_mean['holdout_f2']:.4f} "
          f"AP {their_mean['holdout_ap']:.4f}; ratio {mean['seconds'] / their_mean['seconds']:.3f}")
    title = (f"{'real export' if real else 'synthetic sample'}, split seeds {seeds}: best CV F2@threshold "
             f"against seconds, the same folds and grid")
    plot(arguments.plot, projects, references, title)
    print(f"  plot: {arguments.plot}")
    verdicts = verdict(mean, their_mean)
    print("\n".join(verdicts))
    missed = [line.removeprefix("  FAIL  ") for line in verdicts if "FAIL" in line]
    if missed:  # a benchmark whose targets are missed fails, whatever it printed before
        sys.exit(f"missed targets (mean over split seeds {seeds}, budget {default}): {'; '.join(missed)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_project"]:
        _project(int(sys.argv[2]))
    elif sys.argv[1:2] == ["_reference"]:
        _reference(int(sys.argv[2]), *sys.argv[3:4])
    else:
        main()
