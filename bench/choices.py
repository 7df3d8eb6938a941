"""Feature and model choices, judged by cross-validation on training rows only (issue 18's adoption rule).

    python bench/choices.py                         # split seeds 100-109, the real export where it is
    python bench/choices.py --sample --split-seeds 100 --variants xgboost logistic   # a quick look

For each split seed, prep and analyze run in a scratch copy of this repository (bench/search.py's
`prepare`); then, on that split's training rows alone (the hold-out rows are never read), each
variant is scored by the project's own 5 folds (reel_driver.model.search.make_folds: stratified, shuffled
with search.seed). Every variant fits all it learns (vocabularies, text encoders, models) on the
fold's training part only. Its out-of-fold probabilities give a CV AP and F2 at 0.35 per split.

The hold-out rows of each split are scored too, by each variant fitted on all the training rows:
reported beside the CV, never used to choose (the rule).

Each table is the mean over the splits, and each variant's mean difference from `xgboost` with a
95% t interval over the splits (the same folds on both sides: a paired comparison). Fixed model
settings (below), the same for every variant of a family: this compares features and families,
it does not tune them. The `tuned` variants ask whether a gain holds against the project's own
search: the search (reel_driver.model.search, params.yaml's grid and search settings) runs on each fold's
training part, and its best cell is refitted there, as train does; LightGBM and CatBoost beside it
take the best cell's trees, depth, learning rate and positive weight.

Per-split results are kept under --work, so a run that stops restarts where it stopped.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import search as search_bench  # bench/search.py: the scratch repository
from scipy import stats
from sklearn.metrics import average_precision_score, fbeta_score
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 0.35
LABEL = "label"
TEXTS = ("overview", "tagline")
# the quick check, for every tree family: 200 trees of depth 5, positives weighed 5 to 1
FIXED = {"n_estimators": 200, "max_depth": 5, "learning_rate": 0.1, "scale_pos_weight": 5.0}
COMPANY_MIN_COUNT = 5


def text_of(raw: pl.DataFrame) -> list[str]:
    return raw.select(pl.concat_str([pl.col(t).fill_null("") for t in TEXTS], separator=" ")).to_series().to_list()


class Split:
    """One split: its training rows then its hold-out rows (raw fields and 0/1 labels), the
    project's folds over the training rows, and the project's settings."""

    def __init__(self, workspace: Path):
        from reel_driver.config import params
        from reel_driver.preparation import rows, training_set

        self.settings = settings = params.load(workspace / "params.yaml")
        prepared = workspace / "data" / "prepared"
        train_raw = pl.read_parquet(prepared / "train_raw.parquet")
        # the hold-out rows as prep splits them, with the columns prep keeps for training rows
        classified = rows.classify(pl.read_parquet(workspace / "data" / "raw" / "training.parquet"), settings.prep)
        train, test = training_set.split(training_set.training_rows(classified), settings.split)
        for name, ours in (("train_raw", train), ("test", test)):
            theirs = pl.read_parquet(prepared / f"{name}.parquet")
            if not ours.get_column("imdb_id").equals(theirs.get_column("imdb_id")):
                sys.exit(f"bench: prep's {name}.parquet holds other rows than prep.split gives here")
        self.raw = pl.concat([train_raw, test.select(train_raw.columns)])
        self.labels = self.raw.get_column(LABEL).to_numpy()  # prep's 0/1, 1 for would_watch
        self.training = np.arange(train_raw.height)
        self.hold_out = np.arange(train_raw.height, self.raw.height)
        # reel_driver.model.search.make_folds' folds: the same splitter, seed and labels
        self.folds = list(StratifiedKFold(n_splits=settings.search.cv_folds, shuffle=True, random_state=settings.search.seed)
                          .split(np.zeros(len(self.training)), self.labels[self.training]))
        self._searched: dict[bytes, dict] = {}

    def build(self, rows: np.ndarray, fitted_on: np.ndarray, companies: bool = False, text: bool = False) -> pl.DataFrame:
        """The feature build fitted on ``fitted_on`` rows, applied to ``rows``: prep's, with companies
        one-hot (values held by at least COMPANY_MIN_COUNT rows) or the pipeline's text branch
        (prep.text_columns: overview and tagline) where asked."""
        from reel_driver.preparation import features

        lists = [*self.settings.prep.list_columns, *(["production_companies"] if companies else [])]
        settings = self.settings.prep.model_copy(update={"list_columns": lists, "text_columns": list(TEXTS) if text else []})
        spec = features.fit(self.raw[fitted_on], settings)
        return features.build(self.raw[rows], spec)

    def best_cell(self, fit: np.ndarray, built_fit: pl.DataFrame) -> dict:
        """The project's search on the ``fit`` rows alone (its own inner folds), as train runs it:
        the best cell of params.yaml's grid. Kept, as both tuned variants ask for it."""
        from reel_driver.model import search

        key = fit.tobytes()
        if key not in self._searched:
            folds = search.make_folds(built_fit, self.labels[fit], self.settings.search.cv_folds, self.settings.search.seed)
            self._searched[key] = search.search(folds, self.settings.grid, self.settings.search, "cpu").best
        return self._searched[key]


def derived(raw: pl.DataFrame, reference_year: int) -> pl.DataFrame:
    """What the owner says he weighs together (seed 001: RT score against IMDb votes, English films,
    genre rules), as explicit columns: votes per year since release, the critics' and the public's
    ratings apart, box office against budget, how many genres."""
    known = lambda c: pl.when(pl.col(c) > 0).then(pl.col(c).cast(pl.Float64))  # noqa: E731 (0: not known)
    return raw.select(
        votes_per_year=pl.col("imdb_votes") / (reference_year - pl.col("release_year") + 1).clip(lower_bound=1),
        critics_minus_public=pl.col("rt_score") / 10 - pl.col("imdb_rating"),
        metascore_minus_rt=pl.col("metascore").cast(pl.Float64) - pl.col("rt_score"),
        revenue_per_budget=known("revenue") / known("budget"),
        genres=pl.col("genre").list.len(),
        english=(pl.col("original_language") == "en").cast(pl.Int8),
    )


def xgboost(built_fit: pl.DataFrame, labels: np.ndarray, built_held: pl.DataFrame, seed: int = 0,
            sampled: float = 1.0) -> np.ndarray:
    import xgboost as xgb

    from reel_driver.preparation import features

    x_fit, types = features.model_values(built_fit)
    x_held, _ = features.model_values(built_held)
    model = xgb.XGBClassifier(**FIXED, tree_method="hist", feature_types=types,
                              subsample=sampled, colsample_bytree=sampled, enable_categorical=True, n_jobs=2,
                              random_state=seed)
    model.fit(x_fit, labels)
    return model.predict_proba(x_held)[:, 1]


def tuned_xgboost(built_fit: pl.DataFrame, labels: np.ndarray, built_held: pl.DataFrame, cell: dict, seed: int) -> np.ndarray:
    """The search's best cell refitted on the fit rows, as train refits it (on all the training rows:
    the project's own model, so its hold-out figures are the project's in bench/quality.py)."""
    from reel_driver.model import search

    return search.fit(search.matrix(built_fit, labels), cell, seed, "cpu").predict(search.matrix(built_held))


def lightgbm(built_fit: pl.DataFrame, labels: np.ndarray, built_held: pl.DataFrame, shared: dict = FIXED) -> np.ndarray:
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(n_estimators=int(shared["n_estimators"]), max_depth=int(shared["max_depth"]),
                           num_leaves=2 ** int(shared["max_depth"]), learning_rate=shared["learning_rate"],
                           scale_pos_weight=shared["scale_pos_weight"], n_jobs=2, random_state=0, verbose=-1)
    model.fit(built_fit.to_pandas(), labels)  # Enum columns arrive as pandas categories: LightGBM's own
    return model.predict_proba(built_held.to_pandas())[:, 1]


def catboost(built_fit: pl.DataFrame, labels: np.ndarray, built_held: pl.DataFrame, texts: tuple = (),
             shared: dict = FIXED) -> np.ndarray:
    from catboost import CatBoostClassifier, Pool

    categorical = [c for c, dtype in built_fit.schema.items() if isinstance(dtype, pl.Enum)]

    def pool(frame: pl.DataFrame, y=None) -> Pool:
        frame = frame.with_columns(pl.col(categorical).cast(pl.String).fill_null("(missing)"),
                                   pl.col(list(texts)).fill_null(""))
        return Pool(frame.to_pandas(), y, cat_features=categorical, text_features=list(texts) or None)

    model = CatBoostClassifier(iterations=int(shared["n_estimators"]), depth=int(shared["max_depth"]),
                               learning_rate=shared["learning_rate"], scale_pos_weight=shared["scale_pos_weight"],
                               thread_count=2, random_seed=0, verbose=0,
                               allow_writing_files=False)  # no catboost_info/ in the working tree
    model.fit(pool(built_fit, labels))
    return model.predict_proba(pool(built_held))[:, 1]


def logistic(built_fit: pl.DataFrame, labels: np.ndarray, built_held: pl.DataFrame) -> np.ndarray:
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = [c for c, dtype in built_fit.schema.items() if isinstance(dtype, pl.Enum)]
    numeric = [c for c in built_fit.columns if c not in categorical]
    model = make_pipeline(
        make_column_transformer(
            (make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numeric),
            (OneHotEncoder(handle_unknown="ignore"), categorical)),
        LogisticRegression(C=0.1, class_weight={0: 1.0, 1: FIXED["scale_pos_weight"]}, max_iter=5000))

    def frame(built: pl.DataFrame):
        return built.with_columns(pl.col(categorical).cast(pl.String).fill_null("(missing)")).to_pandas()

    model.fit(frame(built_fit), labels)
    return model.predict_proba(frame(built_held))[:, 1]


def text_score(fit_texts: list[str], labels: np.ndarray, held_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A text-only logistic regression on the text branch's TF-IDF (reel_driver.preparation.features.tfidf), stacked:
    out-of-fold scores for the rows it learns from (inner 5 folds), the model fitted on all of them
    for the other rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from reel_driver.preparation import features

    def model():
        return make_pipeline(features.tfidf(), LogisticRegression(C=4.0, class_weight="balanced", max_iter=5000))

    texts = np.array(fit_texts, dtype=object)
    inner = np.zeros(len(labels))
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(texts, labels):
        inner[held] = model().fit(texts[fit], labels[fit]).predict_proba(texts[held])[:, 1]
    return inner, model().fit(texts, labels).predict_proba(held_texts)[:, 1]


def fold_mean(built_fit: pl.DataFrame, labels: np.ndarray, built_held: pl.DataFrame) -> np.ndarray:
    """The mean of 5 models, each fitted on 4/5 of the rows (the CV's own models), instead of one refit."""
    parts = StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(labels)), labels)
    return np.mean([xgboost(built_fit[fit], labels[fit], built_held) for fit, _ in parts], axis=0)


def variant_probabilities(split: Split, variant: str, fit: np.ndarray, held: np.ndarray) -> np.ndarray:
    """One variant's probabilities for the ``held`` rows, everything learnt from the ``fit`` rows."""
    labels = split.labels[fit]
    base_fit, base_held = split.build(fit, fit), split.build(held, fit)
    if variant == "xgboost":
        return xgboost(base_fit, labels, base_held)
    if variant == "xgboost + derived":
        year = int(split.raw[fit].get_column("release_year").max())
        return xgboost(pl.concat([base_fit, derived(split.raw[fit], year)], how="horizontal"), labels,
                       pl.concat([base_held, derived(split.raw[held], year)], how="horizontal"))
    if variant == "xgboost + companies":
        return xgboost(split.build(fit, fit, companies=True), labels, split.build(held, fit, companies=True))
    texts = text_of(split.raw)
    fit_texts, held_texts = [texts[i] for i in fit], [texts[i] for i in held]
    if variant == "xgboost + text svd":
        return xgboost(split.build(fit, fit, text=True), labels, split.build(held, fit, text=True))
    if variant == "xgboost + stacked text":
        inner, outer = text_score(fit_texts, labels, held_texts)
        return xgboost(base_fit.with_columns(text_score=inner), labels, base_held.with_columns(text_score=outer))
    if variant == "text alone (logistic, TF-IDF)":
        return text_score(fit_texts, labels, held_texts)[1]
    if variant == "lightgbm":
        return lightgbm(base_fit, labels, base_held)
    if variant == "catboost":
        return catboost(base_fit, labels, base_held)
    if variant == "catboost + text":
        raw_texts = split.raw.select(TEXTS)
        return catboost(pl.concat([base_fit, raw_texts[fit]], how="horizontal"), labels,
                        pl.concat([base_held, raw_texts[held]], how="horizontal"), TEXTS)
    if variant == "logistic regression":
        return logistic(base_fit, labels, base_held)
    if variant == "xgboost, mean of 5 fold models":
        return fold_mean(base_fit, labels, base_held)
    if variant == "xgboost bagged over 5 seeds":
        # rows and columns sampled (0.8), or every seed grows the same trees
        return np.mean([xgboost(base_fit, labels, base_held, seed, 0.8) for seed in range(5)], axis=0)
    if variant == "mean of xgboost, lightgbm, catboost":
        return np.mean([xgboost(base_fit, labels, base_held), lightgbm(base_fit, labels, base_held),
                        catboost(base_fit, labels, base_held)], axis=0)
    if variant in ("xgboost, tuned", "mean of tuned xgboost, lightgbm, catboost"):
        cell = split.best_cell(fit, base_fit)
        tuned = tuned_xgboost(base_fit, labels, base_held, cell, split.settings.search.seed)
        if variant == "xgboost, tuned":
            return tuned
        return np.mean([tuned, lightgbm(base_fit, labels, base_held, cell),
                        catboost(base_fit, labels, base_held, shared=cell)], axis=0)
    raise ValueError(variant)


VARIANTS = (
    "xgboost", "xgboost + companies", "xgboost + derived", "xgboost + text svd", "xgboost + stacked text", "text alone (logistic, TF-IDF)",
    "lightgbm", "catboost", "catboost + text", "logistic regression", "xgboost, mean of 5 fold models",
    "xgboost bagged over 5 seeds", "mean of xgboost, lightgbm, catboost",
    "xgboost, tuned", "mean of tuned xgboost, lightgbm, catboost",
)
# the difference column is against xgboost at the fixed settings, except where a tuned variant has a tuned baseline
BASELINES = {"mean of tuned xgboost, lightgbm, catboost": "xgboost, tuned"}


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    return {"AP": float(average_precision_score(labels, probabilities)),
            "F2": float(fbeta_score(labels, probabilities >= THRESHOLD, beta=2, zero_division=0))}


def variant_scores(split: Split, variant: str) -> dict[str, dict[str, float]]:
    """CV on the training rows (the project's folds), and the hold-out rows scored by the variant
    fitted on every training row."""
    oof = np.zeros(len(split.training))
    for fit, held in split.folds:
        oof[held] = variant_probabilities(split, variant, fit, held)
    hold_out = variant_probabilities(split, variant, split.training, split.hold_out)
    return {"CV": scores(split.labels[split.training], oof), "hold-out": scores(split.labels[split.hold_out], hold_out)}


def split_results(split_seed: int, variants: list[str], work: Path, real: bool,
                  sample_rows: int | None) -> dict[str, dict[str, float]]:
    kept = work / f"split{split_seed}.json"
    # kept results hold while this file and the project's feature build are the same
    key = hashlib.sha256(Path(__file__).read_bytes() + (ROOT / "reel_driver" / "preparation" / "features.py").read_bytes()
                         + (ROOT / "params.yaml").read_bytes()).hexdigest()[:16]
    results = json.loads(kept.read_text()) if kept.exists() else {}
    if results.get("key") != key:
        results = {"key": key, "variants": {}}
    missing = [v for v in variants if v not in results["variants"]]
    if missing:
        with tempfile.TemporaryDirectory(prefix="bench-choices-") as scratch:
            workspace = Path(scratch) / "repo"
            search_bench.prepare(workspace, split_seed, real, sample_rows=sample_rows)
            split = Split(workspace)
            for variant in missing:
                print(f"  split.seed {split_seed}: {variant}", flush=True)
                results["variants"][variant] = variant_scores(split, variant)
                kept.write_text(json.dumps(results, indent=1))
    return {v: results["variants"][v] for v in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-seeds", type=int, nargs="+", default=list(range(100, 110)))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--sample", action="store_true", help="the embedded sample even where the real export is")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "choices")
    search_bench.add_sample_rows(parser)
    settings = parser.parse_args()
    real = search_bench.REAL_EXPORT.exists() and not settings.sample
    work = settings.work / ("real" if real else f"sample{settings.sample_rows or ''}")
    work.mkdir(parents=True, exist_ok=True)
    variants = list(dict.fromkeys(["xgboost", *(BASELINES.get(v, v) for v in settings.variants), *settings.variants]))

    per_split = [split_results(seed, variants, work, real, settings.sample_rows) for seed in settings.split_seeds]
    where = f"{'the real export' if real else 'the sample'}, split seeds {' '.join(map(str, settings.split_seeds))}"
    print(f"\n5-fold CV on each split's training rows (what a choice is made by), {where}:")
    table(per_split, variants, "CV")
    print(f"\nThe hold-out rows, each variant fitted on all the training rows (reported, never used to choose), {where}:")
    table(per_split, variants, "hold-out")


def table(per_split: list[dict], variants: list[str], part: str) -> None:
    """The mean over the splits, and the mean difference from the variant's baseline with a 95% t
    interval over the splits."""
    print(f"  {'variant':<42} {'AP':>7} {'diff [95%]':>26} {'F2':>7} {'diff [95%]':>26}  against")
    for variant in variants:
        baseline = BASELINES.get(variant, "xgboost")
        cells = []
        for metric in ("AP", "F2"):
            values = np.array([s[variant][part][metric] for s in per_split])
            interval = ""
            if variant != "xgboost" and baseline in per_split[0]:
                differences = values - np.array([s[baseline][part][metric] for s in per_split])
                if len(per_split) < 2 or differences.std() == 0:  # no interval from one split
                    interval = f"{differences.mean():+.4f}"
                else:
                    low, high = stats.t.interval(0.95, len(differences) - 1, loc=differences.mean(), scale=stats.sem(differences))
                    interval = f"{differences.mean():+.4f} [{low:+.4f}, {high:+.4f}]"
            cells.append(f"{values.mean():7.4f} {interval:>26}")
        print(f"  {variant:<42} {cells[0]} {cells[1]}  {baseline if variant != 'xgboost' else ''}")

if __name__ == "__main__":
    main()
