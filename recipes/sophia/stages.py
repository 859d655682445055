"""SOPHIA stages: caption (on-policy) -> reason (off-policy) -> reward -> select -> update -> evaluate.

Every stage reads and writes files in the run folder and skips work that is already there:

* ``captions.jsonl`` (one row per image: K captions), ``reasonings.jsonl`` (one row per (question,
  caption): N reasonings), ``rewards.jsonl`` (same keys), ``eval_<tag>.jsonl`` (one row per question):
  append-only :class:`~recipes.sophia.runio.JsonlStore` s, written after every generate call, so a killed
  run loses at most the call in flight (for the HTTP reasoner: only the in-flight requests, since every
  response is also committed to ``reasoner_cache.sqlite``);
* ``selected.jsonl`` + ``selection.json`` and ``model/`` (the updated VLM) carry a stamp of their inputs
  and settings and are rebuilt only when it changes; ``eval_<tag>.jsonl`` is dropped when the evaluated
  model's weights, the evaluation's token budget or the system prompt change (answers are scored on reading).

Sampling seeds are derived from the trainer seed and the first pending item of a call (HTTP: each
item), so a complete run is reproducible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.sophia.config import SophiaConfig
from recipes.sophia.prompts import LONG_REASONING_SYSTEM_PROMPT, build_caption_messages, build_training_sample
from recipes.sophia.reasoners import ReasonerBackend, ReasonItem, Sampling, item_seed
from recipes.sophia.runio import JsonlStore, read_jsonl, stamp_is_fresh, write_json, write_stamp
from recipes.sophia.select import Candidate, caption_reward_histogram, select_trajectories
from recipes.sophia.verify import extract_final_answer, reasoning_reward
from recipes.sophia.vlm_data import SFTRow, split_training_sample
from verl.utils.cli import RunError
from verl.workers.rollout.base import SamplingSpec
from verl.workers.rollout.generate import generate_texts

logger = logging.getLogger(__name__)
UPDATE_STAMP = "sophia_update.stamp.json"  # in trainer.default_local_dir: whose update the checkpoints belong to


@dataclass(frozen=True)
class Question:
    """One task item. ``gold`` is read by the reward and the evaluation only."""

    uid: str
    prompt: list[dict[str, Any]]
    images: list[str | bytes]  # paths or encoded bytes, as the rollout engines take them
    text: str
    gold: str
    extra: dict[str, Any]
    image_ids: tuple[str, ...]  # location-independent names of ``images`` (:func:`image_id`)

    @property
    def image_key(self) -> str:
        """Names the question's images in stage files, caption ids and per-item seeds: the same wherever the
        data folder lives, so a run gives the same samples in any checkout."""
        return "|".join(self.image_ids)


def image_id(image: str | bytes, base: Path) -> str:
    """A path relative to the (resolved) data folder ``base`` (POSIX), or ``sha256:<16 hex>`` of encoded bytes."""
    if isinstance(image, bytes | bytearray):
        return "sha256:" + hashlib.sha256(image).hexdigest()[:16]
    return Path(os.path.relpath(Path(image).resolve(), base)).as_posix()


def load_questions(path: str | Path, max_n: int = -1, format: str = "auto", image_root: str | None = None
                   ) -> list[Question]:
    """Questions of a TTRV JSON or verl parquet file (``verl.data.formats``), the first ``max_n`` when > 0."""
    from recipes.sophia.prompts import question_text
    from verl.data.formats import load_records

    recs = load_records([path], format=format, image_root=image_root)
    recs = recs[:max_n] if max_n > 0 else recs
    base = (Path(image_root) if image_root else Path(path).parent).resolve()
    return [Question(r.uid, r.prompt, list(r.images), question_text(r.prompt), str(r.ground_truth), dict(r.extra),
                     tuple(image_id(i, base) for i in r.images)) for r in recs]


def questions_of(cfg: SophiaConfig, split: str) -> list[Question]:
    """``split`` = ``train`` | ``eval``: the questions of ``data.<split>_file`` (under ``data.dir``)."""
    d = cfg.data
    file, max_n = (d.train_file, d.max_train) if split == "train" else (d.eval_file, d.max_eval)
    return load_questions(Path(d.dir) / file, max_n, d.format, d.image_root)


_seed = item_seed


def _chunks(xs: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [xs[i:i + size] for i in range(0, len(xs), size)]


def _settings(section: Any, *skip: str) -> dict[str, Any]:
    return {k: v for k, v in json.loads(json.dumps(section.__dict__, default=str)).items() if k not in skip}


def _drop_if_stale(run: Path, name: str, stamp: dict[str, Any]) -> None:
    """Delete ``<name>.jsonl`` when it was written by another model or other settings (``<name>.stamp.json``)."""
    path = run / f"{name}.jsonl"
    if stamp_is_fresh(run, stamp, f"{name}.stamp.json"):
        return
    if path.is_file():
        logger.warning("%s was written by another model or other settings; starting it again", path)
        path.unlink()
    run.mkdir(parents=True, exist_ok=True)
    write_stamp(run, stamp, f"{name}.stamp.json")


# ------------------------------------------------------------------------------------------ caption
def caption_stage(cfg: SophiaConfig, questions: Sequence[Question], run: Path,
                  engine_factory: Callable[[], Any]) -> dict[str, list[dict[str, str]]]:
    """K captions per image with the fixed describe prompt (the question is never shown); returns
    ``{image_key: [{"caption_id", "text"}, ...]}``. The engine is built only if some image is pending."""
    c = cfg.caption
    _drop_if_stale(run, "captions", {"weights": weights_hash(cfg.model_path),
                                     "settings": _settings(c, "batch_images"), "seed": cfg.trainer.seed})
    store = JsonlStore(run / "captions.jsonl")
    images = list(dict.fromkeys(q.image_key for q in questions))
    refs = {q.image_key: q.images for q in questions}
    pending = [k for k in images if k not in store.done]
    if pending:
        engine = engine_factory()
        msgs = build_caption_messages(len(refs[pending[0]]), c.prompt)
        for chunk in _chunks(pending, c.batch_images):
            spec = SamplingSpec(n=c.k, temperature=c.temperature, top_p=c.top_p, top_k=-1,
                                max_new_tokens=c.max_new_tokens, seed=_seed(cfg.trainer.seed, chunk[0]))
            texts = generate_texts(engine.generate, [msgs] * len(chunk), [refs[k] for k in chunk], spec,
                                   uids=list(chunk))
            store.append({"key": k, "captions": [{"caption_id": f"{k}#c{j}", "text": t} for j, t in enumerate(ts)]}
                         for k, ts in zip(chunk, texts))
        logger.info("caption: %d image(s) captioned, %d reused", len(pending), len(images) - len(pending))
    by_key = {r["key"]: r["captions"] for r in store.rows}
    return {k: by_key[k] for k in images}


# ------------------------------------------------------------------------------------------ reason
def _sha(*texts: str) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def _latest(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in rows}  # a re-done item appends a new row; the last one wins


def reason_stage(cfg: SophiaConfig, questions: Sequence[Question], captions: dict[str, list[dict[str, str]]],
                 run: Path, backend_factory: Callable[[], ReasonerBackend]) -> dict[str, Any]:
    """N reasonings per (question, caption) from the text-only reasoner (question + caption, no image, no
    gold). Items whose samples did not all arrive stay pending (a re-run retries them); a row whose caption
    text changed since it was written is stale and redone."""
    r = cfg.reason
    model = (_file_hash(Path(r.model_path) / "model.safetensors") if r.backend == "local"
             else f"{r.http.base_url}|{r.http.model}")
    _drop_if_stale(run, "reasonings", {"backend": r.backend, "model": model, "seed": cfg.trainer.seed,
                                       "settings": _settings(r, "batch_items", "http")})
    store = JsonlStore(run / "reasonings.jsonl")
    items = [ReasonItem(f"{q.uid}|{cap['caption_id']}", q.text, cap["text"])
             for q in questions for cap in captions[q.image_key]]
    have = _latest(store.rows)
    pending = [it for it in items if have.get(it.key, {}).get("input_sha") != _sha(it.question, it.caption)]
    failed, calls = 0, 0
    if pending:
        backend = backend_factory()
        for chunk in _chunks(pending, r.batch_items):
            s = Sampling(r.n, r.temperature, r.top_p, r.max_new_tokens, _seed(cfg.trainer.seed, chunk[0].key))
            rows = []
            for it, texts in zip(chunk, backend.reason(chunk, s)):
                if texts is None:
                    failed += 1
                    continue
                qid, cid = it.key.split("|", 1)[0], it.key.split("|", 1)[1]
                rows.append({"key": it.key, "question_id": qid, "caption_id": cid,
                             "input_sha": _sha(it.question, it.caption), "reasonings": list(texts)})
            store.append(rows)
        calls = backend.calls
        if failed:
            logger.warning("reason: %d item(s) failed; re-run the pipeline to retry them", failed)
    logger.info("reason: %d item(s) done now, %d reused, %d model calls", len(pending) - failed,
                len(items) - len(pending), calls)
    have = _latest(store.rows)
    return {"rows": [have[it.key] for it in items if it.key in have], "failed": failed, "calls": calls}


# ------------------------------------------------------------------------------------------ reward
def reward_stage(questions: Sequence[Question], reasoning_rows: Sequence[dict[str, Any]], run: Path
                 ) -> list[dict[str, Any]]:
    """R(y) = 1 iff the final boxed answer verifies against the gold answer; R(c) = mean over its N."""
    gold = {q.uid: q.gold for q in questions}
    store = JsonlStore(run / "rewards.jsonl")
    have = _latest(store.rows)
    new = []
    for row in reasoning_rows:
        src = _sha(gold[row["question_id"]], *row["reasonings"])
        if have.get(row["key"], {}).get("input_sha") == src:
            continue
        rewards = [reasoning_reward(t, gold[row["question_id"]]) for t in row["reasonings"]]
        new.append({"key": row["key"], "question_id": row["question_id"], "caption_id": row["caption_id"],
                    "input_sha": src, "rewards": rewards, "caption_reward": float(np.mean(rewards)),
                    "answers": [extract_final_answer(t) for t in row["reasonings"]]})
    store.append(new)
    have = _latest(store.rows)
    return [have[row["key"]] for row in reasoning_rows]


def reward_metrics(cfg: SophiaConfig, questions: Sequence[Question], captions: dict[str, list[dict[str, str]]],
                   reward_rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Reasoning accuracy, caption-reward histogram and (digit-pair tasks) caption correctness vs R(c)."""
    from recipes.sophia.pretrain_captioner import parse_description

    out: dict[str, float] = {}
    all_r = [x for row in reward_rows for x in row["rewards"]]
    out["sophia/reasoning_accuracy"] = float(np.mean(all_r)) if all_r else 0.0
    hist = caption_reward_histogram([row["caption_reward"] for row in reward_rows], cfg.reason.n)
    for i, h in enumerate(hist):
        out[f"sophia/caption_reward_hist/{i}_of_{cfg.reason.n}"] = h
    qs = {q.uid: q for q in questions}
    texts = {c["caption_id"]: c["text"] for caps in captions.values() for c in caps}
    ok, rc = [], []
    for row in reward_rows:
        q = qs[row["question_id"]]
        if "left" in q.extra and "right" in q.extra:
            ok.append(parse_description(texts[row["caption_id"]]) == (q.extra["left"], q.extra["right"]))
            rc.append(row["caption_reward"])
    if ok:
        ok_a, rc_a = np.array(ok), np.array(rc)
        out["sophia/caption_correct_fraction"] = float(ok_a.mean())
        if ok_a.any():
            out["sophia/caption_reward_mean/correct_caption"] = float(rc_a[ok_a].mean())
        if (~ok_a).any():
            out["sophia/caption_reward_mean/wrong_caption"] = float(rc_a[~ok_a].mean())
        above = rc_a > cfg.select.alpha
        if above.any():
            out["sophia/caption_correct_fraction/above_alpha"] = float(ok_a[above].mean())
    return out


# ------------------------------------------------------------------------------------------ select
def _file_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:16]


HASH_CONTENT_BYTES = 256 << 20  # weights up to this size are hashed by content, larger ones by name and size


def weights_hash(model_dir: str | Path) -> str:
    """Identity of a model folder's weights (``*.safetensors``): content for small models, names + sizes for
    large ones (reading an 8B checkpoint to hash it would take minutes)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if sum(f.stat().st_size for f in files) <= HASH_CONTENT_BYTES:
        return _file_hash(*files) if files else _file_hash(Path(model_dir) / "model.safetensors")
    return _sha(*(f"{f.name}:{f.stat().st_size}" for f in files))


def select_stage(cfg: SophiaConfig, questions: Sequence[Question], captions: dict[str, list[dict[str, str]]],
                 reasoning_rows: Sequence[dict[str, Any]], reward_rows: Sequence[dict[str, Any]], run: Path,
                 length_fn: Callable[[str], int] | None) -> dict[str, Any]:
    """Shortest (or random) correct trajectory per question with caption reward > alpha; writes ``selected.jsonl``."""
    s = cfg.select
    stamp = {"rewards": _sha(*(f"{r['key']}:{r['input_sha']}" for r in reward_rows)),
             "select": json.loads(json.dumps(s.__dict__)), "questions": _sha(*(q.uid for q in questions)),
             "seed": cfg.trainer.seed,
             "length_fn": length_fn is not None}
    if stamp_is_fresh(run, stamp, "selection.stamp.json") and (run / "selection.json").is_file():
        return json.loads((run / "selection.json").read_text())
    texts = {row["key"]: row["reasonings"] for row in reasoning_rows}
    cap_text = {c["caption_id"]: c["text"] for caps in captions.values() for c in caps}
    cands = [Candidate(row["question_id"], row["caption_id"], f"{row['key']}#r{i}", texts[row["key"]][i], float(rw),
                       row["caption_reward"]) for row in reward_rows for i, rw in enumerate(row["rewards"])]
    alpha = s.alpha if s.use_caption_reward else -1.0
    res = select_trajectories(cands, alpha=alpha, keep_n=s.keep_n, length_fn=length_fn, n_per_caption=cfg.reason.n,
                              pick=s.pick, seed=cfg.trainer.seed)
    rows = [{"key": k.candidate.reasoning_id, "question_id": k.candidate.question_id,
             "caption_id": k.candidate.caption_id, "reasoning": k.candidate.reasoning_text, "length": k.length,
             "reward": k.candidate.reward, "caption_reward": k.candidate.caption_reward,
             "caption": cap_text.get(k.candidate.caption_id, "")} for k in res.kept]
    tmp = run / "selected.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(run / "selected.jsonl")
    n_asked = len(questions)
    stats = {k: v for k, v in res.stats().items() if not isinstance(v, list)}
    stats["sophia/n_questions"] = n_asked  # questions without any reasoning row count as dropped too
    stats["sophia/kept_fraction"] = res.n_kept_questions / n_asked if n_asked else 0.0
    stats["sophia/dropped/total"] = n_asked - res.n_kept_questions
    kept_ids = {k.candidate.question_id for k in res.kept}
    by_type: dict[str, list[bool]] = {}
    for q in questions:
        by_type.setdefault(q.extra.get("qtype", "all"), []).append(q.uid in kept_ids)
    for qt, flags in sorted(by_type.items()):  # the filter can favour easy question types
        stats[f"sophia/kept_fraction/{qt}"] = float(np.mean(flags))
        stats[f"sophia/dropped/by_type/{qt}"] = len(flags) - int(sum(flags))
    logger.info("select: kept %d of %d questions; dropped per type: %s", res.n_kept_questions, n_asked,
                ", ".join(f"{qt} {len(f) - int(sum(f))}/{len(f)}" for qt, f in sorted(by_type.items())))
    out = {"stats": stats, "caption_reward_hist": res.caption_reward_hist, "length_unit": res.length_unit}
    write_json(run / "selection.json", out)
    write_stamp(run, stamp, "selection.stamp.json")
    return out


# ------------------------------------------------------------------------------------------ update
def system_prompt_of(cfg: SophiaConfig) -> str | None:
    return LONG_REASONING_SYSTEM_PROMPT if cfg.update.system_prompt == "long_reasoning" else None


def policy_prompt(q: Question, system_prompt: str | None) -> list[dict[str, Any]]:
    """The VLM prompt of a question (training and evaluation use the same): system + original question."""
    msgs, _ = split_training_sample(build_training_sample(q.prompt, q.images, "-", system_prompt=system_prompt))
    return msgs


def training_rows(cfg: SophiaConfig, questions: Sequence[Question], selected: Sequence[dict[str, Any]]) -> list[SFTRow]:
    """(image, original question) -> selected reasoning (or, for the caption-only baseline, its caption).
    The caption is never part of the prompt."""
    qs = {q.uid: q for q in questions}
    rows = []
    for s in selected:
        q = qs[s["question_id"]]
        target = s["reasoning"] if cfg.update.target == "reasoning" else s["caption"]
        sample = build_training_sample(q.prompt, q.images, target, system_prompt=system_prompt_of(cfg))
        prompt, answer = split_training_sample(sample)
        rows.append(SFTRow(q.uid, prompt, list(sample["images"]), answer, {"reward": float(s["reward"])}))
    return rows


def update_plan(cfg: SophiaConfig, n_rows: int) -> list[list[int]]:
    """Row indices of every optimizer step: ``trainer.total_epochs`` shuffled passes (seed ``trainer.seed``) in
    batches of ``actor.ppo_mini_batch_size``; a pure function, so a resumed update replays the same steps."""
    rng = np.random.default_rng(cfg.trainer.seed)
    size = cfg.actor_rollout_ref.actor.ppo_mini_batch_size
    return [list(b) for _ in range(cfg.trainer.total_epochs) for b in _chunks(rng.permutation(n_rows).tolist(), size)]


def _update_stamp(cfg: SophiaConfig, run: Path) -> dict[str, Any]:
    arr, t = cfg.actor_rollout_ref, cfg.trainer
    return {"selected": _file_hash(run / "selected.jsonl"), "update": _settings(cfg.update),
            "actor": json.loads(json.dumps(dataclasses.asdict(arr.actor))),
            "model": json.loads(json.dumps(dataclasses.asdict(arr.model))), "epochs": t.total_epochs,
            "seed": t.seed, "base": weights_hash(cfg.model_path)}


def update_stage(cfg: SophiaConfig, questions: Sequence[Question], run: Path, policy: Callable[[], Any],
                 processor: Callable[[], Any], tracker: Any = None) -> dict[str, Any]:
    """Reward-weighted NLL (no ratio, no KL, no reference) on the selected trajectories through the policy
    workers' FSDP2 actor (``policy`` and ``processor`` are factories, called only when there is work);
    checkpoints every ``trainer.save_freq`` steps and at the last one (verl's layout under
    ``trainer.default_local_dir``; a killed update resumes from the latest); exports ``model/``."""
    from recipes.sophia.vlm_data import sft_dataproto
    from verl.checkpoint import CheckpointManager, verify_checkpoint

    t, model_dir = cfg.trainer, run / "model"
    stamp = _update_stamp(cfg, run)
    if stamp_is_fresh(model_dir, stamp) and (model_dir / "update.json").is_file():
        logger.info("update: %s is up to date", model_dir)
        return json.loads((model_dir / "update.json").read_text())
    rows = training_rows(cfg, questions, read_jsonl(run / "selected.jsonl"))
    if not rows:
        raise RunError(f"update: the filter kept none of the {len(questions)} questions (select.alpha="
                       f"{cfg.select.alpha:g}; per-type counts in {run / 'selection.json'}); lower select.alpha, "
                       f"raise caption.k / reason.n, or check the reasoner")
    ckpt = CheckpointManager(t.default_local_dir, keep=t.max_actor_ckpt_to_keep)
    ckpt_stamp = {**stamp, "workers": t.n_gpus_per_node * t.nnodes}
    if t.resume_mode == "disable" or not stamp_is_fresh(ckpt.root, ckpt_stamp, UPDATE_STAMP):
        if ckpt.root.exists():  # checkpoints of other trajectories or settings, or resuming is off
            logger.warning("update: clearing the checkpoints in %s (another update's, or trainer.resume_mode=disable)",
                           ckpt.root)
            shutil.rmtree(ckpt.root)
        ckpt.root.mkdir(parents=True)
        write_stamp(ckpt.root, ckpt_stamp, UPDATE_STAMP)
    plan = update_plan(cfg, len(rows))
    proc = processor()
    workers = policy()
    workers.init_update(len(plan))
    step, losses = 0, []
    folder = ckpt.resolve_resume(t.resume_mode, t.resume_from_path)
    if folder is not None:
        verify_checkpoint(folder)
        state = ckpt.load(folder)
        workers.load(folder)
        step, losses = int(state["step"]), list(state["losses"])
        logger.info("update: resumed from %s at step %d/%d", folder, step, len(plan))
    cache: dict = {}
    while step < len(plan):
        batch = [rows[i] for i in plan[step]]
        data = sft_dataproto(proc, batch, cfg.update.max_response_tokens, cache)
        m = workers.update(data, torch.tensor([r.extra["reward"] for r in batch]))
        step += 1
        losses.append(m["actor/sft_loss"])
        if tracker is not None:
            tracker.log(m, step=step)  # actor/sft_loss, actor/grad_norm, actor/lr
        if step == 1 or step % 20 == 0 or step == len(plan):
            logger.info("update step %d/%d loss %.4f", step, len(plan), m["actor/sft_loss"])
        if step == len(plan) or (t.save_freq > 0 and step % t.save_freq == 0):
            workers.save(ckpt.prepare(step))
            ckpt.commit(step, {"step": step, "losses": losses})
    if workers.weights != "updated":
        workers.sync()
    workers.export(model_dir)
    info = {"steps": step, "rows": len(rows), "first_loss": losses[0], "last_loss": losses[-1]}
    write_json(model_dir / "update.json", info)
    write_stamp(model_dir, stamp)
    return info


def load_updated(cfg: SophiaConfig, workers: Any) -> None:
    """Give the policy workers the updated weights (the last update checkpoint) unless they hold them."""
    from verl.checkpoint import CheckpointManager

    if workers.weights == "updated":
        return
    ckpt = CheckpointManager(cfg.trainer.default_local_dir)
    latest = ckpt.latest_step()
    if latest is None:
        raise FileNotFoundError(f"no update checkpoint under {ckpt.root} to evaluate; run the update stage")
    workers.load(ckpt.step_dir(latest))


# ------------------------------------------------------------------------------------------ evaluate
def evaluate_stage(cfg: SophiaConfig, questions: Sequence[Question], model_path: str | Path, tag: str, run: Path,
                   engine_factory: Callable[[str], Any]) -> dict[str, float]:
    """Greedy accuracy of a VLM on held-out questions (plus per type, boxed-answer rate, digits stated right)."""
    from recipes.sophia.pretrain_captioner import parse_description

    sp = system_prompt_of(cfg)
    # answers are reused per question only under the same weights, token budget and system prompt
    stamp = {"weights": weights_hash(model_path), "max_new_tokens": cfg.eval.max_new_tokens, "system_prompt": sp}
    _drop_if_stale(run, f"eval_{tag}", stamp)
    store = JsonlStore(run / f"eval_{tag}.jsonl")
    pending = [q for q in questions if q.uid not in store.done]
    if pending:
        engine = engine_factory(str(model_path))
        greedy = SamplingSpec(n=1, temperature=0.0, top_k=-1, max_new_tokens=cfg.eval.max_new_tokens, seed=0)
        for chunk in _chunks(pending, cfg.eval.batch):
            texts = generate_texts(engine.generate, [policy_prompt(q, sp) for q in chunk], [q.images for q in chunk],
                                   greedy, uids=[q.uid for q in chunk])
            store.append({"key": q.uid, "response": t[0], "answer": extract_final_answer(t[0])}
                         for q, t in zip(chunk, texts))
    done = {r["key"]: r for r in store.rows}  # scored here, against the current gold answers
    rows = [(q, {**done[q.uid], "reward": reasoning_reward(done[q.uid]["response"], q.gold)}) for q in questions]
    out = {f"eval/{tag}/acc": float(np.mean([r["reward"] for _, r in rows])),
           f"eval/{tag}/boxed_rate": float(np.mean([r["answer"] is not None for _, r in rows]))}
    if all("left" in q.extra for q, _ in rows):
        out[f"eval/{tag}/digits_stated_right"] = float(np.mean(
            [parse_description(r["response"]) == (q.extra["left"], q.extra["right"]) for q, r in rows]))
    for qt in sorted({q.extra.get("qtype", "all") for q, _ in rows}):
        out[f"eval/{tag}/acc/{qt}"] = float(np.mean([r["reward"] for q, r in rows if q.extra.get("qtype", "all") == qt]))
    return out
