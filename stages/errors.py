"""One error type for what a user can fix, and the wrapper that turns it into one line."""

import logging
import sys
from collections.abc import Callable

log = logging.getLogger("reel_driver")


class PipelineError(Exception):
    """A problem with the input, params or environment, worded for the user."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main() with logging; a PipelineError becomes one line and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
