"""The models OpenAI clients may name: the base model and the served policy adapters.

Read from the registry catalog (shared with the adapters feature, refreshed by its poll and
after every write through this server), so a listing costs no registry request."""

from __future__ import annotations

import time

from core.base.info import BaseModelInfo
from core.names import BASE_MODEL
from core.registry.catalog import Catalog
from service.models.protocol import ModelCard, ModelList


class ModelsService:
    def __init__(self, base_info: BaseModelInfo, catalog: Catalog):
        self.base_info = base_info
        self.catalog = catalog

    def list(self) -> ModelList:
        """``base`` and the base model's id; then ``name`` for each policy adapter with a
        production alias, and ``name@alias`` for each of its aliases. Blocking (the catalog
        may refresh once): run it in a thread."""
        created = int(time.time())
        base_id = self.base_info.model_id
        cards = [ModelCard(id=BASE_MODEL, created=created, root=base_id)]
        if base_id != BASE_MODEL:
            cards.append(ModelCard(id=base_id, created=created, root=base_id))
        for name, created_at in _adapter_models(self.catalog):
            cards.append(ModelCard(id=name, created=created_at, root=base_id, parent=base_id))
        return ModelList(data=cards)


def _adapter_models(catalog: Catalog) -> list[tuple[str, int]]:
    """(model name, creation time) of each adapter model, from the catalog."""
    cards: list[tuple[str, int]] = []
    for entry in catalog.adapters():
        if not entry.aliases:
            continue
        by_version = {m.version: m for m in entry.versions}
        manifest = by_version.get(max(entry.aliases.values()))
        if manifest is None or manifest.kind != "policy":  # None: a manifest skipped as corrupt
            continue
        created = int(manifest.created_at.timestamp())
        if "production" in entry.aliases:
            cards.append((entry.name, created))
        cards.extend((f"{entry.name}@{alias}", created) for alias in sorted(entry.aliases))
    return cards
