"""Cost of ONE PPO step and ONE GRPO step per model and fine-tuning mode. Prints numbers; asserts
nothing.

    .venv/bin/python benchmarks/train_step.py [--models tiny,smollm2-135m,gemma3-270m]
        [--modes lora,full] [--algos ppo,grpo] [--dtype bfloat16] [--prompt-tokens 512]
        [--completion-tokens 64] [--batch 4] [--group 4] [--warmup] [--json out.json]

One step is the real code path of :mod:`memory_r1.rl.trainer` minus the environment:
``Policy.generate`` (one ``generate`` call; GRPO samples ``--group`` completions per prompt, PPO
one) -> a random reward in [0, 1) per completion -> ``algo.prepare`` (no-grad forwards: PPO's
old log-probs + values and the reference; GRPO's reference) -> ``algo.step`` (forward, backward,
AdamW; one epoch, one minibatch). The prompt is a fixed synthetic text of about
``--prompt-tokens`` tokens (repeated vocabulary words, re-tokenised; the real width is
reported), fed as final text (no chat template). Rows per step: PPO ``batch``, GRPO
``batch x group``.

Columns: ``gen_s`` generation; ``prep_s`` the no-grad prepare forwards; ``upd_s`` the update
(``algo.step``); ``tok/s`` = rows x (prompt width + completion width) / ``upd_s`` (every
position of the padded batch goes through forward and backward); ``comp`` mean completion
length actually sampled (EOS may end it early; generation time depends on it, update time
does not); ``rss_step`` peak RSS sampled every 20 ms during the step; ``maxrss`` the process's
lifetime peak (includes loading: GGUF de-quantisation); ``cuda_peak`` torch.cuda
max_memory_allocated (CUDA only). Each (model, mode, algo) runs in a fresh subprocess, one
after another, so memory figures do not mix. LoRA: r=16, alpha=32, dropout 0, all linear
layers except the LM head; the reference is the adapter-disabled model. Full: every weight
trains; the reference is a frozen deep copy (memory x2). ``tiny`` is the 2-layer hidden-32
random Llama of :mod:`memory_r1.rl.tiny` (toy word vocabulary) with room for the prompt.

Measured on 2-core CPU (shared with another job; noisy), date 2026-11-24, bf16, no warmup,
``--models tiny,smollm2-135m --modes lora,full --prompt-tokens 128 --completion-tokens 32
--batch 2 --group 4``:

    model         mode  algo  rows  P+T     comp  gen_s  prep_s  upd_s  tok/s  rss_step  maxrss
    tiny          lora  ppo   2     128+29  29.0  0.12   0.02    0.02   12844  0.44G     0.44G
    tiny          lora  grpo  8     128+31  17.0  0.10   0.01    0.05   26520  0.45G     0.45G
    tiny          full  ppo   2     128+29  29.0  0.06   0.01    0.03   11859  0.43G     0.43G
    tiny          full  grpo  8     128+31  17.0  0.08   0.01    0.04   28948  0.44G     0.44G
    smollm2-135m  lora  ppo   2     128+32  32.0  7.34   4.20    5.71   56     1.38G     1.38G
    smollm2-135m  lora  grpo  8     128+32  32.0  14.03  7.74    21.99  58     3.10G     3.10G
    smollm2-135m  full  ppo   2     128+32  32.0  4.67   4.56    6.46   50     1.91G     1.95G
    smollm2-135m  full  grpo  8     128+32  32.0  12.62  7.36    24.08  53     2.43G     2.44G

The timings swing 2-8x with the other job's load: in one contended run the tiny full steps
took 4-6 s instead of 0.1 s and SmolLM2 LoRA PPO 13.9 / 14.8 / 47.7 s and GRPO 65.9 / 18.6 /
36.5 s (gen / prep / upd), while the rows above come from quieter runs. Read them as orders of
magnitude. SmolLM2's update runs at ~50-60 tok/s in either mode at this size. LoRA is not
cheaper here: the adapters (fp32, unmerged, on every linear layer) add work to each decode
step and to the update. Gemma 3 270M was not run: it loads in ~45 s per subprocess and steps
about 2x slower than SmolLM2 (models.md), so a whole Gemma sweep (LoRA and full) would not
have finished in the time there was. models.md measured fp32 full fine-tuning at 15.4 GiB, so
bf16 full with its frozen reference should fit in 24 GiB, but nobody has checked that.
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
from typing import Any

MODELS = ("tiny", "smollm2-135m", "gemma3-270m")
GIB = 1024**3


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` in bytes over the ``with`` block."""

    def __init__(self, every_s: float = 0.02) -> None:
        import psutil

        self.proc, self.every, self.peak = psutil.Process(), every_s, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def load_base(model: str, dtype: str) -> tuple[Any, Any]:
    """(model, tokenizer): the tiny random Llama, or a catalogue model via HFModel (GGUF)."""
    import torch

    if model == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        from memory_r1.rl.tiny import tiny_tokenizer, toy_words

        torch.set_num_threads(os.cpu_count() or 1)
        tok = tiny_tokenizer(toy_words(), chat=False)
        hidden = 32  # tiny_llama's shape, with positions for a long synthetic prompt
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=8192, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, bos_token_id=None,
        )
        torch.manual_seed(0)
        return LlamaForCausalLM(config).to(getattr(torch, dtype)).eval(), tok
    from memory_r1.llm.hf import HFModel

    hf = HFModel(model, dtype=dtype)
    return hf.model, hf.tokenizer


def synthetic_prompt(tokenizer: Any, n_tokens: int) -> str:
    """A text of about ``n_tokens`` tokens: ordinary vocabulary words, repeated, re-tokenised."""
    special = set(tokenizer.all_special_tokens)
    words = [w for w in ("capital of france ? the answer is paris rome oslo and then "
                         "we talked about memory").split()]
    known = [w for w in words if tokenizer.convert_tokens_to_ids(w) != tokenizer.unk_token_id
             or tokenizer.unk_token_id is None] or words
    text = " ".join(known[i % len(known)] for i in range(n_tokens))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    out = tokenizer.decode(ids, skip_special_tokens=True)
    return out if out and not set(out.split()) <= special else text


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def run_one(model_name: str, mode: str, algo_name: str, args: argparse.Namespace) -> dict:
    """Load, build the policy and algorithm, time one step (after an optional warm-up step)."""
    import torch

    from memory_r1.rl.grpo import GRPO, GRPOConfig
    from memory_r1.rl.policy import Policy
    from memory_r1.rl.ppo import PPO, PPOConfig

    t0 = time.perf_counter()
    base, tok = load_base(model_name, args.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base.to(device)
    load_s = time.perf_counter() - t0
    ppo = algo_name == "ppo"
    policy = Policy(base, tok, lora=lora_config() if mode == "lora" else None, value_head=ppo)
    n_train = sum(p.numel() for p in policy.actor_parameters())
    algo: Any = PPO(policy, PPOConfig()) if ppo else GRPO(policy, GRPOConfig(group_size=args.group))
    n = algo.samples_per_prompt
    prompts = [synthetic_prompt(tok, args.prompt_tokens)] * args.batch
    torch.manual_seed(args.seed)

    def step() -> dict[str, float]:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        t = time.perf_counter()
        batch = policy.generate(prompts, n, args.completion_tokens, temperature=1.0)
        sync()
        gen_s = time.perf_counter() - t
        batch.rewards = torch.rand(len(batch), device=policy.device)  # no environment
        t = time.perf_counter()
        algo.prepare(batch)
        sync()
        prep_s = time.perf_counter() - t
        t = time.perf_counter()
        algo.step(batch)
        sync()
        upd_s = time.perf_counter() - t
        rows, width = batch.input_ids.shape
        t_width = batch.completion_mask.shape[1]
        return {"gen_s": gen_s, "prep_s": prep_s, "upd_s": upd_s, "rows": rows,
                "prompt_width": width - t_width, "completion_width": t_width,
                "completion_mean": batch.completion_mask.sum(1).mean().item(),
                "tokens_per_s": rows * width / upd_s}

    if args.warmup:
        step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        row = step()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"model": model_name, "mode": mode, "algo": algo_name, "dtype": args.dtype,
            "device": device, "trainable_params": n_train, "load_s": load_s, **row,
            "rss_step_gib": rss.peak / GIB, "maxrss_gib": maxrss / GIB,
            "cuda_peak_gib": (torch.cuda.max_memory_allocated() / GIB
                              if device == "cuda" else None)}


def table(rows: list[dict]) -> str:
    head = ("model", "mode", "algo", "rows", "P+T", "comp", "gen_s", "prep_s", "upd_s", "tok/s",
            "rss_step", "maxrss", "cuda_peak")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append((r["model"], r["mode"], r["algo"], "error: " + r["error"][:60]))
            continue
        cuda = "-" if r["cuda_peak_gib"] is None else f"{r['cuda_peak_gib']:.2f}G"
        lines.append((r["model"], r["mode"], r["algo"], str(r["rows"]),
                      f"{r['prompt_width']}+{r['completion_width']}",
                      f"{r['completion_mean']:.1f}", f"{r['gen_s']:.2f}", f"{r['prep_s']:.2f}",
                      f"{r['upd_s']:.2f}", f"{r['tokens_per_s']:.0f}",
                      f"{r['rss_step_gib']:.2f}G", f"{r['maxrss_gib']:.2f}G", cuda))
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2-135m,gemma3-270m")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--algos", default="ppo,grpo")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--completion-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4, help="prompts per step")
    ap.add_argument("--group", type=int, default=4, help="GRPO completions per prompt (>= 2)")
    ap.add_argument("--warmup", action="store_true", help="run one untimed step first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows to this JSON file")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: model,mode,algo in this process
    args = ap.parse_args()

    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one.split(","), args)), flush=True)
        return
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {MODELS}")
    rows: list[dict] = []
    for model in models:
        for mode in args.modes.split(","):
            for algo in args.algos.split(","):
                # the child prints one RESULT line and returns before --json is read
                cmd = [sys.executable, __file__, *sys.argv[1:], "--one", f"{model},{mode},{algo}"]
                print(f"# {model} {mode} {algo} ...", file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True)
                found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if found:
                    rows.append(json.loads(found[-1][len("RESULT "):]))
                else:
                    err = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
                    rows.append({"model": model, "mode": mode, "algo": algo, "error": err})
                    print(proc.stderr[-2000:], file=sys.stderr)
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "one"},
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
