"""ObjectStore on a local folder (the embedded default), safe across processes on one host.

Create-if-absent is ``os.link`` of a fully written temporary file: atomic, and it fails when the
target exists. Compare-and-swap takes an exclusive ``flock`` on a per-key lock file around
read-compare-rename. A process killed mid-write leaves only a temporary file, never a partial
object under its real name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.errors import Conflict, IntegrityError, NotFound
from core.registry.object_store import ObjectStore, StoredObject


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys are built from validated names, so this never fires unless a bug or corrupt
        # data slips a '..' or an absolute path through: then refuse, even under python -O.
        if not path.is_relative_to(self.root):
            raise IntegrityError(f"registry key {key!r} points outside the registry at {self.location}")
        return path

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return Path(tmp)

    def read(self, key: str) -> StoredObject | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return StoredObject(data, _etag(data))

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def replace(self, key: str, data: bytes, etag: str | None) -> None:
        path = self._path(key)
        with self._locked(path):
            current = self.read(key)
            current_etag = current.etag if current else None
            if current_etag != etag:
                raise Conflict(f"{key} was changed by another writer")
            os.replace(self._write_temp(path, data), path)

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    def scan(self, prefix: str) -> dict[str, str]:
        folder = self._path(prefix)
        tags = {}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):  # lock and temporary files
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                # Every write is a rename of a new file: a new inode, so a new tag.
                key = path.relative_to(self.root).as_posix()
                tags[key] = f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
        return tags

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def upload(self, key: str, source: Path) -> None:
        path = self._path(key)
        if path.is_file():  # content-addressed: same key, same bytes
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError:
            raise NotFound(f"{key} is missing from the registry at {self.location}") from None
