"""analyze: the feature analysis of seed 001 on training rows only -> metrics/analysis.json,
a report with its plots (reports/analysis/), and models/selection.json for train."""

import logging
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from stages import analysis, features, params, paths, schema  # noqa: E402
from stages.errors import run_stage  # noqa: E402
from stages.outputs import write_json, write_text  # noqa: E402

log = logging.getLogger("reel_driver.analyze")

TOP_CATEGORIES = 25
# PNG metadata carries no date; naming the software keeps the bytes the same run to run.
PNG_METADATA = {"Software": "reel-driver"}


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=80, metadata=PNG_METADATA)
    plt.close(figure)


def _by_label(column: pl.Series, labels: pl.Series) -> tuple[list, list[str]]:
    frame = pl.DataFrame({"x": column, "y": labels}).drop_nulls()
    groups = [frame.filter(pl.col("y") == label).get_column("x").to_numpy() for label in (0, 1)]
    keep = [i for i, g in enumerate(groups) if g.size]
    return [groups[i] for i in keep], [("would_not_watch", "would_watch")[i] for i in keep]


def plot_feature(feature: analysis.Feature, column: pl.Series, labels: pl.Series, folder: Path) -> list[str]:
    """The flowchart's plots for one feature; returns their file names."""
    names = []
    if feature.kind == "continuous":
        figure, axis = plt.subplots(figsize=(6, 3.5))
        axis.hist(column.drop_nulls().to_numpy(), bins=40, color="#FF9973")
        axis.set(title=f"{feature.name}: histogram (known values)", xlabel=feature.name, ylabel="rows")
        names.append(f"{feature.name}_histogram.png")
        _save(figure, folder / names[-1])
        groups, labels_ = _by_label(column, labels)
        figure, axis = plt.subplots(figsize=(6, 3.5))
        if groups:
            axis.violinplot(groups, showmedians=True)
            axis.set_xticks(range(1, len(groups) + 1), labels_)
        axis.set(title=f"{feature.name} by label", ylabel=feature.name)
        names.append(f"{feature.name}_violin.png")
        _save(figure, folder / names[-1])
        return names
    if feature.kind == "text":
        lengths = column.str.len_chars()
        groups, labels_ = _by_label(lengths, labels)
        figure, axis = plt.subplots(figsize=(6, 3.5))
        if groups:
            axis.violinplot(groups, showmedians=True)
            axis.set_xticks(range(1, len(groups) + 1), labels_)
        axis.set(title=f"{feature.name}: characters by label", ylabel="characters")
        names.append(f"{feature.name}_length_violin.png")
        _save(figure, folder / names[-1])
        shared = column.drop_nulls().value_counts(name="rows").get_column("rows")
        repeats = shared.value_counts(name="values").sort("rows").head(TOP_CATEGORIES)
        figure, axis = plt.subplots(figsize=(6, 3.5))
        axis.bar(range(repeats.height), repeats.get_column("values").to_list(), color="#86CA95")
        axis.set_xticks(range(repeats.height), [str(v) for v in repeats.get_column("rows")])
        axis.set(title=f"{feature.name}: how often a value repeats", xlabel="rows sharing a value", ylabel="distinct values")
        names.append(f"{feature.name}_distinct_bar.png")
        _save(figure, folder / names[-1])
        return names
    counts = column.drop_nulls().value_counts().sort(["count", feature.name], descending=[True, False]).head(TOP_CATEGORIES)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.barh(range(counts.height), counts.get_column("count").to_list()[::-1], color="#E898AC")
    axis.set_yticks(range(counts.height), [str(v) for v in counts.get_column(feature.name)][::-1])
    title = "primary value" if feature.kind == "list-categorical" else "category"
    axis.set(title=f"{feature.name}: rows per {title} (top {TOP_CATEGORIES})", xlabel="rows")
    names.append(f"{feature.name}_bar.png")
    _save(figure, folder / names[-1])
    return names


def plot_matrix(matrix: pl.DataFrame, title: str, path: Path) -> None:
    names = matrix.get_column("feature").to_list()
    values = matrix.drop("feature").to_numpy()
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(values, vmin=-1, vmax=1, cmap="coolwarm")
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axis.set_yticks(range(len(names)), names)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    figure.colorbar(image)
    axis.set_title(title)
    _save(figure, path)


def report(found: list[analysis.Feature], plots: dict[str, list[str]], chosen: dict, settings: params.AnalysisParams) -> str:
    """Markdown that walks the flowchart feature by feature."""
    would_drop = [f for f in found if not f.keep]
    lines = [
        "# Feature analysis (training rows only)",
        "",
        "The flowcharts of seed 001, feature by feature: data quality, statistics, inter-feature and target",
        "tests. Thresholds come from `analysis.*` in params.yaml. Figures and every test's statistic are in",
        "`metrics/analysis.json`.",
        "",
        f"**The flowchart would drop {len(would_drop)} of {len(found)} features:** "
        + (", ".join(f"`{f.name}`" for f in would_drop) or "none") + ".",
        "",
        f"`analysis.apply_selection` is **{str(settings.apply_selection).lower()}**: train uses "
        f"{len(chosen['columns'])} model columns"
        + (" chosen by this analysis." if chosen["applied"] else ", all of prep's, and ignores these drops."),
        "The flowchart's target thresholds (|r| 0.3, Cramér's V 0.3) were drawn for strong, linear signals;",
        "against a binary target with one positive in ten, most single features stay below them although",
        "the trees use them well in combination (see the measurement in the README). That is why the default",
        "does not apply the selection; set `analysis.apply_selection: true` to train on it.",
        "",
        "Two rules of the flowchart are reported but drop nothing: a chi-squared p above 0.05 between two",
        "categorical features, and an ANOVA F below 10 between a continuous and a categorical feature, mean",
        "the two are *independent*, which is no reason to drop either. Redundancy (Pearson/Spearman |r| above",
        f"{settings.inter_r}, Cramér's V above {settings.inter_cramers_v}) drops the member of the pair that is weaker against the label.",
        "",
        "List features (genre, languages, countries, companies) are tested by their first value; values held",
        "by fewer than `prep.min_count` rows are grouped as one \"(other)\".",
        "",
        "![Pearson r](plots/pearson.png) ![Spearman rho](plots/spearman.png)",
        "",
    ]
    for feature in found:
        verdict = "keep" if feature.keep else f"drop — {feature.reason}"
        lines += [f"## {feature.name} ({feature.kind}): {verdict}", ""]
        figures = ", ".join(f"{k} {v}" for k, v in feature.figures.items())
        lines += [f"- figures: {figures}"]
        lines += [f"- {step['stage']}: {step['outcome']} — {step['rule']}" for step in feature.steps]
        lines += [""] + [f"![{name}](plots/{name})" for name in plots[feature.name]] + [""]
    return "\n".join(lines)


def main() -> None:
    settings = params.load()
    rows = pl.read_parquet(paths.PREPARED_TRAIN_RAW)
    spec = features.FeatureSpec.load(paths.FEATURES, paths.NORMALIZATION)
    dtypes = {name: f"{schema.PRODUCTION_TYPES[name]} in PostgreSQL -> {rows.schema[name]}" for name in rows.columns
              if name in schema.PRODUCTION_TYPES}

    found, inter = analysis.analyse(rows, settings.analysis, settings.prep.zero_as_unknown, settings.prep.min_count, dtypes)
    chosen = analysis.selection(found, spec, settings.analysis.apply_selection)

    # the report folder is one DVC output: rebuilt whole, so no stale plot survives
    folder = paths.ANALYSIS_REPORT / "plots"
    shutil.rmtree(paths.ANALYSIS_REPORT, ignore_errors=True)
    folder.mkdir(parents=True)
    labels = rows.get_column(analysis.LABEL)
    plots = {f.name: plot_feature(f, analysis.values(rows, f.name, settings.prep.zero_as_unknown), labels, folder)
             for f in found}
    plot_matrix(pl.DataFrame(inter["pearson"]), "Pearson r, continuous features", folder / "pearson.png")
    plot_matrix(pl.DataFrame(inter["spearman"]), "Spearman rho, continuous features", folder / "spearman.png")
    write_text(report(found, plots, chosen, settings.analysis), paths.ANALYSIS_REPORT / "report.md")
    write_json({"rows": rows.height, "features": {f.name: {"class": f.kind, "keep": f.keep, "reason": f.reason,
                                                          "figures": f.figures, "tests": f.tests, "steps": f.steps}
                                                  for f in found},
                "inter_feature": inter}, paths.ANALYSIS_METRICS)
    write_json(chosen, paths.SELECTION)
    log.info("%d training rows; the flowchart keeps %d of %d features; selection %s (%d columns)",
             rows.height, sum(f.keep for f in found), len(found),
             "applied" if chosen["applied"] else "not applied", len(chosen["columns"]))


if __name__ == "__main__":
    run_stage(main)
