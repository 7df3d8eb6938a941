"""`reel-driver promote`: move the registry alias `champion` (what `reel-driver serve`
serves) to a version, when review's gate on hold-out recall passes against the current
champion. The one deliberate step between a training run and the media pipeline."""

import logging
from pathlib import Path

from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError
from reel_driver.model import metrics
from reel_driver.tracking import registry

log = logging.getLogger("reel_driver.promote")


def gate(candidate: registry.Version, current: registry.Version | None, settings: params.ReviewParams) -> str | None:
    """Why ``candidate`` may not replace ``current`` (review.* in params.yaml), or None."""
    if candidate.hold_out is None:
        return (f"version {candidate.version} has no hold-out metrics: evaluate did not record it "
                "(run dvc repro with the MLflow store reachable)")
    old = current.hold_out["recall"] if current and current.hold_out else None
    return metrics.recall_gate(candidate.hold_out["recall"], old, settings.recall_floor,
                               settings.recall_drop_tolerance, f"champion version {current.version}" if current else "")


def promote(version: str | None, forced_because: str | None, model: Path = paths.MODEL,
            ensemble: Path = paths.ENSEMBLE) -> str:
    """Promote ``version`` (default: the newest version of the workspace's model); returns the line to print."""
    settings = params.load().review
    client, where = registry.connect()
    candidate = registry.get(client, version) if version else registry.of_model_file(client, model, ensemble)
    current = registry.champion(client)
    name = f"{registry.REGISTERED_MODEL} version {candidate.version}"
    if current and current.version == candidate.version:
        return f"{name} is already {registry.CHAMPION} ({where})"
    refused = gate(candidate, current, settings)
    if refused and not forced_because:
        raise PipelineError(f"promote refused: {refused}; `reel-driver promote {candidate.version} --force REASON` "
                            "promotes anyway")
    if candidate.hold_out is None:  # even --force: the server needs the version's threshold
        raise PipelineError(f"promote refused: {refused}")
    registry.promote(client, candidate, forced_because if refused else None)
    recall = candidate.hold_out["recall"]
    was = (f"was version {current.version}, hold-out recall {current.hold_out['recall']:.4f}"
           if current and current.hold_out else "no champion before")
    how = f"forced past the gate ({refused}): {forced_because}" if refused else "gate passed"
    return (f"{name} is now {registry.CHAMPION}: hold-out recall {recall:.4f} at threshold "
            f"{candidate.threshold:g} ({was}); {how} ({where})")
