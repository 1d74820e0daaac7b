"""docs/architecture.md names files and functions; each must exist, so the page cannot drift
from the code unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
PATH = re.compile(r"`((?:core|service|training|clients)/[\w/.-]*)`")
# "`path/file.py` `Name`" or "`path/file.py` `Class.method`": the name is defined in that file
NAMED = re.compile(r"`((?:core|service|training)/[\w/]+\.py)`\s+`([\w.]+)`")


def test_every_path_the_page_names_exists() -> None:
    paths = PATH.findall(DOC)
    assert len(paths) > 30
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, missing


def test_every_function_the_page_names_is_defined_in_the_file_it_names() -> None:
    pairs = NAMED.findall(DOC)
    assert len(pairs) > 8
    missing = []
    for path, name in pairs:
        source = (ROOT / path).read_text()
        for part in name.split("."):
            if not re.search(rf"^\s*(?:async def|def|class) {part}\b", source, re.M):
                missing.append(f"{path}: {name}")
    assert not missing, missing
