"""The rollup cache: a series' finished step bins, kept in memory and in files beside the store.

A binned read (``MetricSeries._series``) of a long run merges its rows into power-of-two step bins; the bins below
the one holding the latest step are complete, so they are kept and extended as the run grows: a refresh reads
only the newest bin's rows, and a server started afresh reads the file instead of every row. Files are Parquet,
never pickle: the cache folder may be shared (a read-only server on another user's ``SSLVIZ_HOME``), and a
planted pickle would run code in the dashboard.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from ..engine import files
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py

ROLLUPS_KEPT = 256  # series kept in memory per store object (an LRU)
ROLLUP_FOLDER = "cache/rollups"  # beside the store: the same bins on disk, for a server that starts afresh


class RollupCache:
    """The finished bins of the series of one store file (``store_path``), by series key."""

    def __init__(self, store_path: Path):
        self.store_path = Path(store_path)
        self._kept: dict = {}  # series key -> (bins end, frame of the finished step bins)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def take(self, run_id: int, key: tuple) -> tuple[int | None, pd.DataFrame | None]:
        """(step the bins end at, their frame) of series ``key``, from memory or its file; (None, None) if none."""
        with self._lock:
            done, frame = self._kept.pop(key, (None, None))
        return (done, frame) if done is not None else self._load(run_id, key)

    def keep(self, run_id: int, key: tuple, done: int, frame: pd.DataFrame, *, save: bool) -> None:
        """Keep series ``key``'s bins up to ``done`` in memory, and with ``save`` (they changed) in its file."""
        with self._lock:
            self._kept[key] = (done, frame)
            while len(self._kept) > ROLLUPS_KEPT:
                self._kept.pop(next(iter(self._kept)))
        if save:
            self._save(run_id, key, done, frame)

    def clear(self) -> None:
        """Forget the bins in memory (a resume cuts a run's metrics back); the files carry the run's start time."""
        with self._lock:
            self._kept.clear()

    def delete(self, run_id: int) -> None:
        """Remove a deleted run's files."""
        prefix = self.file(run_id)
        for path in prefix.parent.glob(f"{prefix.name}*") if prefix.parent.is_dir() else ():
            path.unlink(missing_ok=True)

    def file(self, run_id: int, key: tuple | None = None) -> Path:
        """The file of one series' finished bins (``key`` as in `_series`), or with no key the run's file prefix."""
        name = f"{self.store_path.stem}-run{run_id}-"
        if key is not None:
            name += hashlib.sha1(repr(key).encode()).hexdigest()[:16] + ".parquet"
        return self.store_path.parent / ROLLUP_FOLDER / name

    def _load(self, run_id: int, key: tuple) -> tuple[int | None, pd.DataFrame | None]:
        """A series' finished bins as an earlier process (another server, before a restart) saved them; a file that
        is not a rollup this version wrote (a planted pickle, no ``done`` step, another layout) is ignored, and the
        bins are rebuilt from the store."""
        try:
            frame = pd.read_parquet(self.file(run_id, key))
            done = int(frame.attrs["done"])
        except (OSError, ValueError, TypeError, KeyError):  # pyarrow: ArrowInvalid is a ValueError, ArrowIOError an OSError
            return None, None
        frame.attrs.clear()
        return done, frame

    def _save(self, run_id: int, key: tuple, done: int, frame: pd.DataFrame) -> None:
        """Keep the finished bins on disk (atomic rename; a read-only folder only loses the speed-up)."""
        path = self.file(run_id, key)
        saved = frame.copy(deep=False)
        saved.attrs["done"] = done  # in the file's metadata: the bins below this step are complete
        try:
            files.write_atomically(path, lambda f: saved.to_parquet(f, index=False))
        except OSError:
            pass
