"""Training jobs small enough for a test: DPO parameters that train in seconds on the tiny
Llama, and the settings of a server whose local worker picks jobs up at once."""

from __future__ import annotations

from core.settings import Settings

TINY_DPO = {"batch_size": 4, "target_sequence_length": 4, "prompt_sequence_length": 16,
            "max_eval_prompts": 2, "eval_fraction": 0.25, "lora_rank": 2}


def with_worker(settings: Settings) -> Settings:
    """The settings of a server that starts its local job worker, polling often so that a
    tiny job ends in seconds."""
    return settings.model_copy(update={
        "start_worker": True, "worker_poll_seconds": 0.2, "job_heartbeat_seconds": 0.5,
        "job_heartbeat_timeout_seconds": 30.0, "job_cancel_grace_seconds": 5.0,
    })
