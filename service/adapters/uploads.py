"""Turn an uploaded adapter (separate files or one archive) into a PEFT folder on disk.

Nothing from the upload names a path: only members whose base name is one of the two PEFT files
are written, under fixed names, into a fresh temporary folder, so ``../`` or an absolute member
name goes nowhere else. Archives are never extracted wholesale: links are not followed (one
named like a PEFT file is refused), each PEFT file may appear once, an archive may hold at most
``MAX_ARCHIVE_MEMBERS`` members (bounding what listing it costs), and the bytes written, as sent
and once extracted, count against ``max_upload_bytes`` (a decompression bomb stops there).
Pickle files are refused up front.
"""

from __future__ import annotations

import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Protocol

from core.errors import InvalidAdapter, InvalidRequest, TooLarge
from core.registry.validation import ADAPTER_FILES, PICKLE_SUFFIXES

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
MAX_ARCHIVE_MEMBERS = 1000
_CHUNK = 1 << 20
# What a damaged archive raises while it is read: truncated or corrupt data, an encrypted or
# unsupported zip member (RuntimeError, NotImplementedError); a bad gzip or bz2 stream is an
# OSError without an errno.
_UNREADABLE = (
    tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, RuntimeError,
    NotImplementedError,
)


class Upload(Protocol):
    filename: str | None
    file: BinaryIO


def _copy_capped(source: IO[bytes], dest: Path, budget: list[int]) -> None:
    """Copy while subtracting from ``budget[0]``; TooLarge once it runs out."""
    with open(dest, "xb") as out:  # "x": a PEFT file written twice is a bug, not an overwrite
        while chunk := source.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise TooLarge(
                    "files: the adapter is over max_upload_bytes, as sent or once extracted",
                    param="files",
                )
            out.write(chunk)


def _member_name(name: str) -> str | None:
    """The PEFT file a member is, by base name; refuses pickles; None for anything else."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if base.endswith(PICKLE_SUFFIXES):
        raise InvalidAdapter(f"the upload holds {base}: loraloop loads safetensors only")
    return base if base in ADAPTER_FILES else None


def _claim(name: str, folder: Path) -> Path:
    if (folder / name).exists():
        raise InvalidRequest(f"the upload holds {name} twice: send one adapter", param="files")
    return folder / name


def _refuse_link(name: str) -> None:
    raise InvalidRequest(
        f"the archive's {name} is a link, which is never followed: archive the file itself "
        "(tar -h, zip without -y)",
        param="files",
    )


def _refuse_members(count: int) -> None:
    raise InvalidRequest(
        f"the archive holds {count} or more members, over {MAX_ARCHIVE_MEMBERS}: archive only "
        "the adapter folder",
        param="files",
    )


def _zip_entries(archive: Path) -> int:
    """The member count a zip's end record declares, read before zipfile lists every member
    (a central directory of millions of tiny entries would take gigabytes of ZipInfo)."""
    with open(archive, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - (22 + 0xFFFF)))  # the end record, after a comment of <= 64 KiB
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise zipfile.BadZipFile("no end of central directory record")
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    return int(entries)  # 0xFFFF when a zip64 record holds the real (larger) count


def _extract_zip(archive: Path, folder: Path, budget: list[int]) -> None:
    if _zip_entries(archive) > MAX_ARCHIVE_MEMBERS:
        _refuse_members(MAX_ARCHIVE_MEMBERS + 1)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = None if info.is_dir() else _member_name(info.filename)
            if name is None:
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink (Unix mode)
                _refuse_link(name)
            with zf.open(info) as member:
                _copy_capped(member, _claim(name, folder), budget)


def _extract_tar(archive: Path, folder: Path, budget: list[int]) -> None:
    with tarfile.open(archive) as tf:
        for count, entry in enumerate(tf, start=1):
            if count > MAX_ARCHIVE_MEMBERS:
                _refuse_members(count)
            name = None if entry.isdir() else _member_name(entry.name)
            if name is None:
                continue
            if not entry.isfile():  # a symlink, hard link or device named like a PEFT file
                _refuse_link(name)
            extracted = tf.extractfile(entry)
            assert extracted is not None  # a regular file
            _copy_capped(extracted, _claim(name, folder), budget)


def _extract(archive: Path, folder: Path, budget: list[int]) -> None:
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, folder, budget)
        else:
            _extract_tar(archive, folder, budget)
    except (*_UNREADABLE, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the disk's failure, not the archive's
            raise
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
        _copy_capped(upload.file, _claim(name, folder), budget)
    return folder
