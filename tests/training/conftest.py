"""Fixtures for the learning tests: a tiny Llama that speaks the synthetic task's language (the
"SFT base", see training/synthetic.py for why), its preference data, and one trained reward
model shared by the PPO and DPO tests. The SFT base keeps the tiny architecture: 2 layers, 64
wide.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.settings import Settings
from training import reward
from training.config import RewardConfig
from training.run import RunResult
from training.synthetic import make_demo_base, write_demo_data


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tiny models gain nothing from a second thread, and on a machine whose cores other
    jobs share, OpenMP's spinning threads can stall a step for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sft_base_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_base(tiny_llama_dir, tmp_path_factory.mktemp("sft") / "tiny-llama-sft")


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_demo_data(tmp_path_factory.mktemp("demo-data"), n_pairs=400, n_prompts=200)


@pytest.fixture(scope="session")
def sft_settings(sft_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings on the SFT base with a registry shared by the session's learning tests."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("sft-data"),
        base_model=str(sft_base_dir),
        base_model_id="tiny-llama-sft",
        device="cpu",
        dtype="float32",
        alias_poll_seconds=0,
    )


@pytest.fixture(scope="session")
def reward_run(
    sft_settings: Settings, demo_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> RunResult:
    """One reward model on the SFT base, registered as demo-rm@1 (production)."""
    config = RewardConfig(
        adapter="demo-rm",
        data=str(demo_files["preferences"]),
        train_steps=150,
        batch_size=16,
        learning_rate=3e-3,
        eval_fraction=0.2,
        promote=True,
        gates={"min_reward_accuracy": 0.9},
        metrics_file=str(tmp_path_factory.mktemp("metrics") / "reward.jsonl"),
        progress=False,
    )
    result = reward.main(config, settings=sft_settings)
    assert result is not None
    return result
