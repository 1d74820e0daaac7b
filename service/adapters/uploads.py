"""Turn an uploaded adapter (separate files or one archive) into a PEFT folder on disk.

Nothing from the upload names a path: only members whose base name is one of the two PEFT files
are written, under fixed names, into a fresh temporary folder. Pickle files are refused up
front, archives are never extracted wholesale, and sizes are capped while streaming.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Protocol

from core.errors import InvalidAdapter, InvalidRequest
from core.registry.validation import ADAPTER_FILES, PICKLE_SUFFIXES

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_CHUNK = 1 << 20


class Upload(Protocol):
    filename: str | None
    file: BinaryIO


def _copy_capped(source: IO[bytes], dest: Path, budget: list[int]) -> None:
    """Copy while subtracting from ``budget[0]``; InvalidRequest once it runs out."""
    with open(dest, "wb") as out:
        while chunk := source.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise InvalidRequest("the upload exceeds max_upload_bytes", param="files")
            out.write(chunk)


def _member_name(name: str) -> str | None:
    """The PEFT file a member is, by base name; refuses pickles; None for anything else."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if base.endswith(PICKLE_SUFFIXES):
        raise InvalidAdapter(f"the upload holds {base}: loraloop loads safetensors only")
    return base if base in ADAPTER_FILES else None


def _extract(archive: Path, folder: Path, budget: list[int]) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = None if info.is_dir() else _member_name(info.filename)
                if name:
                    with zf.open(info) as member:
                        _copy_capped(member, folder / name, budget)
        return
    try:
        with tarfile.open(archive) as tf:
            for entry in tf:
                name = _member_name(entry.name) if entry.isfile() else None
                if name:
                    extracted = tf.extractfile(entry)
                    assert extracted is not None
                    _copy_capped(extracted, folder / name, budget)
    except tarfile.TarError as e:
        raise InvalidRequest(f"the archive cannot be read: {e}", param="files") from None


def write_upload(uploads: Sequence[Upload], folder: Path, max_bytes: int) -> Path:
    """Write the adapter files of ``uploads`` into ``folder`` (which must exist and be empty)."""
    if not uploads:
        raise InvalidRequest(
            "send the adapter as files (adapter_config.json and adapter_model.safetensors) "
            "or as one .tar.gz/.zip archive", param="files",
        )
    budget = [max_bytes]
    for upload in uploads:
        filename = upload.filename or ""
        if filename.endswith(ARCHIVE_SUFFIXES):
            spooled = folder / ".archive"
            _copy_capped(upload.file, spooled, budget)
            _extract(spooled, folder, budget)
            spooled.unlink()
            continue
        name = _member_name(filename)
        if name is None:
            raise InvalidRequest(
                f"unexpected file {PurePosixPath(filename).name!r}: send adapter_config.json, "
                "adapter_model.safetensors, or an archive of them", param="files",
            )
        _copy_capped(upload.file, folder / name, budget)
    return folder

