"""The two kinds of failure co2cast knows, from one small hierarchy.

* :class:`PermanentError`: bad data, an unknown series, a refused publish, an integrity
  failure. Running again fails the same way; a person has to act. The DAGs fail the task
  without retrying it.
  A :class:`SetupError` is one that concerns the whole setup, not one input: a run of many
  series stops at the first one instead of repeating it for each.
* :class:`TransientError`: the network, an S3 5xx, a busy database. A retry may cure it; the
  DAGs retry only these.

Every message is one line a person can act on; the CLI prints it instead of a traceback.
This module is a leaf: it imports nothing from the package.
"""

from __future__ import annotations


class Co2castError(Exception):
    """A known failure. ``str(error)`` is one line that says what is wrong and what to do."""

    transient: bool = False


class PermanentError(Co2castError):
    """Will fail the same way again until a person changes the input or the configuration."""


class SetupError(PermanentError):
    """The setup is wrong (a setting, a deleted MLflow experiment): every series fails alike until a person fixes it."""


class TransientError(Co2castError):
    """May succeed if tried again later (network, S3 5xx, database busy)."""

    transient = True
