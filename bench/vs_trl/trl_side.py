"""TRL's side of the benchmark: TRL's GRPOTrainer on the project's model, prompts and sample budget.

Run with the bench venv (``bench/vs_trl/setup.sh``); ``run.py`` starts it. One TTRV step = one
generation of ``prompts x samples`` completions and ``mini_batches`` optimizer steps on them, with
a reference model (``beta`` = the project's ``kl_loss_coef``) and a majority-vote reward. Prints one
JSON line: the wall time of every TTRV step and the process's start-up time.
"""
from __future__ import annotations

import argparse
import json
import time

T0 = time.perf_counter()

import torch  # noqa: E402

from verl.data.formats import read_json_records  # noqa: E402
from verl.data.images import record_to_chat  # noqa: E402
from verl.models.load import load_vlm  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--mini-batches", type=int, default=2, help="optimizer steps per TTRV step")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--beta", type=float, default=0.001)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="TRL output dir (nothing is saved)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from datasets import Dataset
    from PIL import Image
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    sys_path = __import__("sys").path
    sys_path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from majority import majority_vote_rewards

    records = read_json_records(a.data)[: a.prompts * a.steps]
    rows = {"prompt": [record_to_chat(r) for r in records],
            "image": [Image.open(r.images[0]).convert("RGB") for r in records]}
    dataset = Dataset.from_dict(rows)
    model, processor = load_vlm(a.model)

    per_step = a.prompts * a.samples // a.mini_batches
    cfg = GRPOConfig(
        output_dir=a.out, per_device_train_batch_size=per_step, gradient_accumulation_steps=1,
        steps_per_generation=a.mini_batches, num_generations=a.samples, num_iterations=1,
        max_completion_length=a.new_tokens, max_steps=a.steps * a.mini_batches, learning_rate=a.lr,
        lr_scheduler_type="constant", beta=a.beta, temperature=1.0, use_cpu=True, bf16=False,
        save_strategy="no", report_to=[], logging_steps=a.mini_batches, dataloader_num_workers=0,
        shuffle_dataset=False, seed=1, disable_tqdm=True,
    )
    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            ends.append(time.perf_counter())

    trainer = GRPOTrainer(model=model, reward_funcs=majority_vote_rewards, args=cfg, train_dataset=dataset,
                          processing_class=processor, callbacks=[StepClock()])
    t_ready = time.perf_counter()
    trainer.train()
    # One TTRV step = mini_batches optimizer steps (TRL generates once per steps_per_generation).
    marks = [t_ready] + ends[a.mini_batches - 1 :: a.mini_batches]
    steps_s = [b - c for b, c in zip(marks[1:], marks[:-1])]
    print("BENCH_JSON " + json.dumps({"step_s": steps_s, "startup_s": t_ready - T0,
                                      "process_s": time.perf_counter() - T0}), flush=True)


if __name__ == "__main__":
    main()
