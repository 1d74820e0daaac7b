"""One copy of the base weights carrying every model a training run needs, as peft adapters.

Classic RLHF holds four models (policy, reference, reward, value). Here they are one frozen
Llama plus LoRA adapters switched in place:

    policy     = W + B_p A_p        (adapter "policy", trainable)    + lm_head
    reference  = W                  (all adapters disabled)          + lm_head
    reward     = W + B_r A_r        (adapter "reward", frozen in PPO) + score head
    value      = policy trunk                                         + value head

The causal LM gets a ``score`` Linear(hidden, 1) at the same module path as
``LlamaForSequenceClassification.score``. A reward adapter created with
``LoraConfig(task_type="SEQ_CLS", modules_to_save=["score"])`` therefore saves exactly the keys
(``base_model.model.model.layers.N...lora_A.weight``, ``base_model.model.score.weight``) that
plain peft loads onto a ``LlamaForSequenceClassification(num_labels=1)``, and a policy adapter
saves the keys of ``get_peft_model(LlamaForCausalLM, LoraConfig(task_type="CAUSAL_LM"))``.

A sequence's score is the score head on the hidden state of its last non-pad token, as in
``LlamaForSequenceClassification``. Position ids always come from the attention mask, so left
or right padding gives the same numbers as the unpadded sequence.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.adapters import AdapterKind
from core.errors import InvalidAdapter
from core.settings import Settings
from training.ppo_math import logprobs_from_logits

POLICY, REWARD, PARENT = "policy", "reward", "parent"


@dataclass(frozen=True)
class LoraSpec:
    """Shape of a new LoRA: ``W + (alpha / r) * B A`` on each target projection."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def lora_config(kind: AdapterKind, spec: LoraSpec, base_model_id: str | None = None) -> LoraConfig:
    """The peft config of a new policy (CAUSAL_LM) or reward (SEQ_CLS + score head) adapter."""
    return LoraConfig(
        task_type="CAUSAL_LM" if kind == "policy" else "SEQ_CLS",
        r=spec.r,
        # peft annotates lora_alpha as int, but scales by alpha / r: a float works as well.
        lora_alpha=spec.alpha,  # type: ignore[arg-type]
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        modules_to_save=["score"] if kind == "reward" else None,
        base_model_name_or_path=base_model_id,
        bias="none",
    )


def _peft_model(base: PreTrainedModel, config: LoraConfig, name: str) -> PeftModel:
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated property
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        return PeftModel(base, config, adapter_name=name)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """0, 1, 2 ... over the real tokens of each row, whatever the padding side. [B, T]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of each row's last real token (left or right padding). [B, T] -> [B]."""
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.long().flip(-1).argmax(-1)


class SharedBase(nn.Module):
    """A frozen causal LM, its adapters, a score head slot and an optional value head.

    ``forward`` runs the active adapter; use ``with shared.adapter(name)`` to pick one and
    ``with shared.adapter(None)`` for the bare base (the PPO/DPO reference).
    """

    base: PreTrainedModel  # set with object.__setattr__, so nn.Module does not register it

    def __init__(self, base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        hidden = base.config.hidden_size
        if not hasattr(base, "score"):
            # Same path and shape as LlamaForSequenceClassification(num_labels=1).score; its
            # base weights are never used: a reward adapter brings its own copy.
            base.score = nn.Linear(hidden, 1, bias=False, dtype=base.dtype, device=base.device)
            nn.init.normal_(base.score.weight, std=base.config.initializer_range)
        base.requires_grad_(False)
        # Not registered as a submodule: it is registered once, inside ``self.peft``.
        object.__setattr__(self, "base", base)
        self.tokenizer = tokenizer
        self.peft: PeftModel | None = None
        self.value_head: nn.Linear | None = None
        self.trainable: set[str] = set()

    # --- adapters ---

    @property
    def model(self) -> PreTrainedModel:
        """The causal LM with LoRA layers injected (forward/generate use the active adapter)."""
        return self.base

    def add_adapter(self, name: str, config: LoraConfig, trainable: bool = True) -> None:
        """A new adapter; LoRA B starts at zero so it begins equal to the base."""
        if self.peft is None:
            self.peft = _peft_model(self.base, config, name)
        else:
            self.peft.add_adapter(name, config)
        if trainable:
            self.trainable.add(name)
        self.activate(name)

    def load_adapter(self, name: str, folder: Path, trainable: bool = False) -> None:
        """Load a saved PEFT folder (safetensors only) as adapter ``name``."""
        if not (Path(folder) / "adapter_model.safetensors").is_file():
            raise InvalidAdapter(f"{folder} holds no adapter_model.safetensors")
        config = LoraConfig.from_pretrained(str(folder))
        config.inference_mode = not trainable
        # Always the generic PeftModel: its task-specific subclasses would add the score head
        # to every later adapter's modules_to_save.
        if self.peft is None:
            self.peft = _peft_model(self.base, config, name)
        else:
            self.peft.add_adapter(name, config)
        result = self.peft.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
        missing = [k for k in result.missing_keys if f".{name}." in k]
        if missing or result.unexpected_keys:
            raise InvalidAdapter(
                f"adapter folder {folder} does not fit this base: missing {missing[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]}"
            )
        if trainable:
            self.trainable.add(name)
        self.activate(name)

    def add_value_head(self) -> None:
        """A scalar head on the policy's hidden states, zero-initialised (V = 0 at start)."""
        self.value_head = nn.Linear(self.base.config.hidden_size, 1, device=self.base.device)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def save_adapter(self, name: str, folder: Path) -> Path:
        """Write adapter ``name`` as a plain PEFT folder (adapter_config.json and
        adapter_model.safetensors only) at ``folder``."""
        assert self.peft is not None
        folder = Path(folder)
        with tempfile.TemporaryDirectory(
            dir=folder.parent if folder.parent.exists() else None
        ) as tmp:
            self.peft.save_pretrained(
                tmp, selected_adapters=[name], safe_serialization=True, save_embedding_layers=False
            )
            # peft writes a non-default adapter to tmp/<name>/ and a model card beside it
            if folder.exists():
                shutil.rmtree(folder)
            shutil.move(str(Path(tmp) / name), folder)
        return folder

    def activate(self, name: str) -> None:
        assert self.peft is not None
        self.peft.set_adapter(name)
        # peft's set_adapter makes the active adapter trainable and the others frozen; we want
        # the trainable set fixed for the whole run (DDP registers it once).
        for param_name, param in self.peft.named_parameters():
            param.requires_grad_(any(f".{a}." in param_name for a in self.trainable))

    @contextlib.contextmanager
    def adapter(self, name: str | None) -> Iterator[None]:
        """Run the body with adapter ``name`` active, or with every adapter disabled (None)."""
        assert self.peft is not None
        previous = self.peft.active_adapter
        if name is None:
            with self.peft.disable_adapter():
                yield
            return
        if name != previous:
            self.activate(name)
        try:
            yield
        finally:
            if name != previous:
                self.activate(previous)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def named_adapter_parameters(self, name: str) -> dict[str, Tensor]:
        """Detached copies of adapter ``name``'s weights (LoRA and score head)."""
        assert self.peft is not None
        return {n: p.detach().clone() for n, p in self.peft.named_parameters() if f".{name}." in n}

    # --- forward ---

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Final-norm hidden states of the active adapter. [B, T] -> [B, T, H]."""
        out = self.base.get_submodule("model")(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        return out.last_hidden_state

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, heads: Sequence[str] = ("logits",)
    ) -> dict[str, Tensor]:
        """Run the active adapter once and apply the requested heads to its hidden states:
        ``logits`` [B, T, V], ``values`` [B, T] (value head), ``scores`` [B] (score head at
        each row's last real token)."""
        hidden = self.hidden_states(input_ids, attention_mask)
        out: dict[str, Tensor] = {}
        if "logits" in heads:
            out["logits"] = self.base.get_submodule("lm_head")(hidden)
        if "values" in heads:
            assert self.value_head is not None, "add_value_head() first"
            out["values"] = self.value_head(hidden.float()).squeeze(-1)
        if "scores" in heads:
            rows = torch.arange(len(input_ids), device=input_ids.device)
            last = hidden[rows, last_token_index(attention_mask)]  # [B, H]
            out["scores"] = self.base.get_submodule("score")(last).squeeze(-1).float()
        return out

    def scores(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Scalar score of each sequence under the active (reward) adapter. [B]."""
        return self(input_ids, attention_mask, heads=("scores",))["scores"]

    def sequence_logprobs(
        self, input_ids: Tensor, attention_mask: Tensor, target_mask: Tensor
    ) -> Tensor:
        return sequence_logprobs(self, input_ids, attention_mask, target_mask)


def sequence_logprobs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, target_mask: Tensor
) -> Tensor:
    """Sum of log p(token) over the tokens where ``target_mask`` is 1 (the completion), under
    the active adapter. ``model`` is a SharedBase or its DDP wrapper. [B, T] -> [B]."""
    logits = model(input_ids, attention_mask)["logits"][:, :-1]
    logp = logprobs_from_logits(logits, input_ids[:, 1:])  # token t+1 given tokens <= t
    return (logp * target_mask[:, 1:]).sum(-1)


def load_shared_base(settings: Settings, tokenizer: PreTrainedTokenizerBase | None = None) -> SharedBase:
    """The configured base model (core.base) wrapped for adapters."""
    from core.base.checkpoint import load_base_model, load_tokenizer

    return SharedBase(load_base_model(settings), tokenizer or load_tokenizer(settings))
