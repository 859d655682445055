"""A few RL steps at the real Qwen2.5-VL-3B shape in one process (trainer.backend=local: no Ray, no vLLM).

    python scripts/gpu_check.py                          # GPU: full depth, bf16, FSDP2 at world size 1, HF rollout
    python scripts/gpu_check.py --device cpu --layers 2 --small   # the CPU smoke mode the suite runs

``--mode`` picks what runs (``MODES``: ``ttrv``; ``sophia``: one SOPHIA round, :mod:`gpu_check_sophia`). Order of work, each part adding to the summary (printed and,
with ``--json-out FILE``, rewritten) as soon as it finishes, so a timeout keeps every figure measured so far:

1. the memory plan (:mod:`verl.utils.memory_plan`) of the shape and settings below against the free memory,
   BEFORE anything is allocated: it keeps the settings when they fit, else picks the rollout copy asleep
   outside generation, smaller micro-batches, or (``--allow-freeze-vision``) a frozen vision tower, and
   refuses with one ``error:`` line (exit 2) when nothing fits;
2. a random-weight folder shaped like Qwen2.5-VL-3B (:mod:`verl.models.real_shape`, real tokenizer) and
   ``--prompts`` multiple-choice prompts with one ``--image-size``² image each;
3. ``--steps`` steps of the mode (TTRV: gradient checkpointing, ``--votes`` votes, ``--train-votes`` of them
   trained, ``--response-len`` new tokens, shared-prompt forward, token-budget micro-batches, zero-advantage
   groups NOT skipped: random weights make the votes agree, and the check is about the cost of the update),
   each printed when it ends: seconds per phase (``timing_s/*``); tokens/s/GPU as EasyR1 counts them (prompt +
   response tokens of all trained samples / step seconds / GPUs) and over all generated votes; actor MFU as
   verl / EasyR1 estimate it ((6 · dense text parameters · tokens + 12 · Σ seqlen² · head_dim · heads · layers)
   FLOPs of the update / update seconds / peak FLOP/s: a bf16 matmul measured here, and the nominal dense bf16
   peak when the device is known); peak device memory;
4. whether Ray / vLLM were imported (``--bare`` fails if they were) and the installed modules used;
5. the trainer's memory freed, then the shared-prompt ratio from ``scripts/bench_ttrv_step.py`` at the same
   depth (``--quick`` in ``--small`` mode; ``--skip-bench`` to skip) with what remains of the outer time limit
   (``GPU_CHECK_DEADLINE``, seconds since the epoch, set by ``gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHASES = ("gen", "reward", "old_log_prob", "ref", "adv", "update_actor", "update_weights", "step")
NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, no sparsity
QUESTION = ("Look at the image and answer with the option letter only. Which pattern fills most of the image? "
            "Options:\nA. stripes\nB. dots\nC. checkerboard\nD. noise")
TEXT_TOKENS = 64  # chat template + question, beside the image tokens


def ttrv_overrides(args: argparse.Namespace) -> list[str]:
    """The TTRV recipe's settings of the check (votes, trained votes, zero-advantage groups kept)."""
    return [f"actor_rollout_ref.rollout.n_votes={args.votes}", f"actor_rollout_ref.rollout.n={args.train_votes}",
            # random weights: all votes tend to agree on "no answer"; the check measures the update, so keep it
            "actor_rollout_ref.actor.skip_zero_adv_groups=false"]


# mode -> (config folder, config name, mode-specific overrides)
MODES: dict[str, tuple[Path, str, Callable[[argparse.Namespace], list[str]]]] = {
    "ttrv": (ROOT / "recipes" / "ttrv" / "config", "ttrv", ttrv_overrides),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="ttrv", choices=sorted([*MODES, "sophia"]))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--work-dir", default="gpu_check_out", help="model folder, data, logs")
    p.add_argument("--layers", type=int, default=None, help="text layers (default: the published 36)")
    p.add_argument("--vision-layers", type=int, default=None, help="vision layers (default: published 32)")
    p.add_argument("--small", action="store_true",
                   help="CPU smoke shape: width 256 / vision 160, 2 prompts x 4 votes, 112 px, fp32, 2 steps")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--votes", type=int, default=32, help="samples per prompt that vote (TTRV n_votes)")
    p.add_argument("--train-votes", type=int, default=16, help="of them trained on (TTRV n)")
    p.add_argument("--response-len", type=int, default=8)
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--max-tokens", type=int, default=16384,
                   help="tokens per forward/backward (ppo_ / log_prob_max_token_len_per_gpu; shared prompts once)")
    p.add_argument("--allow-freeze-vision", action="store_true", help="the memory plan may freeze the vision tower")
    p.add_argument("--bare", action="store_true", help="fail if Ray or vLLM got imported")
    p.add_argument("--skip-bench", action="store_true", help="do not run scripts/bench_ttrv_step.py")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    if args.small:
        args.prompts, args.votes, args.train_votes, args.image_size = 2, 4, 4, 112
        args.steps = min(args.steps, 2)
    return args


def write_data(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` TTRV-format multiple-choice records with synthetic ``size``² images (labels: metrics only)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    patterns = {"A": (xx // 16) % 2, "B": ((xx % 24 < 8) & (yy % 24 < 8)), "C": ((xx // 32 + yy // 32) % 2),
                "D": rng.random((size, size)) > 0.5}
    records = []
    for i in range(n):
        answer = "ABCD"[i % 4]
        img = (np.stack([patterns[answer]] * 3, -1) * 200 + rng.integers(0, 40, (size, size, 3))).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"p{i:03d}.png")
        records.append({"prompt": f"<image>\n{QUESTION}", "answer": answer, "image_path": f"images/p{i:03d}.png",
                        "source": "gpu_check", "id": f"p{i:03d}"})
    path = folder / "prompts.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def matmul_tflops(device: str, dtype) -> float:
    """Measured dense matmul throughput (TFLOP/s): the denominator of the MFU printed first."""
    import torch

    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device == "cuda" else 3
    for _ in range(2):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def text_flops(config, seqlens: list[int]) -> float:
    """verl / EasyR1 FlopsCounter estimate for one forward + backward of the text model over ``seqlens``."""
    t = config.get_text_config()
    h, inter, layers, heads, kv = (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
                                   t.num_key_value_heads)
    head_dim = h // heads
    per_layer = h * head_dim * (heads + 2 * kv) + heads * head_dim * h + 3 * h * inter
    dense = per_layer * layers + 2 * t.vocab_size * h  # + embedding and lm_head, as verl counts
    tokens = sum(seqlens)
    return 6 * dense * tokens + 12 * sum(s * s for s in seqlens) * head_dim * heads * layers


def third_party_modules() -> list[str]:
    """Top-level installed (site-packages) modules imported so far: what a bare machine must provide."""
    names = set()
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None) or ""
        if "." not in name and ("site-packages" in path or "dist-packages" in path):
            names.add(name)
    return sorted(names)


def seconds_left(margin_s: float = 15.0) -> float | None:
    """Seconds left of the outer time limit (``GPU_CHECK_DEADLINE``) minus ``margin_s``; None without one."""
    deadline = os.environ.get("GPU_CHECK_DEADLINE")
    return None if not deadline else float(deadline) - time.time() - margin_s


def run_bench(args: argparse.Namespace) -> str:
    script = ROOT / "scripts" / "bench_ttrv_step.py"
    if args.skip_bench:
        return "skipped (--skip-bench)"
    if not script.is_file():
        return "n/a (scripts/bench_ttrv_step.py not present)"
    left = seconds_left()
    if left is not None and left < 30:
        return f"skipped ({max(left, 0):.0f} s left of the outer time limit)"
    depth = ["--layers", str(args.layers or 36), "--vision-layers", str(args.vision_layers or 32)]
    cmd = [sys.executable, str(script), "--device", args.device] + (["--quick"] if args.small else depth)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        return f"timed out after {left:.0f} s (what remained of the outer time limit)"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("shared-prompt speed-up")]
    if res.returncode or not lines:
        return f"failed (exit {res.returncode}): {(res.stderr or res.stdout).strip().splitlines()[-1:]}"
    return lines[-1]


class Summary(dict):
    """The check's figures; :meth:`save` rewrites ``--json-out`` after every part."""

    def __init__(self, path: str | None) -> None:
        super().__init__()
        self.path = Path(path) if path else None

    def save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self, indent=2, default=str) + "\n")
            tmp.replace(self.path)


def free_memory_bytes(device: str) -> tuple[int, int]:
    """(free, total) bytes of the device: CUDA's, or the host's available memory on CPU."""
    if device == "cuda":
        import torch

        torch.cuda.init()
        return tuple(int(x) for x in torch.cuda.mem_get_info())  # type: ignore[return-value]
    info = dict(ln.split(":", 1) for ln in Path("/proc/meminfo").read_text().splitlines() if ":" in ln)
    kib = lambda key: int(info[key].split()[0]) * 1024  # noqa: E731
    return kib("MemAvailable"), kib("MemTotal")


def load_check_config(args: argparse.Namespace, folder: Path, data: Path, extra: list[str]):
    """The finalized config of the check's run (``extra``: the memory plan's overrides)."""
    from verl.config.loader import load_config

    config_dir, config_name, mode_overrides = MODES[args.mode]
    dtype = "float32" if args.small else "bfloat16"
    work = Path(args.work_dir).resolve()
    overrides = [
        f"actor_rollout_ref.model.path={folder}", f"data.train_files=[{data}]", f"data.val_files=[{data}]",
        f"data.train_batch_size={args.prompts}", f"data.max_response_length={args.response_len}",
        "data.max_prompt_length=4096", "actor_rollout_ref.rollout.name=hf",
        f"actor_rollout_ref.model.dtype={dtype}", f"actor_rollout_ref.actor.fsdp.param_dtype={dtype}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=true",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={args.max_tokens}",
        f"actor_rollout_ref.actor.log_prob_max_token_len_per_gpu={args.max_tokens}",
        "actor_rollout_ref.rollout.free_cache_engine=false",  # the plan puts it to sleep when it must
        f"trainer.device={args.device}", "trainer.backend=local", "trainer.n_gpus_per_node=1", "trainer.nnodes=1",
        f"trainer.total_training_steps={args.steps}", "trainer.val_before_train=false", "trainer.test_freq=0",
        "trainer.save_freq=0", f"trainer.default_local_dir={work / 'ckpt'}", f"trainer.log_dir={work / 'logs'}",
        "trainer.logger=[jsonl]", f"trainer.experiment_name=gpu_check_{args.mode}", *mode_overrides(args)]
    return load_config(config_name, overrides + extra, config_dir=str(config_dir))


def check_plan(args: argparse.Namespace, cfg, counts, free: int, total: int):
    """The memory plan of the check's config against ``free`` bytes: ``(plan, changes)``."""
    from verl.utils.memory_plan import choose_settings, settings_from_config

    patches = (args.image_size // 14) ** 2
    settings = settings_from_config(cfg, prompt_tokens=patches // 4 + TEXT_TOKENS, image_patches_per_prompt=patches,
                                    card_bytes=total)
    return choose_settings(counts, settings, free, args.allow_freeze_vision)


def plan_overrides(args: argparse.Namespace, cfg, counts, summary: Summary) -> list[str]:
    """Print the memory plan of ``cfg`` (nothing allocated yet) and return the overrides it picked;
    ``SystemExit(2)`` with one ``error:`` line when nothing fits."""
    free, total = free_memory_bytes(args.device)
    plan, changes = check_plan(args, cfg, counts, free, total)
    print("\n".join(plan.lines()) + ("\n  changed to fit: " + "; ".join(changes) if changes else ""), flush=True)
    summary["memory_plan"] = {"fits": plan.fits, "free_gib": free / 2**30, "peak_gib": plan.peak_bytes / 2**30,
                              "peak_phase": plan.peak_phase, "changes": changes,
                              "parts_gib": {k: v / 2**30 for k, v in plan.parts.items()},
                              "phases_gib": {k: v / 2**30 for k, v in plan.phases.items()}}
    summary.save()
    if not plan.fits:
        print(f"error: {plan.refusal()}", file=sys.stderr)
        raise SystemExit(2)
    s = plan.settings
    out = [f"actor_rollout_ref.rollout.free_cache_engine={str(s.rollout_sleeps).lower()}",
           f"actor_rollout_ref.model.freeze_vision_tower={str(s.freeze_vision_tower).lower()}"]
    if any("HF generation" in c for c in changes):
        out.append(f"actor_rollout_ref.rollout.micro_batch_size={s.generation_prompts}")
    if any("token budget" in c for c in changes):
        out += [f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={s.update_tokens}",
                f"actor_rollout_ref.actor.log_prob_max_token_len_per_gpu={s.log_prob_tokens}"]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from verl.data.formats import load_records
    from verl.logging.tracker import Tracker
    from verl.models.real_shape import build_real_shape, shape_config
    from verl.trainer.fit import Trainer
    from verl.utils.memory_plan import model_counts

    summary = Summary(args.json_out)
    work = Path(args.work_dir).resolve()
    t0 = time.perf_counter()
    small = {"hidden": 256, "vision_hidden": 160} if args.small else {}
    dtype = "float32" if args.small else "bfloat16"
    shape = {"layers": args.layers, "vision_layers": args.vision_layers, "full": args.layers is None, **small}
    folder, data = work / "model", write_data(work / "data", args.prompts, args.image_size)
    counts = model_counts(shape_config("qwen2.5-vl-3b", **shape))
    summary.update({"mode": args.mode, "model": "qwen2.5-vl-3b shape", "votes": args.votes,
                    "train_votes": args.train_votes})
    if args.mode == "sophia":
        return sophia_mode(args, summary, folder, data, shape, dtype, t0)
    extra = plan_overrides(args, load_check_config(args, folder, data, []), counts, summary)
    cfg = load_check_config(args, folder, data, extra)
    folder = build_real_shape("qwen2.5-vl-3b", folder, dtype=getattr(torch, dtype), device=args.device, **shape)
    summary["build_s"] = time.perf_counter() - t0
    summary["real_shape"] = json.loads((folder / "real_shape.json").read_text())
    summary.save()
    if args.device == "cuda":
        torch.cuda.empty_cache()  # the build's weights are gone; start the run from a clean allocator
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in name), None)
    summary.update({"device": name, "nominal_bf16_tflops": nominal, "steps": []})
    records = load_records([data])
    tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, ["jsonl"], log_dir=cfg.trainer.log_dir,
                      config=cfg)
    trainer = Trainer(cfg, records, [], tracker)
    seqlens: list[list[int]] = []
    vote_tokens: list[int] = []
    log = tracker.log

    def log_step(metrics, step):
        kept = log(metrics, step)
        if "timing_s/step" in kept and seqlens:
            summary["steps"].append(step_figures(step, kept, config, seqlens[-1], vote_tokens[-1], nominal))
            summary["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
            summary["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30 if args.device == "cuda" else None
            print(step_line(summary["steps"][-1]), flush=True)
            summary.save()
        return kept

    tracker.log = log_step
    try:
        trainer.init_workers()
        update, generate = trainer.wg.update_actor, trainer.wg.generate_sequences

        def spy_update(batch):
            seqlens.append([int(x) for x in batch.batch["attention_mask"].sum(-1)])
            return update(batch)

        def spy_generate(prompts):
            out = generate(prompts)
            vote_tokens.append(int(out.batch["attention_mask"].sum()))
            return out

        trainer.wg.update_actor, trainer.wg.generate_sequences = spy_update, spy_generate
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.fit()
    finally:
        trainer.close()
        tracker.finish()
    del trainer
    gc.collect()
    peak = matmul_tflops(args.device, torch.bfloat16 if args.device == "cuda" else torch.float32)
    for st in summary["steps"]:
        st["mfu_actor_measured_peak"] = st.pop("update_flops_per_s") / (peak * 1e12)
    steady = summary["steps"][1:] or summary["steps"]
    summary.update({
        "matmul_tflops": peak,
        "mean_after_warmup": {k: float(np.mean([s[k] for s in steady])) for k in steady[0]
                              if k != "step" and steady[0][k] is not None},
        "ray_imported": sys.modules.get("ray") is not None, "vllm_imported": sys.modules.get("vllm") is not None,
        "third_party_modules": third_party_modules(), "total_s": time.perf_counter() - t0,
        "shared_prompt": "not run yet"})
    summary.save()
    if args.device == "cuda":
        torch.cuda.empty_cache()  # the benchmark is another process: give it the memory back
    summary["shared_prompt"] = run_bench(args)
    summary.save()
    print_summary(summary)
    if args.bare and (summary["ray_imported"] or summary["vllm_imported"]):
        raise SystemExit("gpu_check: Ray or vLLM was imported on the local-backend path")
    return summary


def step_figures(step: int, row: dict, config, lens: list[int], votes: int, nominal: float | None) -> dict:
    """One step's figures from its metrics row (MFU against the measured peak is filled in later)."""
    flops_per_s = text_flops(config, lens) / row["timing_s/update_actor"]
    return {"step": int(step),
            **{f"{p}_s": row[f"timing_s/{p}"] for p in PHASES if f"timing_s/{p}" in row},
            "tokens": row["perf/total_num_tokens"], "tokens_per_s_per_gpu": row["perf/total_num_tokens"] / row["timing_s/step"],
            "tokens_all_votes": votes, "tokens_all_votes_per_s_per_gpu": votes / row["timing_s/step"],
            "update_flops_per_s": flops_per_s,
            "mfu_actor_nominal_peak": flops_per_s / (nominal * 1e12) if nominal else None}


def step_line(st: dict) -> str:
    phases = " ".join(f"{p}={st[f'{p}_s']:.2f}s" for p in PHASES if f"{p}_s" in st)
    return f"step {st['step']}: {phases}; {st['tokens_per_s_per_gpu']:.1f} tokens/s/GPU"


def sophia_mode(args: argparse.Namespace, summary: Summary, folder: Path, data: Path, shape: dict, dtype: str,
                t0: float) -> dict:
    """``--mode sophia``: build the policy, run one round (:mod:`gpu_check_sophia`), report."""
    import gpu_check_sophia
    import torch

    from verl.models.real_shape import build_real_shape

    folder = build_real_shape("qwen2.5-vl-3b", folder, dtype=getattr(torch, dtype), device=args.device, **shape)
    summary.update({"build_s": time.perf_counter() - t0, "device": torch.cuda.get_device_name()
                    if args.device == "cuda" else "cpu",
                    "real_shape": json.loads((folder / "real_shape.json").read_text())})
    summary.save()
    gpu_check_sophia.run(args, summary, folder, data)
    summary.update({"ray_imported": sys.modules.get("ray") is not None, "vllm_imported": sys.modules.get("vllm") is not None,
                    "third_party_modules": third_party_modules(), "total_s": time.perf_counter() - t0})
    summary.save()
    gpu_check_sophia.print_summary(summary)
    if args.bare and (summary["ray_imported"] or summary["vllm_imported"]):
        raise SystemExit("gpu_check: Ray or vLLM was imported on the local-backend path")
    return summary


def print_summary(s: dict) -> None:
    rs = s["real_shape"]
    print(f"\n=== gpu_check ({s['mode']}) on {s['device']}: Qwen2.5-VL-3B shape, {rs['layers']}/{rs['published_layers']} "
          f"text layers, {rs['vision_layers']}/{rs['published_vision_layers']} vision layers, hidden {rs['hidden']}, "
          f"{rs['dtype']} (built in {s['build_s']:.1f} s) ===")
    cols = [f"{p}_s" for p in PHASES if f"{p}_s" in s["steps"][0]]
    print("step " + " ".join(f"{c:>14s}" for c in cols) + "   tokens/s/GPU   MFU(actor)")
    for st in s["steps"]:
        print(f"{st['step']:4d} " + " ".join(f"{st[c]:14.3f}" for c in cols)
              + f"   {st['tokens_per_s_per_gpu']:12.1f}   {100 * st['mfu_actor_measured_peak']:6.2f} %")
    m = s["mean_after_warmup"]
    print(f"after warm-up: {m['step_s']:.3f} s/step, {m['tokens_per_s_per_gpu']:.1f} tokens/s/GPU "
          f"(EasyR1 count: prompt + response tokens of the trained samples; EasyR1's published 3B: 1,800; goal "
          f"3,600); {m['tokens_all_votes_per_s_per_gpu']:.1f} counting all {s['votes']} votes per prompt")
    nominal = (f", {100 * m['mfu_actor_nominal_peak']:.2f} % of the nominal {s['nominal_bf16_tflops']:.0f}"
               if "mfu_actor_nominal_peak" in m else "")
    print(f"actor MFU: {100 * m['mfu_actor_measured_peak']:.2f} % of the measured {s['matmul_tflops']:.1f} TFLOP/s "
          f"matmul{nominal}")
    plan = s["memory_plan"]
    print(f"memory plan: peak {plan['peak_gib']:.1f} GiB ({plan['peak_phase']}) of {plan['free_gib']:.1f} GiB free"
          + (f"; changed to fit: {'; '.join(plan['changes'])}" if plan["changes"] else ""))
    if s["peak_memory_gib"] is not None:
        print(f"peak memory: {s['peak_memory_gib']:.1f} GiB allocated, {s['peak_reserved_gib']:.1f} GiB reserved")
    print(f"ray imported: {s['ray_imported']}, vllm imported: {s['vllm_imported']}; installed modules used: "
          f"{' '.join(s['third_party_modules'])}")
    print(f"shared-prompt: {s['shared_prompt']}")
    print(f"total: {s['total_s']:.1f} s")


if __name__ == "__main__":
    main()
