"""The analysis report (reports/analysis/report.md): the flowcharts of seed 001, feature by feature."""

from reel_driver.config import params
from reel_driver.selection import analysis


def markdown(found: list[analysis.Feature], plots: dict[str, list[str]], chosen: dict, settings: params.AnalysisParams) -> str:
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
