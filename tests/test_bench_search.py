"""bench/search.py runs end to end and prints both searches' figures (a short reference)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_search_benchmark_compares_the_project_with_the_reference() -> None:
    result = subprocess.run(
        [sys.executable, "bench/search.py", "--sample", "--trials", "3", "--repeat"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout
    # each target has its verdict line; any FAIL is also the exit code and the last line (3 trials
    # are too few for a fair reference: which targets hold here does not matter, that they count does)
    verdicts = re.findall(r"^  (pass|FAIL)  (.+)$", output, flags=re.MULTILINE)
    assert len(verdicts) == 4, output
    failed = [name for state, name in verdicts if state == "FAIL"]
    assert result.returncode == (1 if failed else 0), result.stderr[-2000:]
    if failed:
        assert result.stderr.strip().splitlines()[-1] == "missed targets: " + "; ".join(
            f"split.seed 42:  {name}" for name in failed)
    assert "split.seed 42, the synthetic sample" in output
    figures = {name: re.search(rf"{name}\s+([\d.]+) s\s+CV ([\d.]+)\s+hold-out F2 ([\d.]+) AP ([\d.]+)", output)
               for name in ("project", "reference")}
    for name, found in figures.items():
        assert found, f"no {name} line in:\n{output}"
        seconds, cv, f2, ap = map(float, found.groups())
        assert seconds > 0 and 0 < cv <= 1 and 0 < f2 <= 1 and 0 < ap <= 1
    assert re.search(r"ratio\s+[\d.]+", output)
    floor = re.search(r"floor\s+([\d.]+) s = ([\d.]+) x reference", output)
    assert floor and 0 < float(floor.group(1)) and 0 < float(floor.group(2))
    assert "best params and model bytes identical" in output
