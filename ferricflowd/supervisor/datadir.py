"""One daemon per data_dir: an exclusive flock on `data_dir/ferricflowd.lock`.

Everything under data_dir (the embedded store's socket and AOF, the metrics directory) belongs
to one running supervisor. A second daemon started on the same directory must touch none of
it: it takes the lock first, and when the lock is held it stops before it wipes, starts or
deletes anything. The lock is the kernel's, so it ends with the process however that ends
(SIGKILL included): a lock file left behind by a dead daemon is stale because nobody holds
its lock, whatever pid it names. The file is never deleted (a daemon that unlinked it could
race a newcomer locking the old inode).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

__all__ = ["DataDirInUse", "DataDirLock"]

LOCK_NAME = "ferricflowd.lock"


class DataDirInUse(RuntimeError):
    """Another live process holds the data_dir's lock."""


class DataDirLock:
    """The exclusive lock of one data_dir, held from acquire() until release() or exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create data_dir if needed and lock it; DataDirInUse names the holder's pid.
        OSError when the directory or the file cannot be created."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data_dir {self.data_dir} is in use by ferricflowd pid {holder}"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        # Run boards a previous daemon's workers left (runboard.py): a new worker
        # with a recycled pid must not be judged by an old one's.
        shutil.rmtree(self.data_dir / "running", ignore_errors=True)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (closing the file drops the flock); the file stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
