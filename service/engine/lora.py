"""Mixed-adapter LoRA: every row of a batch uses its own adapter in the same forward pass.

Each targeted ``nn.Linear`` (W, never modified) is wrapped; the wrapper holds every slot's
weights, zero-padded to ``max_rank``, and computes per row b with slot s = slot[b]::

    x[b] ──► W ────────────────────────────────────────► + ──► y[b]
      │                                                 ▲
      └──► A[s] (r_max x in) ──► B[s] (out x r_max) ──► · scaling[s]

as two batched matmuls over the rows (Punica/S-LoRA style), never a Python loop over adapters.
Slot 0 is all zeros: rows served by the base add an exact 0. Ranks below ``max_rank`` are zero
padded, so adapters of any rank and any subset of target modules mix in one batch; each layer
only computes up to the largest rank its current rows use, and skips the update entirely when
no row's adapter targets it.

Rows are bound to slots in two ways:

- ``GatheredRows``: gathers A/B per forward from the slot tensors (prefill, reward scoring);
- ``BatchRows``: the decode batch. Its per-row A/B live in preallocated buffers in batch
  order, written once when a row joins (or moves when others leave), so a decode step does no
  gathering at all.

Filling a slot copies tensors into preallocated storage: no module is rebuilt, no base weight is
touched, and the cost does not depend on how many adapters are resident.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from core.base.info import LLAMA_PROJECTIONS as ALL_PROJECTIONS  # noqa: F401 (tests)
from service.engine import products
from service.engine.packing import unpack
from service.engine.weights import AdapterWeights

_MODULE_NAME = re.compile(r"(?:.*\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)")
BASE_SLOT = 0


class _Binding:
    """The rows of the forward pass in progress; shared by every LoraLinear of one model."""

    rows: GatheredRows | BatchRows | Parts | None = None


class LoraLinear(nn.Module):
    """A frozen base ``nn.Linear`` plus the LoRA weights of every slot for this projection."""

    # Buffers registered in __init__, declared for the type checker.
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    scaling: torch.Tensor

    def __init__(self, base: nn.Linear, index: int, slots: int, max_rank: int, binding: _Binding):
        super().__init__()
        self.base = base
        self.index = index  # position in LoraModel.layers; keys per-layer row state
        self.binding = binding
        w = base.weight
        # A [slots, r_max, in], B [slots, out, r_max] (peft's layouts, one extra leading dim).
        self.register_buffer(
            "lora_A",
            torch.zeros(slots, max_rank, base.in_features, dtype=w.dtype, device=w.device),
            persistent=False,
        )
        self.register_buffer(
            "lora_B",
            torch.zeros(slots, base.out_features, max_rank, dtype=w.dtype, device=w.device),
            persistent=False,
        )
        self.register_buffer(
            "scaling", torch.zeros(slots, dtype=w.dtype, device=w.device), persistent=False
        )
        self.ranks = [0] * slots  # host copy of each slot's rank here (0: slot does not target us)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = products.linear(self.base, x)  # x: [B, S, in] -> y: [B, S, out]
        rows = self.binding.rows
        if rows is None:
            return y
        if isinstance(rows, Parts):
            rows.add_updates(self, x, y)
        else:
            add_update(x, y, rows.weights(self))
        return y


def add_update(x: torch.Tensor, y: torch.Tensor, weights) -> None:
    """Add each row's LoRA update of ``x`` [B, S, in] to ``y`` [B, S, out] in place (``y`` is
    the base projection's fresh output, or a view of it); ``weights`` from a binding's
    ``weights`` (None: no row's adapter targets this projection)."""
    if weights is None:
        return
    A, B_t, scaling = weights  # A [B, r, in], B^T [B, r, out], [B]
    # A x^T, not x A^T: at decode (S = 1) each row's product is a matrix-vector product over
    # A's contiguous rows; x A^T, a [1, in] x [in, r] product per row, took about 1.15x as
    # long with A read from memory (bench/lora_layout.py), 3-5x with A in cache
    u = torch.bmm(A, x.transpose(1, 2))  # [B, r, S]
    delta = torch.bmm(u.transpose(1, 2), B_t)  # [B, S, out]
    # peft computes result + (B (A x)) * scaling; addcmul does it in one op.
    y.addcmul_(delta, scaling[:, None, None])


class LoraModel:
    """Installs LoraLinear wrappers into a causal LM and manages their slots.

    Slot 0 is the base (zeros); adapters go into slots 1..num_slots.
    """

    def __init__(
        self,
        model: nn.Module,
        target_modules: Sequence[str],
        num_slots: int,
        max_rank: int,
    ):
        self.model = model
        self.max_rank = max_rank
        self.num_slots = num_slots
        self.binding = _Binding()
        self.layers: list[LoraLinear] = []
        self.by_key: dict[tuple[int, str], LoraLinear] = {}
        self.score_heads: dict[int, torch.Tensor] = {}  # slot -> reward head [1, hidden]
        targets = set(target_modules)
        for name, module in list(model.named_modules()):
            match = _MODULE_NAME.fullmatch(name)
            if not match or match[2] not in targets or not isinstance(module, nn.Linear):
                continue
            parent_name, _, attr = name.rpartition(".")
            wrapper = LoraLinear(module, len(self.layers), num_slots + 1, max_rank, self.binding)
            setattr(model.get_submodule(parent_name), attr, wrapper)
            self.layers.append(wrapper)
            self.by_key[(int(match[1]), match[2])] = wrapper
        if not self.layers:
            raise ValueError(f"no Linear named {sorted(targets)} found in the model's layers")
        ref = self.layers[0].base.weight
        self.device, self.dtype = ref.device, ref.dtype

    @property
    def nbytes(self) -> int:
        """Memory of every slot's A, B and scaling (the base's slot 0 included), preallocated:
        (num_slots + 1) x sum over wrapped projections of (max_rank x (in + out) + 1) elements."""
        return sum(
            layer.lora_A.nbytes + layer.lora_B.nbytes + layer.scaling.nbytes for layer in self.layers
        )

    # --- slots ---

    @torch.no_grad()
    def load(self, slot: int, weights: AdapterWeights) -> None:
        """Copy ``weights`` into ``slot`` (1..num_slots), replacing whatever was there."""
        assert 1 <= slot <= self.num_slots, slot
        for key, layer in self.by_key.items():
            pair = weights.pairs.get(key)
            if pair is None:
                if layer.ranks[slot]:
                    layer.lora_A[slot].zero_()
                    layer.lora_B[slot].zero_()
                    layer.scaling[slot] = 0
                    layer.ranks[slot] = 0
                continue
            r = pair.rank
            layer.lora_A[slot, :r].copy_(pair.A, non_blocking=True)
            layer.lora_A[slot, r:].zero_()
            layer.lora_B[slot, :, :r].copy_(pair.B, non_blocking=True)
            layer.lora_B[slot, :, r:].zero_()
            layer.scaling[slot] = pair.scaling
            layer.ranks[slot] = r
        if weights.score is not None:
            self.score_heads[slot] = weights.score.to(self.device, non_blocking=True)
        else:
            self.score_heads.pop(slot, None)

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        """Zero ``slot`` so that it adds nothing."""
        assert 1 <= slot <= self.num_slots, slot
        for layer in self.layers:
            if layer.ranks[slot]:
                layer.lora_A[slot].zero_()
                layer.lora_B[slot].zero_()
                layer.scaling[slot] = 0
                layer.ranks[slot] = 0
        self.score_heads.pop(slot, None)

    # --- binding rows for a forward pass ---

    def gather(self, slots: Sequence[int]) -> GatheredRows:
        return GatheredRows(self, slots)

    def batch_rows(self, capacity: int) -> BatchRows:
        return BatchRows(self, capacity)

    @contextmanager
    def use(self, rows: GatheredRows | BatchRows | Parts | None) -> Iterator[None]:
        """Run the model's forward passes inside this block with ``rows`` bound to slots."""
        previous, self.binding.rows = self.binding.rows, rows
        try:
            yield
        finally:
            self.binding.rows = previous


def _max_ranks(lora: LoraModel, slots: Sequence[int]) -> list[int]:
    """Per layer, the largest rank any of ``slots`` uses there (0: the layer can be skipped)."""
    return [max((layer.ranks[s] for s in slots), default=0) for layer in lora.layers]


class GatheredRows:
    """Row -> slot for one forward pass; each layer gathers its rows' A/B when called."""

    def __init__(self, lora: LoraModel, slots: Sequence[int]):
        self.slots = list(slots)
        self.index = torch.tensor(self.slots, dtype=torch.long, device=lora.device)
        self.ranks = _max_ranks(lora, self.slots)

    def weights(self, layer: LoraLinear):
        r = self.ranks[layer.index]
        if r == 0:
            return None
        return (
            layer.lora_A[self.index, :r],  # A [B, r, in]
            layer.lora_B[self.index, :, :r].transpose(1, 2),  # B^T [B, r, out]
            layer.scaling[self.index],  # [B]
        )


class BatchRows:
    """The decode batch's rows, in batch order (the scheduler's running order), with each
    layer's per-row A/B kept gathered.

    Buffers hold A [capacity, r_max, in] and B^T [capacity, r_max, out] per layer, the layouts
    ``add_update``'s two products read contiguously (faster than transposed views on CPU).
    Rows that join get their adapters' A/B written once, after the rows already there
    (``join``); when rows leave, the batch is compacted (``keep``): only a row that moves into
    a position another row left is written again. A forward pass reads rows [0, len).
    """

    def __init__(self, lora: LoraModel, capacity: int):
        self.lora = lora
        self.capacity = capacity
        self.slots: list[int] = []  # the adapter slot of each row, in batch order
        self.ranks = [0] * len(lora.layers)
        self._A = [
            layer.lora_A.new_zeros(capacity, lora.max_rank, layer.base.in_features)
            for layer in lora.layers
        ]
        self._B = [
            layer.lora_B.new_zeros(capacity, lora.max_rank, layer.base.out_features)
            for layer in lora.layers
        ]
        self._s = [torch.zeros(capacity, dtype=lora.dtype, device=lora.device) for _ in lora.layers]

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def nbytes(self) -> int:
        """Memory of the per-row copies: as much as ``capacity`` more slots."""
        return sum(t.nbytes for buffers in (self._A, self._B, self._s) for t in buffers)

    def join(self, slots: Sequence[int]) -> None:
        """Rows serving the adapters in ``slots`` join, after the rows already in the batch."""
        assert len(self.slots) + len(slots) <= self.capacity, (len(self.slots), len(slots))
        self._write(range(len(self.slots), len(self.slots) + len(slots)), slots)
        self.slots.extend(slots)
        self.ranks = _max_ranks(self.lora, self.slots)

    def keep(self, order: Sequence[int]) -> None:
        """The rows at positions ``order`` go on, row ``order[i]`` now at position i (from
        ``batch.compaction``); the others have left."""
        moved = [i for i, j in enumerate(order) if i != j]
        self.slots = [self.slots[j] for j in order]
        self._write(moved, [self.slots[i] for i in moved])
        self.ranks = _max_ranks(self.lora, self.slots)

    @torch.no_grad()
    def _write(self, positions: Sequence[int], slots: Sequence[int]) -> None:
        """Positions ``positions`` now hold the A/B of ``slots``, in every layer."""
        if not positions:
            return
        index = torch.tensor(list(slots), dtype=torch.long, device=self.lora.device)
        at = torch.tensor(list(positions), dtype=torch.long, device=self.lora.device)
        for i, layer in enumerate(self.lora.layers):
            self._A[i][at] = layer.lora_A[index]
            self._B[i][at] = layer.lora_B[index].transpose(1, 2)
            self._s[i][at] = layer.scaling[index]

    def weights(self, layer: LoraLinear):
        r = self.ranks[layer.index]
        if r == 0:
            return None
        n, i = len(self.slots), layer.index
        return self._A[i][:n, :r], self._B[i][:n, :r], self._s[i][:n]


class Parts:
    """The bindings of a pass over several parts (``Decoder.hidden_parts``): its tokens come
    packed, [1, T, in], part after part, each part ``(binding, B, S)`` [B, S] of them. The base
    projection runs once over all T; each part adds its own rows' updates."""

    def __init__(self, parts: Sequence[tuple[GatheredRows | BatchRows, int, int]]):
        self.parts = list(parts)
        self.shapes = [(b, s) for _, b, s in self.parts]  # once per pass, not per projection

    def add_updates(self, layer: LoraLinear, x: torch.Tensor, y: torch.Tensor) -> None:
        """Each part's rows' updates of ``x`` [1, T, in], into ``y`` [1, T, out] in place."""
        # views of views: each part's update writes into y
        xs, ys = unpack(x.flatten(0, -2), self.shapes), unpack(y.flatten(0, -2), self.shapes)
        for (rows, _, _), x_part, y_part in zip(self.parts, xs, ys, strict=True):
            add_update(x_part, y_part, rows.weights(layer))
