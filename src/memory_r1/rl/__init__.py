"""Reinforcement learning of the Memory-R1 agents (L3): our own compact PPO and GRPO.

Module map (nothing here imports ``eval``):

* ``algorithms`` - pure torch: masked statistics, GAE, group advantages, KL estimators,
  clipped policy and value losses;
* ``rewards`` - EM / F1 rewards over ``agents.formats.parse_answer`` (the reported metric);
* ``policy`` - an HF causal LM (+ LoRA, + value head) with rollouts and completion log-probs:
  each prompt is run once per group (its KV cache expanded to the G completions) in
  generation, the reference pass and the update; LoRA merged for generation; decoding is
  ``llm.hf_decode.decode``, the loop inference uses;
* ``ppo`` / ``grpo`` - one config and one update each, stating how they depart from the papers;
* ``trainer`` - the shared loop: rollouts generator, update, metrics, checkpoints, plots;
* ``monitor`` - metrics.jsonl + TensorBoard scalars, the rich progress bar;
* ``validate`` - greedy validation (checkpoint choice) and ``eval answer-agent`` scoring;
* ``episodes`` - banks (pipeline | LoCoMo observations) and Manager snapshots for the envs;
* ``envs`` / ``snapshots`` - the two RL environments (prompts and retrieval from
  ``agents.context``, as in the pipeline) and the Manager's bank-snapshot cache;
* ``sft`` / ``sft_train`` - Memory-SFT teacher examples and the behaviour-cloning loop;
* ``run`` - the CLI's end-to-end runs (sft, train, eval answer-agent);
* ``tiny`` - a tiny random Llama and a toy answer task for tests and smoke runs.

Importing ``memory_r1.rl`` imports nothing heavy; torch comes with the submodules.
"""
