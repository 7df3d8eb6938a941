"""analyze: the feature analysis of seed 001 on training rows only -> metrics/analysis.json,
a report with its plots (reports/analysis/), and models/selection.json for train."""

import logging
import shutil

import polars as pl

from reel_driver.config import params, paths
from reel_driver.config.errors import run_stage
from reel_driver.data import schema
from reel_driver.data.outputs import write_json, write_text
from reel_driver.preparation import features
from reel_driver.selection import analysis, analysis_plots, report

log = logging.getLogger("reel_driver.analyze")


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
    plots = {f.name: analysis_plots.feature(f, analysis.values(rows, f.name, settings.prep.zero_as_unknown), labels, folder)
             for f in found}
    analysis_plots.matrix(pl.DataFrame(inter["pearson"]), "Pearson r, continuous features", folder / "pearson.png")
    analysis_plots.matrix(pl.DataFrame(inter["spearman"]), "Spearman rho, continuous features", folder / "spearman.png")
    write_text(report.markdown(found, plots, chosen, settings.analysis), paths.ANALYSIS_REPORT / "report.md")
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
