"""The HF engine's sleep with ``offload`` (``rollout.free_cache_engine`` on CUDA): weights leave the device
between generations, a weight sync still lands, and ``generate`` wakes it first. On CPU the flag is off (nothing
to free); the test turns it on and records where the model is sent."""

from __future__ import annotations

import torch

from verl.workers.rollout.hf import HFRollout


def test_sleep_moves_weights_off_the_device_and_generate_wakes_it(tiny_vlm_path, make_prompts):
    from verl.models.load import load_vlm

    model, processor = load_vlm(tiny_vlm_path("qwen2_5_vl"), dtype=torch.float32, device="cpu")
    assert HFRollout(model, processor, seed=0, offload=True).offload is False  # CPU: nothing to free
    engine = HFRollout(model, processor, seed=0, offload=True)
    engine.offload = True
    moves: list[str] = []
    to = model.to
    model.to = lambda dev: (moves.append(str(dev)), to(dev))[1]
    prompts = make_prompts(2, n=2, max_new_tokens=3, do_sample=False)
    before = engine.generate(prompts).batch["responses"]
    engine.sleep()
    engine.sleep()  # idempotent
    assert moves == ["cpu"] and engine._asleep
    engine.load_weights((k, v.clone()) for k, v in model.state_dict().items())  # lands while asleep
    after = engine.generate(prompts).batch["responses"]
    assert moves == ["cpu", "cpu"] and not engine._asleep  # woken back to its device (here the CPU)
    assert torch.equal(before, after)
