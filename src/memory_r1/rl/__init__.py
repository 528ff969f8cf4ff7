"""Reinforcement learning of the Memory-R1 agents (L3): our own compact PPO and GRPO.

Package map (nothing here imports ``eval``):

* ``algorithms`` - the learning side, torch:

  - ``losses`` - masked statistics, GAE, group advantages, KL estimators, clipped policy and
    value losses (pure torch);
  - ``accumulation`` - minibatches and micro-batches, gradient accumulation, optimizer steps;
  - ``rollout_batch`` - the ``Batch`` of token ids, masks and the tensors the updates fill in;
  - ``policy`` - an HF causal LM (+ LoRA, + value head) with rollouts and completion
    log-probs; LoRA merged for generation; decoding is ``llm.hf_decode.decode``, the loop
    inference uses;
  - ``scoring`` - the log-prob passes over completion positions, each prompt of a group run
    once (its KV cache expanded to the G completions);
  - ``ppo`` / ``grpo`` - one config and one update each, stating how they depart from the papers;
  - ``trainer`` - the shared loop: rollouts generator, update, metrics, checkpoints;

* ``envs`` - the episodes side, torch-free:

  - ``answer`` / ``manager`` - the two RL environments (prompts and retrieval from
    ``agents.context``, as in the pipeline);
  - ``rewards`` - EM / F1 rewards over ``agents.answer.parse_answer`` (the reported metric);
  - ``evidence`` - which questions a turn or a shown memory is evidence for;
  - ``snapshots`` - the Manager's bank-snapshot cache;
  - ``builders`` - banks (pipeline | LoCoMo observations), Manager snapshots and the envs
    built on them;

* ``sft`` - Memory-SFT: ``data`` (teacher examples) and ``train`` (the behaviour-cloning loop);
* ``monitor`` - metrics.jsonl + TensorBoard scalars, the rich progress bar, the metric plots;
* ``validate`` - greedy validation (checkpoint choice) and ``eval answer-agent`` scoring;
* ``adapter_export`` - trained checkpoints as shippable LoRA adapters (PEFT + GGUF) and cards;
* ``tiny`` - a tiny random Llama and a toy answer task for tests and smoke runs.

Importing ``memory_r1.rl`` or one of its subpackages imports nothing heavy; torch comes with
the modules of ``algorithms`` (and ``sft.train``, ``validate``, ``adapter_export``, ``tiny``).
"""
