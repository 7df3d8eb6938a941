"""The feature analysis report's plots (PNG): each feature against the label.

Heavy-tailed continuous features (``analysis.heavy_tailed``: votes, budget, revenue on
this data) are drawn on a log(1 + x) axis labelled in their own units; categories show
rows per label and the would_watch share of each, beside the overall share.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from reel_driver.selection import analysis  # noqa: E402

TOP_CATEGORIES = 25
LABELS = ("would_not_watch", "would_watch")
COLOURS = ("#8DA0CB", "#D55E00")  # would_not_watch muted, would_watch the one to look for
# PNG metadata carries no date; naming the software keeps the bytes the same run to run.
PNG_METADATA = {"Software": "reel-driver"}


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=80, metadata=PNG_METADATA)
    plt.close(figure)


def _by_label(column: pl.Series, labels: pl.Series) -> list[np.ndarray]:
    """The known values of each label, would_not_watch first (an array may be empty)."""
    frame = pl.DataFrame({"x": column, "y": labels}).drop_nulls()
    return [frame.filter(pl.col("y") == label).get_column("x").to_numpy().astype(float) for label in (0, 1)]


def _units(value: float) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _log_ticks(axes: plt.Axes, which: str, top: float) -> None:
    """Ticks of a log10(1 + x) axis ("x" or "y") at 0 and the powers of ten, labelled in the
    feature's units; the view stays on the data (ticks alone would stretch it to all of them)."""
    get_limits, set_limits, set_ticks = (getattr(axes, f"{verb}{which}{noun}")
                                         for verb, noun in (("get_", "lim"), ("set_", "lim"), ("set_", "ticks")))
    limits = get_limits()
    values = [0.0] + [10.0 ** k for k in range(1, int(np.ceil(np.log10(1 + top))) + 1)]
    set_ticks(np.log10(1 + np.array(values)), [_units(v) for v in values])
    set_limits(limits)


def _violins(axis: plt.Axes, groups: list[np.ndarray], log: bool) -> None:
    present = [(i, g) for i, g in enumerate(groups) if g.size]
    if not present:
        return
    # the density is estimated where it is drawn: on the log axis, of log10(1 + x)
    bodies = axis.violinplot([np.log10(1 + g) if log else g for _, g in present], showmedians=True)
    for body, (i, _) in zip(bodies["bodies"], present):
        body.set_facecolor(COLOURS[i])
        body.set_alpha(0.7)
    axis.set_xticks(range(1, len(present) + 1), [f"{LABELS[i]}\n({g.size} rows)" for i, g in present])
    if log:
        _log_ticks(axis, "y", max(g.max() for _, g in present))


def continuous(name: str, column: pl.Series, labels: pl.Series) -> dict[str, plt.Figure]:
    groups = _by_label(column, labels)
    known = np.concatenate(groups)
    log = analysis.heavy_tailed(known)
    scale = " (log scale)" if log else ""
    histogram, axis = plt.subplots(figsize=(6, 3.5))
    if known.size:
        drawn = [np.log10(1 + g) if log else g for g in groups]
        bins = np.histogram_bin_edges(np.concatenate(drawn), bins=40)
        axis.hist(drawn, bins=bins, stacked=True, color=COLOURS, label=LABELS)
        axis.legend(fontsize=8)
        if log:
            _log_ticks(axis, "x", known.max())
    axis.set(title=f"{name}: histogram by label (known values){scale}", xlabel=f"{name}{scale}", ylabel="rows")
    violin, axis = plt.subplots(figsize=(6, 3.5))
    _violins(axis, groups, log)
    axis.set(title=f"{name} by label{scale}", ylabel=f"{name}{scale}")
    return {f"{name}_histogram.png": histogram, f"{name}_violin.png": violin}


def text(name: str, column: pl.Series, labels: pl.Series) -> dict[str, plt.Figure]:
    groups = _by_label(column.str.len_chars(), labels)
    lengths, axis = plt.subplots(figsize=(6, 3.5))
    _violins(axis, groups, analysis.heavy_tailed(np.concatenate(groups)))
    axis.set(title=f"{name}: characters by label", ylabel="characters")
    shared = column.drop_nulls().value_counts(name="rows").get_column("rows")
    repeats = shared.value_counts(name="values").sort("rows").head(TOP_CATEGORIES)
    distinct, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar(range(repeats.height), repeats.get_column("values").to_list(), color="#86CA95")
    axis.set_xticks(range(repeats.height), [str(v) for v in repeats.get_column("rows")])
    axis.set(title=f"{name}: how often a value repeats", xlabel="rows sharing a value", ylabel="distinct values")
    return {f"{name}_length_violin.png": lengths, f"{name}_distinct_bar.png": distinct}


def categorical(name: str, kind: str, column: pl.Series, labels: pl.Series) -> dict[str, plt.Figure]:
    shares = analysis.label_shares(column, labels, TOP_CATEGORIES).reverse()  # most frequent on top
    base = float(labels.mean()) if labels.len() else 0.0
    values = [str(v) for v in shares.get_column(name)]
    figure, (counts, share) = plt.subplots(1, 2, figsize=(9, 0.8 + 0.24 * max(shares.height, 4)), sharey=True,
                                           gridspec_kw={"width_ratios": [3, 2]})
    positions = range(shares.height)
    left = shares.get_column("would_not_watch").to_list()
    counts.barh(positions, left, color=COLOURS[0], label=LABELS[0])
    counts.barh(positions, shares.get_column("would_watch").to_list(), left=left, color=COLOURS[1], label=LABELS[1])
    counts.set_yticks(positions, values)
    counts.set(xlabel="rows")
    counts.legend(fontsize=8, loc="lower right")
    share.barh(positions, shares.get_column("share").to_list(), color=COLOURS[1])
    share.axvline(base, color="black", linestyle="--", linewidth=1)
    for y, (value, rows) in enumerate(zip(shares.get_column("share"), shares.get_column("rows"))):
        share.text(value, y, f" {value:.0%} of {rows}", va="center", fontsize=7,
                   bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
    share.set(xlabel=f"would_watch share (dashed: all rows, {base:.0%})",
              xlim=(0, min(1.0, max([base, *shares.get_column("share")]) * 1.4 + 0.02)))
    share.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    title = "primary value" if kind == "list-categorical" else "category"
    figure.suptitle(f"{name}: rows and would_watch share per {title} (top {TOP_CATEGORIES} by rows)", fontsize=11)
    return {f"{name}_bar.png": figure}


def figures(found: analysis.Feature, column: pl.Series, labels: pl.Series) -> dict[str, plt.Figure]:
    """The flowchart's plots for one feature, by file name."""
    if found.kind == "continuous":
        return continuous(found.name, column, labels)
    if found.kind == "text":
        return text(found.name, column, labels)
    return categorical(found.name, found.kind, column, labels)


def feature(found: analysis.Feature, column: pl.Series, labels: pl.Series, folder: Path) -> list[str]:
    """Write the feature's plots into ``folder``; returns their file names."""
    drawn = figures(found, column, labels)
    for name, figure in drawn.items():
        _save(figure, folder / name)
    return list(drawn)


def matrix(values: pl.DataFrame, title: str, path: Path) -> None:
    names = values.get_column("feature").to_list()
    grid = values.drop("feature").to_numpy()
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(grid, vmin=-1, vmax=1, cmap="coolwarm")
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axis.set_yticks(range(len(names)), names)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    figure.colorbar(image)
    axis.set_title(title)
    _save(figure, path)
