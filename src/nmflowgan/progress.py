"""Progress bars for long work: live on a terminal; in a log (stderr redirected to a file or a pipe) at most one
line every :data:`LOG_INTERVAL_S` seconds, so that a redirected demo log does not hold every training step."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress(iterable: Iterable | None = None, enabled: bool = True, **tqdm_options: object) -> tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand), shown when ``enabled``; ``tqdm_options`` as tqdm's
    (``desc``, ``total``, ``unit``, ...). Where stderr is not a terminal it is redrawn at most every
    :data:`LOG_INTERVAL_S` seconds."""
    interval = {} if sys.stderr.isatty() else {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S}
    return tqdm(iterable, disable=not enabled, **interval, **tqdm_options)
