"""One error policy for every command line (training, SOPHIA, the online protocol, export).

A command is two phases: ``setup`` (config, data, model and checkpoint checks) returns the ``run`` (or ``None``
when there is nothing to run, e.g. ``--cfg``). A bad input raised by ``setup`` (``OSError`` / ``ValueError``,
whose messages name what and where) or a :class:`RunError` raised by either phase prints one ``error: ...`` line
and exits 2; a dead worker exits 1; Ctrl-C exits 130. ``VERL_DEBUG=1`` re-raises instead, with the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable


class RunError(RuntimeError):
    """A run that cannot go on for a reason its user fixes in the config or data (e.g. nothing left to train on)."""


def setup_logging() -> None:
    """Log records on stderr at ``VERL_LOG_LEVEL`` (default INFO); Python warnings become log records; no
    weight-loading bars from Hugging Face libraries (read when they are first imported; workers get the same)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    logging.basicConfig(level=os.environ.get("VERL_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    logging.captureWarnings(True)


def run_command(setup: Callable[[], Callable[[], object] | None]) -> int:
    """Run ``setup()`` then the run it returns under the policy of the module docstring; returns the exit status."""
    from verl.single_controller.dispatch import WorkerDiedError

    debug = os.environ.get("VERL_DEBUG") == "1"

    def fail(err: BaseException, status: int) -> int:
        if debug:
            raise err
        print(f"error: {err}", file=sys.stderr)
        return status

    try:
        try:
            run = setup()
        except (OSError, ValueError) as err:
            return fail(err, 2)
        if run is not None:
            run()
    except RunError as err:
        return fail(err, 2)
    except WorkerDiedError as err:
        return fail(err, 1)
    except KeyboardInterrupt:
        print("interrupted: workers stopped", file=sys.stderr)
        return 130
    return 0
