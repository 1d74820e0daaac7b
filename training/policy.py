"""What PPO and DPO share: which adapters sit on the base, and how a policy is evaluated.

Adapters on the one base copy of a policy run:

    policy   trainable; fresh, or the parent's weights with --init-from-parent
    parent   frozen copy of the previous version (NAME@production), for the win rate
    reward   frozen reward adapter, when the run has one (PPO always; DPO for evaluation)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InvalidAdapter
from training.batching import Prompt
from training.config import PolicyConfig
from training.evaluate import policy_metrics
from training.resolve import find_parent, resolve_adapter
from training.run import RunContext, lora_spec
from training.shared_base import PARENT, POLICY, REWARD, SharedBase, lora_config

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Manifest

log = logging.getLogger(__name__)


@dataclass
class PolicySetup:
    parent: Manifest | None = None  # the previous version
    parent_loaded: bool = False
    reward: Manifest | None = None  # the reward adapter (None for a local folder)
    reward_loaded: bool = False
    lineage: dict[str, Any] = field(default_factory=dict)


def prepare_policy(ctx: RunContext, shared: SharedBase, config: PolicyConfig) -> PolicySetup:
    """Put the policy, parent and reward adapters on ``shared``; record them for lineage."""
    setup = PolicySetup()
    parent = find_parent(ctx, config.parent_ref)
    if parent is None and config.init_from_parent:
        raise ValueError(
            f"--init-from-parent: {config.parent_ref} does not exist; "
            "drop the flag for a fresh LoRA"
        )
    if config.init_from_parent:
        assert parent is not None
        shared.load_adapter(POLICY, parent[0], trainable=True)
    else:
        shared.add_adapter(POLICY, lora_config("policy", lora_spec(config), ctx.base_info.model_id))
    if parent is not None:
        folder, setup.parent = parent
        if setup.parent is not None and setup.parent.kind != "policy":
            raise InvalidAdapter(
                f"parent {setup.parent.ref} is a {setup.parent.kind} adapter, not a policy"
            )
        shared.load_adapter(PARENT, folder, trainable=False)
        setup.parent_loaded = True
        setup.lineage["parent"] = _ref(setup.parent, folder)
        setup.lineage["parent_version"] = setup.parent.version if setup.parent is not None else None
    if config.reward:
        folder, setup.reward = resolve_adapter(ctx, config.reward)
        if setup.reward is not None and setup.reward.kind != "reward":
            raise InvalidAdapter(
                f"{config.reward} is a {setup.reward.kind} adapter; --reward needs a reward adapter"
            )
        shared.load_adapter(REWARD, folder, trainable=False)
        setup.reward_loaded = True
        setup.lineage["reward_adapter"] = _ref(setup.reward, folder)
    shared.activate(POLICY)
    return setup


def _ref(manifest: Manifest | None, folder: Path) -> str:
    return manifest.ref if manifest is not None else str(folder)


def evaluate_policy(
    ctx: RunContext,
    shared: SharedBase,
    setup: PolicySetup,
    queries: Sequence[Prompt],
    config: PolicyConfig,
) -> dict[str, Any]:
    """Held-out metrics of the trained policy (see training/evaluate.py for the names)."""
    shared.eval()
    metrics = policy_metrics(
        shared,
        queries,
        reward=REWARD if setup.reward_loaded else None,
        parent=PARENT if setup.parent_loaded else None,
        started_from_parent=config.init_from_parent,
        max_new_tokens=config.target_sequence_length,
        temperature=config.temperature,
        seed=config.seed + 10_000,  # evaluation samples never reuse training samples' seeds
    )
    if setup.reward is not None and "reward_accuracy" in setup.reward.metrics:
        # the judge's own held-out accuracy, so a gate can refuse a weak reward model
        metrics["reward_accuracy"] = setup.reward.metrics["reward_accuracy"]
    return metrics
