"""Whether dvc.lock is current: the committed run against the workspace's code, params and
git-tracked outputs (metrics, plot data).

DVC answers it without the data, so a clone with no database and nothing pulled can tell
whether the metrics it is about to compare come from the code and params beside them. The
review refuses a stale lock; a test holds the repository's own lock to it.
"""

from reel_driver.config.errors import PipelineError

# `dvc status` for a cached output (or a dependency on one) that this clone does not hold: the
# data lives in another cache or a remote, which says nothing about the lock
_ABSENT = frozenset({"deleted", "not in cache"})
# extract's: a database cannot be hashed, so DVC calls that stage changed every time
_ALWAYS_CHANGED = "always changed"


def _describe(path: str, state: str | dict) -> list[str]:
    if isinstance(state, dict):  # a params file: {section or key: "modified" | "new" | "deleted"}
        return [f"{path} {key} {change}" for key, change in state.items()]
    return [f"{path} {state}"]


def stale(status: dict, recorded_data: dict[str, set[str]]) -> list[str]:
    """What differs from dvc.lock, as "stage: path change, ..." per stage; empty when it is current.

    ``status`` is DVC's status (what `dvc status --json` prints); ``recorded_data``, per stage, the
    paths of DVC-cached data that its dvc.lock entry records a hash for. Those may be absent here
    (not pulled); anything git tracks, or data the lock does not record, may not.
    """
    found = []
    for stage, changes in status.items():
        absent_ok = recorded_data.get(stage, set())
        differences = []
        for change in changes:
            if change == _ALWAYS_CHANGED:
                continue
            if isinstance(change, str):  # "changed command", a stage new to dvc.yaml, ...
                differences.append(change)
                continue
            for files in change.values():  # "changed deps", "changed outs"
                differences += [
                    line for path, state in files.items()
                    if not (path in absent_ok and state in _ABSENT) for line in _describe(path, state)
                ]
        if differences:
            found.append(f"{stage}: {', '.join(differences)}")
    return found


def check() -> None:
    """Raise one line naming what differs when dvc.lock is stale (in the current directory)."""
    from dvc.repo import Repo  # DVC's import costs a second; only the review needs it

    with Repo() as repo:
        status = repo.status()
        cached = {out.def_path for out in repo.index.outs if out.use_cache}
        recorded_data = {
            stage.name: {entry.def_path for entry in (*stage.deps, *stage.outs)
                         if entry.def_path in cached and entry.hash_info}
            for stage in repo.index.stages
        }
    differences = stale(status, recorded_data)
    if differences:
        raise PipelineError(
            f"dvc.lock does not match the workspace, so its metrics are not this code's and params' "
            f"({'; '.join(differences)}): run the pipeline again (`dvc repro`, with the database for a "
            "real-data run) and commit dvc.lock and metrics/"
        )
