"""The local adapter cache: ``cache_dir/<adapter>/<version>/``, bounded in bytes, LRU.

Several threads and processes (servers, trainers) may share one cache folder, so every rule
here holds across processes, through one ``flock`` file per version
(``cache_dir/<adapter>/.<version>.lock``; flock also separates threads, each has its own fd):

- a reader holds the lock shared for as long as it reads the folder (``hold``);
- a filler takes it exclusive: it moves a stale folder away and renames a verified copy in;
- the evictor takes it exclusive *without waiting*: a version that anyone holds is in use and
  is skipped. It renames the folder to ``.trash-*`` (atomic) before deleting it, so nobody is
  ever handed a half-deleted folder: a folder either is complete under its name or is gone.

A folder counts as cached when its marker (the manifest's file list) is there and every file
has the size the marker states; the sha256 is checked once, when the folder is filled.
Least recently used = oldest marker mtime; every use touches the marker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".files.json"
_TRASH_PREFIX = ".trash-"


def _valid(folder: Path, marker: str | None = None) -> bool:
    """Whether ``folder`` is a complete copy: its marker is there (and equals ``marker`` when
    given) and each file it lists has the listed size."""
    try:
        stored = (folder / MARKER).read_text()
        if marker is not None and stored != marker:
            return False
        files = json.loads(stored)["files"]
        return all((folder / name).stat().st_size == entry["size"] for name, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


class AdapterCache:
    """Version folders under ``root``, kept under ``max_bytes`` (None: unbounded)."""

    def __init__(self, root: Path, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._evicting = threading.Lock()  # one eviction pass per process at a time

    def folder(self, adapter: str, version: int) -> Path:
        return self.root / adapter / str(version)

    @contextlib.contextmanager
    def _locked(self, adapter: str, version: int, mode: int) -> Iterator[int]:
        lock_path = self.root / adapter / f".{version}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield fd
        finally:
            os.close(fd)  # releases the flock

    def ensure(self, adapter: str, version: int, marker: str, fill: Callable[[Path], None]) -> Path:
        """The folder of (adapter, version), filled by ``fill(tmp_folder)`` unless a valid copy
        with this ``marker`` is cached. Marks it used; evicts others if the cache is too big."""
        target = self.folder(adapter, version)
        added = False
        with self._locked(adapter, version, fcntl.LOCK_SH) as fd:
            while not _valid(target, marker):
                fcntl.flock(fd, fcntl.LOCK_EX)  # not atomic: re-check once exclusive
                if not _valid(target, marker):
                    self._fill(target, marker, fill)
                    added = True
                fcntl.flock(fd, fcntl.LOCK_SH)  # an evictor may slip in here: the loop re-checks
            self._touch(target)
            if added:
                self.evict()  # our shared lock keeps the new version out of its reach
        return target

    def _fill(self, target: Path, marker: str, fill: Callable[[Path], None]) -> None:
        if target.exists():  # stale: other bytes, or a file of the wrong size
            self._discard(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            fill(tmp)
            (tmp / MARKER).write_text(marker)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def hold(self, adapter: str, version: int) -> Iterator[bool]:
        """Keep (adapter, version) from eviction while the block runs; yields whether a
        complete copy is there (False: it was evicted before the hold began)."""
        with self._locked(adapter, version, fcntl.LOCK_SH):
            target = self.folder(adapter, version)
            present = _valid(target)
            if present:
                self._touch(target)
            yield present

    def _touch(self, folder: Path) -> None:
        now = time.time_ns()  # finer than the file system's clock, so LRU order is exact
        with contextlib.suppress(OSError):
            os.utime(folder / MARKER, ns=(now, now))

    def _discard(self, folder: Path) -> None:
        """Rename, then delete: the name disappears atomically, the bytes go after."""
        trash = self.root / f"{_TRASH_PREFIX}{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # --- eviction ---

    def _entries(self) -> list[tuple[int, int, str, int]]:
        """(last use ns, bytes, adapter, version) of every cached version folder."""
        entries = []
        for adapter_dir in self.root.iterdir() if self.root.is_dir() else ():
            if adapter_dir.name.startswith(".") or not adapter_dir.is_dir():
                continue
            for folder in adapter_dir.iterdir():
                if not folder.name.isdigit() or not folder.is_dir():
                    continue  # lock files and temporary fills
                try:
                    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                    used = (folder / MARKER).stat().st_mtime_ns
                except FileNotFoundError:
                    used, size = 0, 0  # being discarded right now, or incomplete
                entries.append((used, size, adapter_dir.name, int(folder.name)))
        return entries

    def evict(self) -> None:
        """Delete least recently used versions, skipping those in use, until the cache fits
        ``max_bytes``. Leftover trash of a crashed process is deleted on the way."""
        if self.max_bytes is None or not self._evicting.acquire(blocking=False):
            return
        try:
            for trash in self.root.glob(f"{_TRASH_PREFIX}*"):
                shutil.rmtree(trash, ignore_errors=True)
            entries = sorted(self._entries())
            total = sum(size for _, size, _, _ in entries)
            for _, size, adapter, version in entries:
                if total <= self.max_bytes:
                    break
                if self._evict_one(adapter, version):
                    total -= size
            if total > self.max_bytes:
                log.info("adapter cache holds %d bytes, over its %d: the rest is in use",
                         total, self.max_bytes)
        finally:
            self._evicting.release()

    def _evict_one(self, adapter: str, version: int) -> bool:
        try:
            with self._locked(adapter, version, fcntl.LOCK_EX | fcntl.LOCK_NB):
                self._discard(self.folder(adapter, version))
        except BlockingIOError:
            return False  # held by a reader (any thread or process): in use
        log.info("evicted %s@%s from the adapter cache", adapter, version)
        return True
