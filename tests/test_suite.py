"""The suite itself: isolated from the user's environment before any fixture of any scope runs."""

import os

import pytest

from tests.conftest import ISOLATED, REPO

pytest_plugins = ["pytester"]

# a module fixture (as a bench run or a pipeline is) and the subprocess it starts, in an inner run
# that has this suite's conftest
INNER = '''
import os, subprocess, sys
import pytest

@pytest.fixture(scope="module")
def seen():
    child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.environ))"], capture_output=True,
                           text=True, check=True).stdout
    return {name for name in VARIABLES if name in os.environ or repr(name) in child}

def test_a_module_fixture_and_its_subprocess_see_none_of_the_users_variables(seen):
    assert seen == set()
'''


def test_the_users_database_and_mlflow_server_never_reach_a_fixture(pytester: pytest.Pytester,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_inner=f"VARIABLES = {list(ISOLATED)!r}\n" + INNER)
    # the owner's shell: a database and a tracking server named, neither reachable here
    for name in ISOLATED:
        monkeypatch.setenv(name, "/nowhere" if name.startswith("PG") else "http://127.0.0.1:9")
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "-q",
                                           timeout=120)
    result.assert_outcomes(passed=1)
    assert all(os.environ[name] for name in ISOLATED)  # the inner run started with the owner's environment
