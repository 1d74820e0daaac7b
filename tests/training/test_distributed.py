"""`torchrun --nproc_per_node 2 -m training ...`: DDP over gloo on the CPU.

Two processes each take half of every batch and average gradients, so with the same seed they
must land on the adapter one process trains on the whole batch: the test compares the two.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from core.base.folders import base_model_info
from core.registry import open_registry
from training import reward
from training.config import RewardConfig


def torchrun(args: list[str], settings, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env.update(
        {
            "LORALOOP_DATA_DIR": str(settings.data_dir),
            "LORALOOP_BASE_MODEL": settings.base_model,
            "LORALOOP_BASE_MODEL_ID": "tiny-llama",
            "LORALOOP_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
        }
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training",
        *args,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_two_processes_train_the_same_reward_adapter_as_one(
    settings, demo_files, tmp_path: Path
) -> None:
    common = dict(train_steps=8, batch_size=8, learning_rate=3e-3, seed=11)
    done = torchrun(
        [
            "reward",
            "--adapter",
            "ddp-rm",
            "--data",
            str(demo_files["preferences"]),
            "--train-steps",
            "8",
            "--batch-size",
            "8",
            "--learning-rate",
            "3e-3",
            "--seed",
            "11",
            "--output-dir",
            str(tmp_path / "two"),
            "--metrics-file",
            str(tmp_path / "metrics.jsonl"),
        ],
        settings,
    )
    assert done.stdout.strip().splitlines()[-1] == "ddp-rm@1"  # printed once, by rank 0

    single = RewardConfig(
        adapter="ddp-rm",
        data=str(demo_files["preferences"]),
        register=False,
        output_dir=str(tmp_path / "one"),
        progress=False,
        **common,
    )
    reward.main(single, settings=settings)

    two = load_file(tmp_path / "two" / "adapter_model.safetensors")
    one = load_file(tmp_path / "one" / "adapter_model.safetensors")
    assert two.keys() == one.keys()
    for key in one:  # equal up to float summation order (Adam can amplify it for a few elements)
        gap = (two[key] - one[key]).norm() / one[key].norm().clamp(min=1e-12)
        assert gap < 1e-3, (key, gap.item())

    manifest = open_registry(settings, base_model_info(settings)).resolve("ddp-rm@candidate")
    assert manifest.lineage["world_size"] == 2 and manifest.kind == "reward"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sum('"phase": "train"' in line for line in lines) == 8  # only rank 0 writes the series


@pytest.mark.slow
def test_ppo_under_torchrun(settings, demo_files, tmp_path: Path) -> None:
    from training.shared_base import REWARD, LoraSpec, load_shared_base, lora_config

    shared = load_shared_base(settings)
    shared.add_adapter(REWARD, lora_config("reward", LoraSpec(r=4, alpha=8)))
    shared.save_adapter(REWARD, tmp_path / "rm")
    torchrun(
        [
            "ppo",
            "--adapter",
            "ddp-policy",
            "--reward",
            str(tmp_path / "rm"),
            "--prompts",
            str(demo_files["prompts"]),
            "--train-steps",
            "2",
            "--batch-size",
            "8",
            "--num-minibatches",
            "2",
            "--target-sequence-length",
            "6",
            "--max-eval-prompts",
            "4",
        ],
        settings,
    )
    manifest = open_registry(settings, base_model_info(settings)).resolve("ddp-policy@candidate")
    assert manifest.lineage["world_size"] == 2 and "kl_to_base" in manifest.metrics
