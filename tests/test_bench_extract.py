"""bench/extract.py at a small size, so that the benchmark cannot rot."""

import importlib.util
import subprocess
import sys

import polars as pl
import pytest

from tests.conftest import REPO

BENCH = REPO / "bench" / "extract.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_extract", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_runs_every_method_and_its_checks_pass() -> None:
    for extra in ("adbc_driver_postgresql", "psycopg2"):
        pytest.importorskip(extra, reason="the dev extra: pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "2000", "--repeat", "2"], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for method in ("project", "adbc", "psycopg2", "copy"):
        assert f"\n{method} " in result.stdout
    assert "check: the 2 project runs give the same parquet bytes: yes" in result.stdout
    assert "check: project output equals what ADBC reads: yes" in result.stdout


def test_sample_rows_have_unique_ids_and_fit_the_production_types() -> None:
    rows = load_bench().sample_rows(250, seed=3)  # a block of 250, all of it
    assert rows.height == 250 and rows.get_column("imdb_id").is_unique().all()
    assert rows.get_column("tmdb_votes").max() < 2**31


def test_array_literal_quotes_elements_and_keeps_nulls() -> None:
    frame = pl.DataFrame({"a": [["x", None, 'say "hi", \\ok'], [], None]})
    literal = frame.select(load_bench()._array_literal("a")).get_column("a").to_list()
    assert literal == ['{"x",NULL,"say \\"hi\\", \\\\ok"}', "{}", None]


def test_content_check_names_the_column_that_differs(tmp_path, atp_db: str) -> None:
    bench = load_bench()
    bench.fill(atp_db, 300, seed=1)
    cwd, command = bench.project_workdir(tmp_path / "project")
    env = {"REEL_DRIVER_PG_DSN": atp_db, "PYTHONPATH": str(REPO), "PATH": ""}
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    adbc = tmp_path / "adbc.parquet"
    pytest.importorskip("adbc_driver_postgresql", reason="the dev extra: pip install -e '.[dev]'")
    bench._adbc(atp_db, adbc)
    ours = cwd / "data" / "raw" / "training.parquet"
    assert bench.content_differences(ours, adbc) == []
    changed = pl.read_parquet(ours).with_columns(pl.col("imdb_rating") + 0.01)
    changed.write_parquet(tmp_path / "changed.parquet")
    (difference,) = bench.content_differences(tmp_path / "changed.parquet", adbc)
    assert difference.startswith("imdb_rating: imdb_id tt")
