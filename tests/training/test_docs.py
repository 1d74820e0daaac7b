"""docs/training.md's round runs as written: every ```bash block, in order, in one shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


@pytest.mark.slow
def test_the_documented_round_works_as_written(tmp_path: Path) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env["PATH"] = (
        f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python`, `torchrun`
    )
    env["OMP_NUM_THREADS"] = "1"
    script = "set -euo pipefail\n" + "\n".join(blocks)
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]

    home = tmp_path / "loraloop-round"
    settings = Settings(data_dir=home, base_model=str(home / "demo-base"), device="cpu")
    registry = open_registry(settings, base_model_info(settings))
    assert registry.aliases("demo") == {"candidate": 2, "production": 1}  # DPO lost to PPO's demo@1
    ppo = registry.manifest("demo", 1)
    assert ppo.metrics["reward_gain"] >= 2 and ppo.metrics["kl_to_base"] <= 20
    assert (
        ppo.lineage["algorithm"] == "ppo"
        and registry.manifest("demo", 2).lineage["parent"] == "demo@1"
    )
    rm = registry.resolve("demo-rm@production")
    assert rm.metrics["reward_accuracy"] >= 0.9 and rm.lineage["data"]["preferences"]["snapshot_id"]
    assert registry.manifest("demo-rm", 2).lineage["world_size"] == 2
