"""Faults of the machine rather than of the pipeline: the disk holding the run store (or a
step's output) filling up. A full disk ends the step with a message that says what to do;
the store stays readable (every record is written atomically) and the next run resumes."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftpipe.errors import StepError

# no space, over quota, or over the per-file size limit (ulimit -f): no room to write
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_ROOM_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


def no_room(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a write that found no room.
    A step's child process reports it as text, so its message counts too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            return True
        if any(text in str(exc) for text in _NO_ROOM_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DiskFull(StepError):
    """A write found no room on the disk; nothing is wrong with the pipeline."""

    def __init__(self, store: Path, exc: BaseException | None = None) -> None:
        detail = f" ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})" if exc else ""
        super().__init__(
            f"the disk is full: no room to write in the run store {store}{detail}",
            hint="free space — `ftpipe runs gc --keep N` removes old runs and unreferenced artifacts, or point "
            "--store / FTPIPE_STORE at a bigger disk — and run again: finished steps are kept and "
            "training resumes from its last checkpoint",
        )


# Room kept free while a run is in progress, given back when the disk fills, so that the
# failed step's log and the run record can still be written.
RESERVE_BYTES = 512 * 1024
NEARLY_FULL_BYTES = 1024 * 1024


def _reserve_path(root: Path) -> Path:
    return root / "tmp" / f"reserve-{os.getpid()}-room"  # `runs gc` keeps it while this pid lives


def store_full(root: Path) -> bool:
    """Whether the disk holding ``root`` is (nearly) full: some libraries (torch's
    serializer) report a failed write without its errno."""
    try:
        return shutil.disk_usage(root).free < NEARLY_FULL_BYTES
    except OSError:
        return False


@contextmanager
def reserved_room(root: Path, size: int = RESERVE_BYTES) -> Iterator[None]:
    """Hold ``size`` bytes in the store for the duration of a run (see :func:`release_room`)."""
    path = _reserve_path(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            try:  # allocates the blocks without writing them: cheap on a cached rerun
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                f.write(b"\0" * size)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if no_room(exc):
            raise DiskFull(root, exc) from None
        raise
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def release_room(root: Path) -> None:
    """Give the reserved room back: the disk is full and the record must still be written."""
    _reserve_path(root).unlink(missing_ok=True)
