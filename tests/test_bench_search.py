"""bench/search.py runs end to end: the anytime table, time to quality, the PNG and the verdicts."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^  (project|reference) +(\d+) +([\d.]+) +([\d.]+)$", flags=re.MULTILINE)


@pytest.mark.slow
def test_the_search_benchmark_draws_both_curves_and_fails_on_a_missed_target(tmp_path: Path) -> None:
    plot = tmp_path / "anytime.png"
    result = subprocess.run(
        [sys.executable, "bench/search.py", "--sample", "--sample-rows", "1500", "--split-seeds", "100", "--budgets", "6",
         "--trials", "2", "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["search"]["budget"]
    assert "split.seed 100, the synthetic sample: " in output, result.stderr[-2000:]
    seed, mean = output.split("\nmean over split seeds 100\n")
    # a table row per project budget (the default joins the ones asked for); the reference's first
    # trial (its first best CV) and last; the mean over one split seed is that seed's figures
    rows = ROW.findall(seed)
    assert [(name, int(size)) for name, size, _, _ in rows] == [
        ("project", 6), ("project", default), ("reference", 1), ("reference", 2)], seed
    for _, _, seconds, cv in rows:
        assert float(seconds) > 0 and 0 < float(cv) <= 1
    assert ROW.findall(mean) == [row for row in rows if row[:2] != ("reference", "1")]
    # time to quality: each search against the CV the other ends with; where it gets there, the
    # first of its own rows at or above it
    curves = {name: [(int(size), float(s), float(cv)) for n, size, s, cv in rows if n == name]
              for name in ("project", "reference")}
    lines = re.findall(r"^  time to quality: (\w+) reaches the other's final CV ([\d.]+) \(.+?\): (.+)$",
                       seed, flags=re.MULTILINE)
    assert [name for name, _, _ in lines] == ["project", "reference"], seed
    for (name, target, reached), other in zip(lines, ("reference", "project")):
        assert float(target) == curves[other][-1][2]
        first = next(((size, s) for size, s, cv in curves[name] if cv >= float(target)), None)
        if first is None:
            assert reached.startswith("never within")
        else:
            assert re.match(rf"at (budget|trial) {first[0]}, {first[1]:.2f} s ", reached), reached
    assert len(re.findall(r"^  time to quality: ", mean, flags=re.MULTILINE)) == 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each target has its verdict line; any FAIL is the exit code and the last line (2 trials are too
    # few for a fair reference: which targets hold here does not matter, that they count does)
    verdicts = re.findall(r"^  (pass|FAIL)  (.+)$", output, flags=re.MULTILINE)
    assert len(verdicts) == 4, output
    failed = [name for state, name in verdicts if state == "FAIL"]
    assert result.returncode == (1 if failed else 0), result.stderr[-2000:]
    if failed:
        assert result.stderr.strip().splitlines()[-1] == (
            f"missed targets (mean over split seeds 100, budget {default}): " + "; ".join(failed))
