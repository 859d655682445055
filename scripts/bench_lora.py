"""Benchmark: LoRA vs full fine-tuning on the same TTRV run (trainable parameters, worker peak memory, step time).

Each setting runs in its own process (``trainer.backend=local``: the worker lives in that process, so its
peak resident memory is the worker's), ``--steps`` GRPO steps on the digits noise split with the KL loss on
(full fine-tuning then holds a reference copy; LoRA's reference is the base with adapters off). The
default model is a reduced Qwen2.5-VL-3B shape (:mod:`verl.models.real_shape`: 2 + 2 layers, text width
512, the real 151,936-token vocabulary), random weights.

    python scripts/bench_lora.py                 # builds the model and the digits data in a temp folder
    python scripts/bench_lora.py --model checkpoints/tiny_base/qwen2_5_vl --data data/digits --steps 4

The last line reads ``LoRA rank R: X% of the parameters trainable, peak memory Y× full fine-tuning``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(model: str, data: str, rank: int, steps: int) -> dict:
    from verl.config.loader import load_config
    from verl.data.formats import load_records
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    files = f"[{Path(data) / 'test_noise_open.json'}]"
    out = Path(tempfile.mkdtemp(prefix="bench_lora_"))
    cfg = load_config("ttrv_cpu_tiny", [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
        "data.train_batch_size=4", "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.name=hf",
        "trainer.backend=local", "trainer.n_gpus_per_node=1", "trainer.val_before_train=false",
        "trainer.test_freq=-1", f"trainer.total_training_steps={steps}", "actor_rollout_ref.actor.use_kl_loss=true",
        f"actor_rollout_ref.model.lora_rank={rank}", f"trainer.default_local_dir={out / 'ckpt'}",
        f"trainer.log_dir={out / 'logs'}", "trainer.logger=[jsonl]",
    ], config_dir=str(ROOT / "recipes" / "ttrv" / "config"))
    recs = load_records([Path(data) / "test_noise_open.json"])[: 4 * steps]
    tracker = Tracker("bench", f"lora{rank}", [], log_dir=out / "logs", config=cfg)
    trainer = Trainer(cfg, recs, [], tracker)
    trainer.init_workers()
    times = []
    for step in range(1, steps + 1):
        trainer.global_step = step
        t0 = time.perf_counter()
        trainer.train_step(recs[4 * (step - 1): 4 * step])
        times.append(time.perf_counter() - t0)
    info = trainer.worker_info[0]
    trainer.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rank": rank, "trainable": info["trainable_params"], "total": info["total_params"],
            "peak_rss_mb": peak_mb, "step_s": sorted(times)[len(times) // 2]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: reduced Qwen2.5-VL-3B shape)")
    p.add_argument("--data", default=None, help="digits folder (default: built in a temp folder)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.model, a.data, a.child, a.steps)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_lora_"))
    if a.model is None:
        from verl.models.real_shape import build_real_shape

        a.model = str(build_real_shape("qwen2.5-vl-3b", tmp / "model", layers=2, vision_layers=2, hidden=512))
    if a.data is None:
        from verl.data.digits import build_digits_dataset

        build_digits_dataset(tmp / "digits", seed=0)
        a.data = str(tmp / "digits")
    rows = []
    for rank in (0, a.rank):
        cmd = [sys.executable, __file__, "--model", a.model, "--data", a.data, "--steps", str(a.steps),
               "--child", str(rank)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    print(f"model {a.model}, {a.steps} steps, 4 prompts x 4 samples")
    print(f"{'setting':>16s} {'trainable':>12s} {'total':>12s} {'peak RSS MB':>12s} {'step s':>8s}")
    for r in rows:
        name = "full fine-tune" if r["rank"] == 0 else f"LoRA rank {r['rank']}"
        print(f"{name:>16s} {r['trainable']:12,d} {r['total']:12,d} {r['peak_rss_mb']:12.0f} {r['step_s']:8.2f}")
    full, lora = rows
    print(f"LoRA rank {a.rank}: {100 * lora['trainable'] / lora['total']:.2f}% of the parameters trainable, "
          f"peak memory {lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}x full fine-tuning")


if __name__ == "__main__":
    main()
