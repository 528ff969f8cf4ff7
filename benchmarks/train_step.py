"""Cost of ONE PPO step and ONE GRPO step, old path vs new path, in one process. Asserts nothing.

    .venv/bin/python benchmarks/train_step.py [--models tiny,smollm2-135m,gemma3-270m]
        [--modes lora,full] [--algos ppo,grpo] [--dtype auto] [--prompt-tokens 512]
        [--completion-tokens 64] [--batch 4] [--group 4] [--ppo-samples 4]
        [--micro-batch-size N] [--warmup] [--out benchmarks/results/train_step]  # -> .json, .md

Per (model, mode, algo) one subprocess loads the model once and times one step on each path,
every path starting from the same weights, with a fresh optimizer:

* ``old`` - the previous code path: ``model.generate(num_return_sequences=n)`` (each prompt
  prefilled ``n`` times, LoRA adapters unmerged; processors set neutral, so it samples the same
  distribution), and every no-grad and update pass over full rows (each row reads its own
  prompt), in the weights' dtype;
* ``new`` - :meth:`Policy.generate` (:func:`memory_r1.llm.hf_decode.decode`: each prompt
  prefilled once for its ``n`` samples, finished rows leave the batch, LoRA folded into the
  weights while sampling) and shared-prompt passes (each prompt once per group, its KV cache
  expanded to the rows), same dtype as ``old``;
* ``new+autocast`` - ``new`` with the precision ``--dtype auto`` resolves to where it differs
  (fp32 weights + bf16 autocast on a CPU with native bf16).

``prepare`` + ``step`` run on the very same batch (the first path's) for every path, with the
same random rewards; generation is timed on the same prompts. Prompts: ``--batch`` synthetic
texts of about ``--prompt-tokens`` tokens (ordinary words, slightly different lengths, so
left padding is exercised), fed as final text. The headline lines, one per configuration::

    smollm2-135m full grpo speedup: <old step_s / new step_s>
    smollm2-135m full grpo speedup with bfloat16 autocast: <old / new+autocast>

Columns: ``gen_s`` (tokens/s = completion tokens sampled / s), ``prep_s`` (the no-grad
passes of ``prepare``: PPO old log-probs + values and reference, GRPO reference),
``upd_s`` (forward + backward + AdamW, one epoch, one minibatch; ``--micro-batch-size N``:
chunks of N rows, groups kept whole), ``step_s`` (the three), ``logp_mismatch`` (sampler vs
recomputed log-probs before the update), ``maxrss`` (peak RSS of the subprocess). LoRA:
r=16, alpha=32, all linear layers; full: every weight trains and the reference is a deep copy.
``tiny``: a random 2-layer hidden-32 Llama over a byte-level BPE trained in-process (nothing
downloaded; it only checks that the script runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MODELS = ("tiny", "smollm2-135m", "gemma3-270m")
MODES = ("lora", "full")
ALGOS = ("ppo", "grpo")
GIB = 1024**3
WORDS = [
    "capital",
    "of",
    "france",
    "?",
    "the",
    "answer",
    "is",
    "paris",
    "rome",
    "oslo",
    "and",
    "then",
    "we",
    "talked",
    "about",
    "memory",
    "Caroline",
    "moved",
    "from",
    "Sweden",
    "to",
    "Boston",
    "in",
    "2021",
    ".",
    "Melanie",
    "paints",
    "sunsets",
    ".",
]


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` in bytes (None without psutil)."""

    def __init__(self, every_s: float = 0.02) -> None:
        try:
            import psutil
        except ImportError:
            psutil = None
        self.proc = psutil.Process() if psutil is not None else None
        self.every, self.peak = every_s, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while self.proc is not None and not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if self.proc is not None:
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def gib(self) -> float | None:
        return self.peak / GIB if self.proc is not None else None


def tiny_bpe_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE trained here on a small corpus (the recipe of tests/test_llm_hf.py)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|end|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>")


def load_base(model: str, dtype: str) -> tuple[Any, Any]:
    """(model, tokenizer): the tiny random Llama, or a catalogue model via HFModel (GGUF)."""
    import torch

    if model == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = tiny_bpe_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=None,
        )
        torch.manual_seed(0)
        return LlamaForCausalLM(config).to(getattr(torch, dtype)).eval(), tok
    from memory_r1.llm.hf import HFModel

    hf = HFModel(model, dtype=dtype)
    return hf.model, hf.tokenizer


def synthetic_prompt(tokenizer: Any, n_tokens: int) -> str:
    """A text of about ``n_tokens`` tokens: ordinary words, repeated, cut after tokenising."""
    text = " ".join(WORDS[i % len(WORDS)] for i in range(n_tokens))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True) or text


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def legacy_generate(
    policy: Any, prompt_texts: list[str], n: int, max_new_tokens: int, temperature: float
) -> Any:
    """The rollout of the previous ``Policy.generate``, kept here as the benchmark's old path.

    One ``model.generate(num_return_sequences=n)`` call: every prompt is prefilled ``n``
    times, adapters stay unmerged. Unlike the original it sets the other logits processors
    neutral explicitly (``repetition_penalty=1.0``, ``min_p``/``typical_p`` off), so it samples
    the same distribution as the new path and only the cost differs.
    """
    import torch
    from transformers import GenerationConfig

    from memory_r1.rl.algorithms.rollout_batch import Batch

    ids, att = policy.encode(prompt_texts)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=True,
        num_return_sequences=n,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        min_p=None,
        typical_p=1.0,
        repetition_penalty=1.0,
        eos_token_id=policy.eos_ids,
        pad_token_id=policy.tokenizer.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    out = policy.model.generate(input_ids=ids, attention_mask=att, generation_config=cfg)
    completion = out.sequences[:, ids.shape[1] :]
    is_eos = torch.isin(completion, torch.tensor(policy.eos_ids, device=completion.device))
    mask = (~((is_eos.long().cumsum(1) - is_eos.long()) > 0)).float()
    logits = torch.stack(out.logits, dim=1).float() / temperature
    logp = logits.gather(-1, completion.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return Batch(
        input_ids=out.sequences,
        attention_mask=torch.cat([att.repeat_interleave(n, 0), mask.long()], 1),
        completion_mask=mask,
        sample_logp=logp * mask,
        prompts=[t for t in prompt_texts for _ in range(n)],
        completions=[""] * len(completion),
        temperature=temperature,
        groups=torch.arange(len(completion)) // n,
        budget=max_new_tokens,
    )


def run_one(model_name: str, mode: str, algo_name: str, args: argparse.Namespace) -> dict:
    """Load once; time one step on the old path, then on the new one (same weights, same
    prompts; prepare + update on the very same batch), and the new one with ``--dtype``'s
    autocast when that differs. Returns the rows and the ratios."""
    import torch

    from memory_r1.llm.hf import resolve_precision
    from memory_r1.rl.algorithms.grpo import GRPO, GRPOConfig
    from memory_r1.rl.algorithms.policy import Policy
    from memory_r1.rl.algorithms.ppo import PPO, PPOConfig

    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype, autocast = resolve_precision(args.dtype, device)
    t0 = time.perf_counter()
    base, tok = load_base(model_name, dtype)
    base.to(device)
    load_s = time.perf_counter() - t0
    ppo = algo_name == "ppo"
    policy = Policy(base, tok, lora=lora_config() if mode == "lora" else None, value_head=ppo, seed=args.seed)
    n_train = sum(p.numel() for p in policy.actor_parameters())
    micro = args.micro_batch_size
    prompts = [synthetic_prompt(tok, args.prompt_tokens + 7 * i) for i in range(args.batch)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n = args.group if not ppo else args.ppo_samples

    def algorithm() -> Any:  # a fresh optimizer each time: every path steps from one state
        if ppo:
            return PPO(policy, PPOConfig(samples_per_prompt=n, micro_batch_size=micro))
        return GRPO(policy, GRPOConfig(group_size=n, micro_batch_size=micro))

    def timed(fn: Any) -> tuple[Any, float]:
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t

    state = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    fixed: dict[str, Any] = {}

    def step(path: str) -> dict[str, Any]:
        policy.model.load_state_dict(state)  # the update of the previous path is undone
        old = path == "old"
        policy.shared_prefix = policy.merge_lora = not old
        policy.autocast = autocast if path == "new+autocast" else None
        algo = algorithm()
        torch.manual_seed(args.seed)
        if old:
            batch, gen_s = timed(lambda: legacy_generate(policy, prompts, n, args.completion_tokens, 1.0))
        else:
            batch, gen_s = timed(lambda: policy.generate(prompts, n, args.completion_tokens, temperature=1.0))
        sampled = batch.completion_mask.sum().item()
        # prepare + update always on the first path's batch: the same rows for every path
        batch = fixed.setdefault("batch", batch)
        batch.rewards = torch.rand(len(batch), generator=torch.Generator().manual_seed(1))
        for k in ("old_logp", "ref_logp", "values", "advantages", "returns"):
            setattr(batch, k, None)
        _, prep_s = timed(lambda: algo.prepare(batch))
        stats, upd_s = timed(lambda: algo.step(batch))
        rows, width = batch.input_ids.shape
        return {
            "path": path,
            "rows": rows,
            "prompt_width": width - batch.width,
            "completion_width": batch.width,
            "completion_mean": sampled / rows,
            "gen_s": gen_s,
            "prep_s": prep_s,
            "upd_s": upd_s,
            "step_s": gen_s + prep_s + upd_s,
            "gen_tok_s": sampled / gen_s,
            "logp_mismatch": stats.get("logp_mismatch"),
        }

    if args.warmup:  # first-call costs (allocator, kernels) out of the timed steps
        policy.generate(prompts[:1], 2, 4)
        legacy_generate(policy, prompts[:1], 2, 4, 1.0)
    paths = ["old", "new"] + (["new+autocast"] if autocast is not None else [])
    with PeakRSS() as rss:
        rows = [step(p) for p in paths]
    by = {r["path"]: r for r in rows}
    ratios = {"speedup": by["old"]["step_s"] / by["new"]["step_s"]}
    if "new+autocast" in by:
        ratios["speedup_autocast"] = by["old"]["step_s"] / by["new+autocast"]["step_s"]
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    common = {
        "model": model_name,
        "mode": mode,
        "algo": algo_name,
        "dtype": dtype,
        "autocast": str(autocast).removeprefix("torch.") if autocast else None,
        "micro_batch_size": micro,
        "device": device,
        "trainable_params": n_train,
        "load_s": load_s,
        "rss_gib": rss.gib,
        "maxrss_gib": maxrss / GIB,
    }
    return {**common, "paths": rows, **ratios}


COLUMNS = (
    "model",
    "mode",
    "algo",
    "path",
    "precision",
    "micro",
    "rows",
    "P+T",
    "comp",
    "gen_s",
    "gen tok/s",
    "prep_s",
    "upd_s",
    "step_s",
    "logp_mismatch",
    "speedup",
    "maxrss",
)


def _cells(r: dict, p: dict) -> list[str]:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    precision = r["dtype"] + (f" + {r['autocast']} autocast" if p["path"] == "new+autocast" else "")
    ratio = {"old": 1.0, "new": r["speedup"]}.get(p["path"], r.get("speedup_autocast"))
    return [
        r["model"],
        r["mode"],
        r["algo"],
        p["path"],
        precision,
        str(r["micro_batch_size"] or "-"),
        str(p["rows"]),
        f"{p['prompt_width']}+{p['completion_width']}",
        f"{p['completion_mean']:.1f}",
        num(p["gen_s"], ".2f"),
        num(p["gen_tok_s"], ".0f"),
        num(p["prep_s"], ".2f"),
        num(p["upd_s"], ".2f"),
        num(p["step_s"], ".2f"),
        num(p["logp_mismatch"], ".1e"),
        f"{ratio:.2f}x",
        f"{r['maxrss_gib']:.2f}G",
    ]


def markdown(rows: list[dict]) -> str:
    """A Markdown pipe table, one row per (configuration, path)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(
                "| "
                + " | ".join(
                    [r["model"], r["mode"], r["algo"], "error: " + r["error"][:80]]
                    + [""] * (len(COLUMNS) - 4)
                )
                + " |"
            )
            continue
        lines += ["| " + " | ".join(_cells(r, p)) + " |" for p in r["paths"]]
    return "\n".join(lines)


def _measure(model: str, mode: str, algo: str) -> dict:
    """One configuration in a fresh subprocess (same flags + ``--one``)."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--one", f"{model},{mode},{algo}"]
    print(f"# {model} {mode} {algo} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if found:
        return json.loads(found[-1][len("RESULT ") :])
    print(proc.stderr[-2000:], file=sys.stderr)
    err = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return {"model": model, "mode": mode, "algo": algo, "error": err}


def _choices(ap: argparse.ArgumentParser, text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    picked = [x for x in text.split(",") if x]
    bad = [x for x in picked if x not in allowed]
    if bad or not picked:
        ap.error(f"{flag}: unknown {bad or 'empty'}; choose from {','.join(allowed)}")
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bfloat16", "float16", "float32"),
        help="auto: bfloat16 on CUDA or a CPU with native bf16, else float32",
    )
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--completion-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4, help="prompts per step")
    ap.add_argument("--group", type=int, default=4, help="GRPO completions per prompt (>= 2)")
    ap.add_argument(
        "--ppo-samples",
        type=int,
        default=4,
        help="PPO completions per prompt (>1 lets PPO share prompts too)",
    )
    ap.add_argument(
        "--micro-batch-size",
        type=int,
        default=None,
        help="rows per forward/backward (gradient accumulation); default: all rows",
    )
    ap.add_argument("--warmup", action="store_true", help="run one untimed step first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default="benchmarks/results/train_step", help="path prefix: writes <out>.json and <out>.md"
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: model,mode,algo in this process
    args = ap.parse_args()
    if args.micro_batch_size is not None and args.micro_batch_size < 1:
        ap.error("--micro-batch-size must be >= 1")

    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one.split(","), args)), flush=True)
        return
    models = _choices(ap, args.models, MODELS, "--models")
    modes = _choices(ap, args.modes, MODES, "--modes")
    algos = _choices(ap, args.algos, ALGOS, "--algos")
    rows = [_measure(m, mode, a) for m in models for mode in modes for a in algos]
    table = markdown(rows)
    print(table)
    for r in rows:  # the headline ratios, one line each
        if "speedup" in r:
            print(f"{r['model']} {r['mode']} {r['algo']} speedup: {r['speedup']:.2f}")
            if "speedup_autocast" in r:
                print(
                    f"{r['model']} {r['mode']} {r['algo']} speedup with "
                    f"{r['autocast']} autocast: {r['speedup_autocast']:.2f}"
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = Path(f"{out}.json"), Path(f"{out}.md")
    settings = {k: v for k, v in vars(args).items() if k not in ("one", "out")}
    json_path.write_text(json.dumps({"args": settings, "rows": rows}, indent=2), encoding="utf-8")
    head = (
        f"# One PPO / GRPO step\n\n`{' '.join(sys.argv[1:]) or '(defaults)'}`; "
        f"settings: {json.dumps(settings)}\n\n"
    )
    md_path.write_text(head + table + "\n", encoding="utf-8")
    print(f"\nwrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
