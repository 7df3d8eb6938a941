"""The feature analysis of seed 001 ("feature selection"), as pure functions on training rows.

Data quality (nulls, distinct counts, dtypes) -> statistics per class (normality,
category usefulness, text length and distinctness) -> inter-feature tests
(Pearson, Spearman, Cramér's V, chi-squared, ANOVA F) -> target tests. Every
threshold comes from params (``analysis.*``); every decision names its rule.
"""

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats
from scipy.stats.contingency import association
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold

from reel_driver.config.params import AnalysisParams
from reel_driver.preparation import features

CONTINUOUS = features.CONTINUOUS
LISTS = ("genre", "spoken_languages", "origin_country", "production_countries", "production_companies")
CATEGORICALS = ("original_language", "production_status")
TEXTS = ("media_title", "original_media_title", "tagline", "overview")
LABEL = "label"
OTHER, MISSING = "(other)", "(missing)"
# The range each continuous field can take (the production table's CHECKs):
# a value outside it means the distribution does not "make sense".
VALID_RANGE = {
    "release_year": (1850, 2100), "rt_score": (0, 100), "metascore": (0, 100),
    "imdb_rating": (0, 10), "tmdb_rating": (0, 10),
}


# A right skew above this (an exponential distribution's is 2) packs most rows into the
# first bins of a linear axis, where one spike hides the rest: plotted on a log axis.
LOG_SKEW = 2.0


def heavy_tailed(known: np.ndarray) -> bool:
    """Whether a continuous feature's known values read better on a log axis: none negative,
    skewed right beyond LOG_SKEW, and less skewed after log(1 + x)."""
    if known.size < 3 or known.min() < 0 or known.std() == 0:
        return False
    skew = float(stats.skew(known))
    return skew > LOG_SKEW and abs(float(stats.skew(np.log1p(known)))) < skew


def label_shares(column: pl.Series, labels: pl.Series, top: int) -> pl.DataFrame:
    """The ``top`` most frequent values of a category: rows per label and the would_watch share,
    most frequent first (ties by value)."""
    name = column.name
    return (
        pl.DataFrame({name: column, "label": labels}).drop_nulls(name)
        .group_by(name).agg(rows=pl.len(), would_watch=pl.col("label").sum())
        .with_columns(would_not_watch=pl.col("rows") - pl.col("would_watch"),
                      share=pl.col("would_watch") / pl.col("rows"))
        .sort(["rows", name], descending=[True, False]).head(top)
    )


def feature_class(name: str) -> str:
    if name in CONTINUOUS:
        return "continuous"
    if name in LISTS:
        return "list-categorical"
    return "categorical" if name in CATEGORICALS else "text"


@dataclass
class Feature:
    """One raw feature's figures, tests and the decision the flowchart reaches."""

    name: str
    kind: str
    figures: dict = field(default_factory=dict)
    tests: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)  # (stage, outcome, rule) in flowchart order
    keep: bool = True
    reason: str = "passed every step"

    def step(self, stage: str, outcome: str, rule: str, drop: bool = False) -> None:
        self.steps.append({"stage": stage, "outcome": outcome, "rule": rule})
        if drop and self.keep:
            self.keep, self.reason = False, f"{stage}: {outcome} ({rule})"


def values(rows: pl.DataFrame, name: str, zero_as_unknown: list[str]) -> pl.Series:
    """A feature as analysed: continuous as Float64 with 0 read as unknown where prep does;
    a list as its primary (first) value; NULL and empty lists as null."""
    column = rows.get_column(name)
    if name in CONTINUOUS:
        column = column.cast(pl.Float64)
        return column.set(column == 0, None) if name in zero_as_unknown else column
    if name in LISTS:
        return column.list.drop_nulls().list.first().alias(name)
    return column.replace("", None) if name in TEXTS else column


def categories(column: pl.Series, min_count: int) -> pl.Series:
    """Values held by at least ``min_count`` rows; rarer ones as one "other", null as "missing"."""
    counts = column.drop_nulls().value_counts()
    frequent = counts.filter(pl.col("count") >= min_count).get_column(column.name)
    return (
        pl.select(pl.when(column.is_null()).then(pl.lit(MISSING))
                  .when(column.is_in(frequent.implode())).then(column)
                  .otherwise(pl.lit(OTHER)).alias(column.name))
        .to_series()
    )


def cramers_v(a: pl.Series, b: pl.Series) -> tuple[float, float, float]:
    """Cramér's V, chi-squared and its p-value for two categorical series."""
    table = pl.DataFrame({"a": a, "b": b}).pivot(on="b", index="a", values="b", aggregate_function="len")
    counts = table.drop("a").fill_null(0).to_numpy()
    if min(counts.shape) < 2:
        return 0.0, 0.0, 1.0
    chi2, p, _, _ = stats.chi2_contingency(counts)
    return float(association(counts, method="cramer")), float(chi2), float(p)


def anova(groups_of: pl.Series, measure: pl.Series) -> tuple[float, float]:
    """One-way ANOVA F of ``measure`` across the groups of ``groups_of`` (nulls left out)."""
    frame = pl.DataFrame({"g": groups_of, "y": measure}).drop_nulls()
    groups = [g.get_column("y").to_numpy() for _, g in frame.group_by("g", maintain_order=True) if g.height > 1]
    if len(groups) < 2:
        return 0.0, 1.0
    result = stats.f_oneway(*groups)
    return (0.0, 1.0) if np.isnan(result.statistic) else (float(result.statistic), float(result.pvalue))


def _round(value: float) -> float | None:
    """Stable figures for JSON; a test that could not run (NaN) is null."""
    return None if np.isnan(value) else round(float(value), 6)


def quality(feature: Feature, column: pl.Series, labels: pl.Series, settings: AnalysisParams, dtype: str) -> None:
    """Nulls (and whether they mean something), distinct counts, the dtype and its cast."""
    rows = column.len()
    null_share = column.null_count() / rows if rows else 0.0
    distinct = column.drop_nulls().n_unique()
    feature.figures.update(null_count=column.null_count(), null_share=_round(null_share), distinct=distinct,
                           distinct_share=_round(distinct / rows if rows else 0), dtype=dtype)
    # Nulls "mean something" when whether a value is missing tells the label apart.
    v, chi2, p = cramers_v(column.is_null(), labels) if column.null_count() else (0.0, 0.0, 1.0)
    feature.tests["missingness_vs_label"] = {"cramers_v": _round(v), "chi2": _round(chi2), "p": _round(p)}
    meaningful = p < settings.target_chi2_p
    level = "none" if null_share == 0 else "high" if null_share > settings.null_high else "low"
    rule = f"null share {null_share:.3f} vs analysis.null_high {settings.null_high}; missingness vs label chi2 p {p:.3g}"
    if level == "none":
        feature.step("null analysis", "no nulls: keep", rule)
    elif meaningful:
        feature.step("null analysis", f"{level} nulls, and they are meaningful: keep", rule)
    elif level == "high":
        feature.step("null analysis", "high nulls that say nothing of the label: drop", rule, drop=True)
    else:
        feature.step("null analysis", "low nulls that say nothing of the label: consider dropping rows", rule)

    high = distinct / rows > settings.distinct_high if rows else False
    low = distinct <= settings.distinct_low
    should_be_high = feature.kind in ("continuous", "text")
    rule = f"{distinct} distinct of {rows} rows; high above analysis.distinct_high {settings.distinct_high}, low at most analysis.distinct_low {settings.distinct_low}"
    if low:
        feature.step("distinct analysis", "too few distinct values to tell rows apart: drop", rule, drop=True)
    elif high and not should_be_high:
        feature.step("distinct analysis", f"high distinct count, not expected for a {feature.kind} feature: drop", rule, drop=True)
    else:
        feature.step("distinct analysis", "distinct count as expected: keep", rule)


def statistics(feature: Feature, column: pl.Series, settings: AnalysisParams, min_count: int) -> None:
    """Normality and sense (continuous), category usefulness, text length and distinctness."""
    if feature.kind == "continuous":
        known = column.drop_nulls().to_numpy()
        statistic, p = stats.normaltest(known) if known.size >= 20 else (float("nan"), float("nan"))
        feature.tests["normality_dagostino_pearson"] = {"statistic": _round(statistic), "p": _round(p)}
        feature.figures.update(min=_round(known.min()) if known.size else None,
                               max=_round(known.max()) if known.size else None,
                               median=_round(np.median(known)) if known.size else None,
                               skew=_round(stats.skew(known)) if known.size > 2 and known.std() > 0 else None)
        low, high = VALID_RANGE.get(feature.name, (0, float("inf")))
        sensible = bool(known.size) and known.min() >= low and known.max() <= high
        normal = bool(p >= settings.normality_p)  # False when the test could not run
        rule = f"D'Agostino-Pearson p {p:.3g} vs analysis.normality_p {settings.normality_p}; valid range {low}..{high}"
        if normal:
            feature.step("statistical analysis", "generally normal: keep", rule)
        elif sensible:
            feature.step("statistical analysis", "not normal, but the distribution makes sense (trees need no normality): keep", rule)
        else:
            feature.step("statistical analysis", "values outside the field's valid range: drop", rule, drop=True)
        return
    if feature.kind == "text":
        lengths = column.drop_nulls().str.len_chars()
        median = float(lengths.median()) if lengths.len() else 0.0
        distinct_share = feature.figures["distinct_share"]
        feature.figures.update(median_chars=median)
        short = median <= settings.text_short_chars
        few = distinct_share <= settings.distinct_high
        rule = (f"median {median:.0f} chars vs analysis.text_short_chars {settings.text_short_chars}; "
                f"distinct share {distinct_share:.3f} vs analysis.distinct_high {settings.distinct_high}")
        if not (short or few):
            feature.figures.update(text_branch=True)
            feature.step("statistical analysis", "long, many distinct values: a text for the text branch", rule)
            return
        feature.step("statistical analysis", "short or few distinct values: consider converting to categorical", rule)
    grouped = categories(column, min_count)
    useful = grouped.filter(~grouped.is_in([OTHER, MISSING])).n_unique()
    feature.figures.update(categories_with_min_count=useful)
    rule = f"{useful} categories hold at least prep.min_count={min_count} rows; at least 2 are needed"
    if useful >= 2:
        feature.step("statistical analysis", "the categories are useful: keep", rule)
    else:
        feature.step("statistical analysis", "the categories are not useful: drop", rule, drop=True)


def text_signal(column: pl.Series, labels: pl.Series) -> np.ndarray:
    """Out-of-fold scores (5 folds) of a logistic regression on the text's TF-IDF: the text branch's
    encoder, and a model that can use any word."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline

    texts, y = np.array(column.fill_null("").to_list(), dtype=object), labels.to_numpy()
    model = make_pipeline(features.tfidf(), LogisticRegression(class_weight="balanced", max_iter=5000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    return cross_val_predict(model, texts, y, cv=folds, method="predict_proba")[:, 1]


def text_target_test(feature: Feature, column: pl.Series, labels: pl.Series, settings: AnalysisParams) -> None:
    """A long text's association with the label: do its out-of-fold scores rank would_watch above the
    rest (one-sided Mann-Whitney U), and by how much AP beats the positive share (a blind ranking's AP)."""
    scores, y = text_signal(column, labels), labels.to_numpy()
    ap, share = float(average_precision_score(y, scores)), float(y.mean())
    _, p = stats.mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater")
    feature.tests.update(target_text_cv={"ap": _round(ap), "positive_share": _round(share), "mann_whitney_p": _round(p)})
    rule = (f"5-fold CV of a TF-IDF logistic regression on this text alone: AP {ap:.3f} vs positive share {share:.3f}; "
            f"Mann-Whitney p {p:.3g} vs analysis.text_max_p {settings.text_max_p}")
    keep = bool(p < settings.text_max_p)
    feature.step("target analysis",
                 "the text ranks would_watch higher: keep for the text branch (prep.text_columns)" if keep
                 else "the text says little of the label: drop", rule, drop=not keep)


def target_tests(feature: Feature, column: pl.Series, labels: pl.Series, settings: AnalysisParams, min_count: int) -> None:
    """Association with the label, by the tests of the flowchart for the feature's class."""
    if feature.kind == "continuous":
        frame = pl.DataFrame({"x": column, "y": labels}).drop_nulls()
        x, y = frame.get_column("x").to_numpy(), frame.get_column("y").to_numpy()
        r, r_p = stats.pointbiserialr(y, x) if x.size > 2 and x.std() > 0 else (0.0, 1.0)
        rho, rho_p = stats.spearmanr(x, y) if x.size > 2 and x.std() > 0 else (0.0, 1.0)
        f, f_p = anova(labels, column)
        feature.tests.update(target_point_biserial={"r": _round(r), "p": _round(r_p)},
                             target_spearman={"rho": _round(rho), "p": _round(rho_p)},
                             target_anova={"f": _round(f), "p": _round(f_p)})
        verdicts = {f"|r| {abs(r):.3f} >= analysis.target_r {settings.target_r}": abs(r) >= settings.target_r,
                    f"|rho| {abs(rho):.3f} >= analysis.target_r {settings.target_r}": abs(rho) >= settings.target_r,
                    f"F {f:.1f} >= analysis.target_anova_f {settings.target_anova_f}": f >= settings.target_anova_f}
    else:
        grouped = categories(column, min_count)
        v, chi2, p = cramers_v(grouped, labels)
        f, f_p = anova(grouped, labels.cast(pl.Float64))
        feature.tests.update(target_cramers_v={"v": _round(v)}, target_chi2={"chi2": _round(chi2), "p": _round(p)},
                             target_anova={"f": _round(f), "p": _round(f_p)})
        verdicts = {f"V {v:.3f} >= analysis.target_cramers_v {settings.target_cramers_v}": v >= settings.target_cramers_v,
                    f"chi2 p {p:.3g} < analysis.target_chi2_p {settings.target_chi2_p}": p < settings.target_chi2_p,
                    f"F {f:.1f} >= analysis.target_anova_f {settings.target_anova_f}": f >= settings.target_anova_f}
    passed = [rule for rule, ok in verdicts.items() if ok]
    keep = bool(passed) if settings.target_rule == "any" else len(passed) == len(verdicts)
    rule = "; ".join(f"{rule}: {'yes' if ok else 'no'}" for rule, ok in verdicts.items()) + f" (analysis.target_rule {settings.target_rule})"
    feature.step("target analysis", "associated with the label: keep" if keep else "not associated with the label: drop",
                 rule, drop=not keep)


def correlations(rows: pl.DataFrame, names: list[str], method: str) -> pl.DataFrame:
    """Pairwise-complete Pearson or Spearman r between continuous features."""
    matrix = rows.select(names).to_pandas().corr(method=method, min_periods=20).fillna(0.0).round(6)
    return pl.from_pandas(matrix.reset_index(names="feature"))


def analyse(rows: pl.DataFrame, settings: AnalysisParams, zero_as_unknown: list[str], min_count: int,
            dtypes: dict[str, str]) -> tuple[list[Feature], dict]:
    """Walk the flowchart for every raw feature of the training rows."""
    labels = rows.get_column(LABEL)
    names = [*CONTINUOUS, *LISTS, *CATEGORICALS, *TEXTS]
    columns = {name: values(rows, name, zero_as_unknown) for name in names}
    found = {name: Feature(name, feature_class(name)) for name in names}
    for name, feature in found.items():
        quality(feature, columns[name], labels, settings, dtypes[name])
        statistics(feature, columns[name], settings, min_count)

    continuous = pl.DataFrame({n: columns[n] for n in CONTINUOUS})
    pearson = correlations(continuous, list(CONTINUOUS), "pearson")
    spearman = correlations(continuous, list(CONTINUOUS), "spearman")
    categorical = [n for n in (*LISTS, *CATEGORICALS)]
    grouped = {n: categories(columns[n], min_count) for n in categorical}
    cramer = {a: {b: cramers_v(grouped[a], grouped[b]) for b in categorical} for a in categorical}
    f_between = {c: {k: anova(grouped[k], columns[c]) for k in categorical} for c in CONTINUOUS}
    # text the statistics step converted to categorical goes on as a categorical; long text is measured
    texts = [n for n in TEXTS if found[n].keep and found[n].figures.get("text_branch")]
    converted = [n for n in TEXTS if found[n].keep and n not in texts]
    for name in (*CONTINUOUS, *categorical, *converted):
        target_tests(found[name], columns[name], labels, settings, min_count)
    for name in texts:
        text_target_test(found[name], columns[name], labels, settings)

    def strength(name: str) -> float:
        tests = found[name].tests
        return abs(tests["target_point_biserial"]["r"]) if name in CONTINUOUS else tests["target_cramers_v"]["v"]

    # Of two features that say the same thing, keep the one nearer the label.
    for i, a in enumerate(CONTINUOUS):
        for b in CONTINUOUS[i + 1:]:
            r = pearson.filter(pl.col("feature") == a).item(0, b)
            rho = spearman.filter(pl.col("feature") == a).item(0, b)
            if max(abs(r), abs(rho)) > settings.inter_r:
                weaker = min((a, b), key=lambda n: (strength(n), n))
                other = b if weaker == a else a
                found[weaker].step("inter-feature analysis", f"correlated with {other}: drop the weaker of the two",
                                   f"Pearson r {r:.3f}, Spearman rho {rho:.3f} vs analysis.inter_r {settings.inter_r}", drop=True)
    for i, a in enumerate(categorical):
        for b in categorical[i + 1:]:
            v, _, p = cramer[a][b]
            if v > settings.inter_cramers_v:
                weaker = min((a, b), key=lambda n: (strength(n), n))
                other = b if weaker == a else a
                found[weaker].step("inter-feature analysis", f"associated with {other}: drop the weaker of the two",
                                   f"Cramér's V {v:.3f} vs analysis.inter_cramers_v {settings.inter_cramers_v} (chi2 p {p:.3g})", drop=True)

    inter = {
        "pearson": pearson.to_dicts(),
        "spearman": spearman.to_dicts(),
        "cramers_v": {a: {b: {"v": _round(v), "chi2": _round(c), "p": _round(p)} for b, (v, c, p) in row.items()}
                      for a, row in cramer.items()},
        "anova_f": {c: {k: {"f": _round(f), "p": _round(p)} for k, (f, p) in row.items()} for c, row in f_between.items()},
    }
    return list(found.values()), inter


def encoded_columns(name: str, spec: features.FeatureSpec) -> list[str]:
    """The model columns a raw feature becomes in prep's build (none for text or unencoded lists)."""
    if name in CONTINUOUS:
        return [f"{name}{features.NORM_SUFFIX}"]
    if name in spec.lists:
        return list(spec.lists[name].columns)
    if spec.text and name in spec.text.sources:
        return list(spec.text.columns)  # the joined texts' columns: kept while either text is
    return [name] if name in spec.categoricals else []


def selection(found: list[Feature], spec: features.FeatureSpec, apply: bool) -> dict:
    """models/selection.json: the model columns train uses, and each raw feature's fate."""
    dropped = {f.name for f in found if not f.keep} if apply else set()
    columns = list(dict.fromkeys(c for f in found if f.name not in dropped for c in encoded_columns(f.name, spec)))
    order = {c: i for i, c in enumerate(spec.columns)}
    return {
        "applied": apply,
        "columns": sorted(columns, key=order.__getitem__),
        "kept": {f.name: (f.reason if apply else "analysis.apply_selection is false") for f in found if f.name not in dropped},
        "dropped": {f.name: f.reason for f in found if f.name in dropped},
    }
