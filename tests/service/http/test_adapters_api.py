"""The adapter admin API: list, upload (files or archive), aliases with CAS, load/pin/unload,
and hot-swap as a caller sees it."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.adapters import ADAPTER_FILES, make_adapter, multipart
from tests.http_errors import assert_error


def tar_gz(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name in ADAPTER_FILES:
            tf.add(folder / name, arcname=f"my-adapter/{name}")
    return buffer.getvalue()


@pytest.fixture
def new_folder(tmp_path, tiny_llama_dir):
    counter = iter(range(100))
    return lambda **kw: make_adapter(tiny_llama_dir, tmp_path / f"a{next(counter)}", **kw)


def test_list_shows_versions_aliases_and_residency(client):
    client.post("/v1/completions", json={"model": "summarize", "prompt": "hi", "max_tokens": 2})
    adapters = {a["name"]: a for a in client.get("/v1/adapters").json()["data"]}
    assert {"summarize", "support", "judge"} <= set(adapters)
    summarize = adapters["summarize"]
    assert summarize["kind"] == "policy" and summarize["aliases"]["production"] == 1
    assert summarize["versions"][0]["rank"] == 4
    assert summarize["residency"][0]["tier"] == "slot" and summarize["residency"][0]["last_used"]
    assert adapters["judge"]["kind"] == "reward"


def test_upload_files_then_promote_and_serve_the_new_version(client, new_folder):
    r = client.post("/v1/adapters/upload-files/versions", files=multipart(new_folder(seed=11)), data={"alias": ["candidate"]})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    served = client.post("/v1/completions", json={"model": "upload-files@candidate", "prompt": "hi", "max_tokens": 2})
    assert served.json()["model"] == "upload-files@1"
    r = client.post("/v1/adapters/upload-files/versions", files=[("files", ("a.tar.gz", tar_gz(new_folder(seed=12))))])
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    # compare-and-swap: move candidate 1 -> 2; a stale expectation is a conflict
    assert client.put("/v1/adapters/upload-files/aliases/candidate", json={"version": 2, "expected": 1}).status_code == 200
    assert_error(client.put("/v1/adapters/upload-files/aliases/candidate", json={"version": 1, "expected": 1}),
                 409, "conflict_error")
    served = client.post("/v1/completions", json={"model": "upload-files@candidate", "prompt": "hi", "max_tokens": 2})
    assert served.json()["model"] == "upload-files@2"  # hot-swapped without a restart
    assert client.delete("/v1/adapters/upload-files/aliases/candidate").status_code == 200
    assert_error(client.post("/v1/completions", json={"model": "upload-files@candidate", "prompt": "hi"}),
                 404, "not_found_error")


def test_zip_uploads_work_and_unrelated_members_are_ignored(client, new_folder):
    folder = new_folder(seed=13)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in ADAPTER_FILES:
            zf.write(folder / name, f"nested/dir/{name}")
        zf.writestr("../../evil.txt", "ignored, never written")
    r = client.post("/v1/adapters/upload-zip/versions", files=[("files", ("adapter.zip", buffer.getvalue()))])
    assert r.status_code == 201, r.text


def test_bad_uploads_are_refused_with_a_reason(client, new_folder, tmp_path, tiny_llama_dir):
    folder = new_folder(seed=14)
    pickled = [("files", ("adapter_model.bin", b"\x80\x04pickle"))]
    assert_error(client.post("/v1/adapters/bad/versions", files=pickled), 422, "invalid_request_error",
                 contains="safetensors only")
    only_config = [("files", ("adapter_config.json", (folder / ADAPTER_FILES[0]).read_bytes()))]
    assert_error(client.post("/v1/adapters/bad/versions", files=only_config), 422, "invalid_request_error",
                 contains="no adapter_model.safetensors")
    assert_error(client.post("/v1/adapters/bad/versions", files=[("files", ("notes.txt", b"x"))]), 400,
                 "invalid_request_error", contains="unexpected file")
    assert_error(client.post("/v1/adapters/bad/versions", files=[("files", ("x.tar.gz", b"garbage"))]), 400,
                 "invalid_request_error", contains="archive")
    assert_error(client.post("/v1/adapters/Bad_Name/versions", files=multipart(folder)), 400,
                 "invalid_request_error", contains="invalid adapter name")
    reward = make_adapter(tiny_llama_dir, tmp_path / "rw", kind="reward")
    assert_error(client.post("/v1/adapters/bad/versions", files=multipart(reward)), 422,
                 "invalid_request_error", contains="kind 'reward'")
    assert client.get("/v1/adapters/bad").status_code == 404


def test_load_pin_unload(client, new_folder):
    client.post("/v1/adapters/pinme/versions", files=multipart(new_folder(seed=15)), data={"alias": ["production"]})
    loaded = client.post("/v1/adapters/pinme@1/load")
    assert loaded.status_code == 200 and loaded.json()["tier"] == "slot"
    pinned = client.post("/v1/adapters/pinme/pin", json={"pinned": True}).json()
    assert pinned["pinned"] is True
    assert client.post("/v1/adapters/pinme/pin", json={"pinned": False}).json()["pinned"] is False
    assert client.post("/v1/adapters/pinme@1/unload").status_code == 204
    residency = client.get("/v1/adapters/pinme").json()["residency"]
    assert all(r["tier"] != "slot" for r in residency)
    assert_error(client.post("/v1/adapters/nope@1/load"), 404, "not_found_error")
