"""loraloop's training: reward model, PPO and DPO on LoRA adapters, and the job runner."""
