"""The Memory-R1 RL environments and what they are built from (L3, torch-free).

Both environments satisfy :class:`memory_r1.rl.algorithms.trainer.Env`:
``prompts(batch_size, rng)`` draws episodes uniformly with the caller's ``rng`` (no other
state, so a resumed trainer replays the same stream) and returns ``(prompt, meta)`` pairs;
``score(completions, metas)`` returns one reward in [0, 1] per completion; ``stats()`` reports
the last ``score``. Prompts are :class:`~memory_r1.llm.base.Prompt` objects, which the trainer
renders with the policy's chat template (or :func:`~memory_r1.llm.base.render_completion` for
base models); pass ``render`` (e.g. ``policy.render``) to get final text instead. Both expose
``stops`` and ``budget``: the stop strings and token budget of the agent at inference, which
the trainer's rollouts use, so a rollout ends where inference would.

Module map: ``memory_r1.rl``.
"""
