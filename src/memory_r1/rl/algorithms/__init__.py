"""PPO and GRPO on an HF causal LM (L3, torch): losses, gradient accumulation, the policy and
its rollout batches, the two updates and the training loop (module map: ``memory_r1.rl``)."""
