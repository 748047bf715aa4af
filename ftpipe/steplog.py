"""Library log lines and warnings go to the running step's log, not the console.

huggingface_hub writes its own lines ("Retrying in 1s [Retry 1/5].", "No files have been
modified since last commit...") through the ``huggingface_hub`` logger, whose handler
prints to stderr, in the middle of ftpipe's progress display. While a step runs,
:func:`library_logs_to` replaces that logger's handlers with one that writes into the
step's log function (redacted there like every other line) and puts them back after.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# the libraries whose own loggers print to the console unless told otherwise
LIBRARY_LOGGERS = ("huggingface_hub",)


class _ToStepLog(logging.Handler):
    def __init__(self, log: Callable[[str], None], name: str) -> None:
        super().__init__(logging.NOTSET)
        self._log = log
        self._name = name

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log(f"[{self._name}] {record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never break the step
            self.handleError(record)


@contextmanager
def library_logs_to(log: Callable[[str], None], names: tuple[str, ...] = LIBRARY_LOGGERS) -> Iterator[None]:
    """Within the block, records of the ``names`` loggers (WARNING and above, or the level
    the library is set to) go to ``log`` and nowhere else."""
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        logger.handlers = [_ToStepLog(log, name)]
        logger.propagate = False

    def to_log(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: object = None,
        line: str | None = None,
    ) -> None:
        log(f"[warning] {category.__name__}: {message} ({filename}:{lineno})")

    try:
        # the libraries' deprecation notices (transformers' FutureWarnings, ...) too; the
        # filters stay as they are, so each is still shown once
        with warnings.catch_warnings():
            warnings.showwarning = to_log
            yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
