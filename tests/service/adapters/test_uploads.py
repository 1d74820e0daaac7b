"""An uploaded adapter archive is read, never extracted: member names never reach the
filesystem, links are refused, and bombs (bytes or members) stop at their limit."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from core.errors import InvalidRequest, TooLarge
from service.adapters import uploads
from service.adapters.uploads import write_upload

CONFIG = b'{"peft_type": "LORA"}'
WEIGHTS = b"weights"


@dataclass
class Upload:
    filename: str | None
    file: BinaryIO


def upload(name: str, content: bytes) -> Upload:
    return Upload(name, io.BytesIO(content))


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            tf.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def member(name: str, type_: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, link
    return info


def zip_of(*members: tuple[str | zipfile.ZipInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members:
            zf.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "deep" / "in" / "uploads"
    path.mkdir(parents=True)
    return path


def written(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())


def test_member_names_never_reach_the_filesystem(tmp_path, folder) -> None:
    archive = tar_gz((member("../../../escape/adapter_config.json"), CONFIG),
                     (member("/etc/adapter_model.safetensors"), WEIGHTS))
    write_upload([upload("a.tar.gz", archive)], folder, 1 << 20)
    assert written(tmp_path) == ["deep/in/uploads/adapter_config.json",
                                 "deep/in/uploads/adapter_model.safetensors"]
    for path in folder.iterdir():
        path.unlink()
    archive = zip_of(("..\\..\\adapter_config.json", CONFIG), ("../../adapter_model.safetensors", WEIGHTS))
    write_upload([upload("a.zip", archive)], folder, 1 << 20)
    assert (folder / "adapter_config.json").read_bytes() == CONFIG
    assert len(written(tmp_path)) == 2
    # Files sent one by one are named by their base name too.
    for path in folder.iterdir():
        path.unlink()
    write_upload([upload("../../adapter_config.json", CONFIG)], folder, 1 << 20)
    assert written(tmp_path) == ["deep/in/uploads/adapter_config.json"]


@pytest.mark.parametrize("type_, link", [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "x/notes.txt")])
def test_a_link_named_like_a_peft_file_is_refused(folder, type_, link) -> None:
    archive = tar_gz((member("x/notes.txt"), b"n"), (member("x/adapter_config.json", type_, link), None))
    with pytest.raises(InvalidRequest, match="adapter_config.json is a link"):
        write_upload([upload("a.tar.gz", archive)], folder, 1 << 20)


def test_a_zip_symlink_is_refused(folder) -> None:
    link = zipfile.ZipInfo("adapter_config.json")
    link.external_attr = (0o120777 << 16)  # how zip -y stores a symlink: its target as content
    with pytest.raises(InvalidRequest, match="adapter_config.json is a link"):
        write_upload([upload("a.zip", zip_of((link, b"/etc/passwd")))], folder, 1 << 20)


def test_other_links_are_ignored_like_any_other_member(folder) -> None:
    archive = tar_gz((member("README.md", tarfile.SYMTYPE, "/etc/passwd"), None),
                     (member("adapter_config.json"), CONFIG))
    write_upload([upload("a.tar.gz", archive)], folder, 1 << 20)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json"]


def test_a_peft_file_twice_is_refused(folder) -> None:
    archive = zip_of(("a/adapter_config.json", CONFIG), ("b/adapter_config.json", b"{}"))
    with pytest.raises(InvalidRequest, match="adapter_config.json twice"):
        write_upload([upload("a.zip", archive)], folder, 1 << 20)


def test_a_file_and_an_archive_holding_it_too_are_refused(folder) -> None:
    with pytest.raises(InvalidRequest, match="twice"):
        write_upload([upload("adapter_config.json", CONFIG),
                      upload("a.zip", zip_of(("adapter_config.json", CONFIG)))], folder, 1 << 20)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_a_decompression_bomb_stops_at_the_byte_limit(folder, kind) -> None:
    zeros = b"\0" * (8 << 20)  # 8 MiB of zeros: a few KB compressed
    archive = (tar_gz((member("adapter_model.safetensors"), zeros)) if kind == "tar.gz"
               else zip_of(("adapter_model.safetensors", zeros)))
    assert len(archive) < 64 << 10
    with pytest.raises(TooLarge, match="max_upload_bytes"):
        write_upload([upload(f"a.{kind}", archive)], folder, 1 << 20)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_an_archive_of_too_many_members_is_refused(folder, monkeypatch, kind) -> None:
    monkeypatch.setattr(uploads, "MAX_ARCHIVE_MEMBERS", 50)
    names = [f"empty-{i}" for i in range(51)]
    archive = (tar_gz(*[(member(n), b"") for n in names]) if kind == "tar.gz"
               else zip_of(*[(n, b"") for n in names]))
    with pytest.raises(InvalidRequest, match="members, over 50"):
        write_upload([upload(f"a.{kind}", archive)], folder, 1 << 20)
    archive = (tar_gz(*[(member(n), b"") for n in names[:50]]) if kind == "tar.gz"
               else zip_of(*[(n, b"") for n in names[:50]]))
    (folder / "next").mkdir()
    write_upload([upload(f"b.{kind}", archive)], folder / "next", 1 << 20)  # at the limit: read


@pytest.mark.parametrize("damage", ["truncated tar.gz", "corrupt gzip data", "corrupt zip member", "not an archive"])
def test_a_damaged_archive_is_a_400_saying_so(folder, damage) -> None:
    content = bytes(range(256)) * 400
    if damage == "truncated tar.gz":
        name, archive = "a.tar.gz", tar_gz((member("adapter_model.safetensors"), content))[:-200]
    elif damage == "corrupt gzip data":
        whole = bytearray(gzip.compress(_tar((member("adapter_model.safetensors"), content))))
        whole[30] ^= 0xFF  # early in the deflated stream
        name, archive = "a.tar.gz", bytes(whole)
    elif damage == "corrupt zip member":
        whole = bytearray(zip_of(("adapter_model.safetensors", content)))
        whole[60] ^= 0xFF  # inside the deflated data
        name, archive = "a.zip", bytes(whole)
    else:
        name, archive = "a.zip", b"plain text, not an archive"
    with pytest.raises(InvalidRequest, match="the archive cannot be read"):
        write_upload([upload(name, archive)], folder, 1 << 20)


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for info, content in members:
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
