"""SOPHIA collection stages with stand-in engines: the captioner never sees the question, the update sample
excludes the caption, and a killed run resumes without redoing finished requests (calls counted)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from recipes.sophia.config import load_sophia_config
from recipes.sophia.pairs import QUESTIONS, build_pairs_dataset, describe, gold_answer
from recipes.sophia.pipeline import run_pipeline
from recipes.sophia.reasoners import Sampling
from verl.protocol import DataProto

K, N = 3, 4


class FakeCaptioner:
    """Rollout stand-in: caption j of an image names its true digits, except caption 2 of every third image
    (a misread left digit). Records every prompt it is shown."""

    def __init__(self, truth: dict[str, tuple[int, int]]):
        self.truth, self.rows, self.prompts = truth, 0, []

    def generate(self, data: DataProto) -> DataProto:
        n = data.meta_info["n"]
        texts = []
        for prompt, images in zip(data.non_tensor_batch["prompt"], data.non_tensor_batch["images"]):
            self.rows += 1
            self.prompts.append(json.dumps(prompt))
            left, right = self.truth[images[0]]
            bad = int(re.search(r"(\d+)\.png$", images[0]).group(1)) % 3 == 0
            texts += [describe((left + 1) % 10 if bad and j == 2 else left, right) for j in range(n)]
        arr = np.empty(len(texts), dtype=object)
        arr[:] = texts
        return DataProto.from_dict(non_tensors={"response_text": arr})


class FakeReasoner:
    """Reasoner stand-in: answers from the caption's digits; sample 0 of every item is wrong. Items named in
    ``fail_once`` fail on their first request (like an HTTP error). ``calls`` counts samples requested."""

    def __init__(self, fail_once: set[str] = frozenset()):
        self.calls, self.fail_once, self.seen = 0, set(fail_once), []

    def reason(self, items, sampling: Sampling):
        out = []
        for it in items:
            self.calls += sampling.n
            self.seen.append(it)
            if it.key in self.fail_once:
                self.fail_once.discard(it.key)
                out.append(None)
                continue
            left, right = (int(x) for x in re.findall(r"digit is (\d)", it.caption))
            qtype = next(q for q, text in QUESTIONS.items() if text == it.question)
            ans = gold_answer(qtype, left, right)
            out.append([f"{'Hm. ' * i}The answer is \\boxed{{{ans if i else int(ans) + 100}}}." for i in range(sampling.n)])
        return out


@pytest.fixture
def setup(tmp_path):
    paths = build_pairs_dataset(tmp_path / "data", seed=0, sizes={"caption_train": 1, "sophia_train": 6, "eval": 2, "dev": 2})
    rows = json.loads(paths["sophia_train"].read_text())
    truth = {str((tmp_path / "data" / r["image_path"]).resolve()): (r["left"], r["right"]) for r in rows}
    cfg = load_sophia_config(overrides=[
        f"data.dir={tmp_path / 'data'}", "data.max_train=-1", f"caption.k={K}", f"reason.n={N}",
        "caption.batch_images=2", "reason.batch_items=4", f"trainer.log_dir={tmp_path / 'logs'}",
        "trainer.logger=[jsonl]", "select.length_unit=chars", "stages=[caption,reason,reward,select]"])
    return cfg, truth, rows


def test_caption_stage_hides_the_question(setup):
    cfg, truth, rows = setup
    cap = FakeCaptioner(truth)
    run_pipeline(cfg, policy=lambda: cap, reasoner=lambda: FakeReasoner())
    assert cap.rows == len(rows)  # one prompt per image, K samples each
    assert len(set(cap.prompts)) == 1  # the same fixed describe prompt for every image
    for q in QUESTIONS.values():
        assert q not in cap.prompts[0]
    assert "<image>" in cap.prompts[0] and "Describe" in cap.prompts[0]
    captions = [json.loads(x) for x in (cfg.run_path / "captions.jsonl").read_text().splitlines()]
    assert [len(c["captions"]) for c in captions] == [K] * len(rows)


def test_rewards_and_selection(setup):
    cfg, truth, rows = setup
    s = run_pipeline(cfg, policy=lambda: FakeCaptioner(truth), reasoner=lambda: FakeReasoner())
    rewards = [json.loads(x) for x in (cfg.run_path / "rewards.jsonl").read_text().splitlines()]
    # right captions: 3/4 correct (sample 0 is wrong) -> R(c) = 0.75, NOT above alpha = 0.75 (strict)
    assert sorted({r["caption_reward"] for r in rewards}) in ([0.0, 0.75], [0.75])
    assert s["sophia/kept_fraction"] == 0.0 and s["sophia/dropped/total"] == len(rows)
    qtypes = {r["qtype"] for r in rows}
    assert {k for k in s if k.startswith("sophia/kept_fraction/")} == {f"sophia/kept_fraction/{t}" for t in qtypes}
    assert all(s[f"sophia/kept_fraction/{t}"] == 0.0 for t in qtypes)
    assert {t: s[f"sophia/dropped/by_type/{t}"] for t in qtypes} == {t: sum(r["qtype"] == t for r in rows) for t in qtypes}
    assert s["sophia/reasoning_accuracy"] == pytest.approx(np.mean([x for r in rewards for x in r["rewards"]]))
    cfg.select.alpha = 0.5  # now the right captions qualify; the misread one (R = 0 for sum) does not
    s = run_pipeline(cfg, policy=lambda: FakeCaptioner(truth), reasoner=lambda: FakeReasoner())
    sel = [json.loads(x) for x in (cfg.run_path / "selected.jsonl").read_text().splitlines()]
    assert s["sophia/kept_fraction"] == 1.0 and len(sel) == len(rows)
    assert all(s[f"sophia/kept_fraction/{t}"] == 1.0 for t in qtypes)
    for r in sel:  # the shortest correct reasoning ("Hm. " once), from a caption naming the true digits
        assert r["reasoning"].startswith("Hm. The answer") and r["caption_reward"] == 0.75
        q = next(x for x in rows if r["question_id"].endswith(x["id"]))
        assert r["caption"] == describe(q["left"], q["right"])


def test_killed_run_resumes_without_redoing_requests(setup):
    cfg, truth, rows = setup
    cfg.select.alpha = 0.5
    n_items = len(rows) * K
    cap, rsn = FakeCaptioner(truth), FakeReasoner()
    first = run_pipeline(cfg, policy=lambda: cap, reasoner=lambda: rsn)
    assert cap.rows == len(rows) and rsn.calls == n_items * N and first["sophia/reason_failed"] == 0
    run = cfg.run_path
    selected = (run / "selected.jsonl").read_text()

    # kill simulation: the last 2 caption rows and the last 5 reasoning rows are lost, one cut mid-write;
    # one request also fails on the next attempt (an HTTP error) and must stay pending
    cap_lines = (run / "captions.jsonl").read_text().splitlines()
    (run / "captions.jsonl").write_text("\n".join(cap_lines[:-2]) + "\n" + cap_lines[-2][:40])
    r_lines = (run / "reasonings.jsonl").read_text().splitlines()
    (run / "reasonings.jsonl").write_text("\n".join(r_lines[:-5]) + "\n" + r_lines[-5][:30])
    fail_key = json.loads(r_lines[-1])["key"]
    cap2, rsn2 = FakeCaptioner(truth), FakeReasoner(fail_once={fail_key})
    second = run_pipeline(cfg, policy=lambda: cap2, reasoner=lambda: rsn2)
    assert cap2.rows == 2  # only the lost images are captioned again
    assert rsn2.calls == 5 * N and second["sophia/reason_failed"] == 1  # only the lost items are re-requested
    assert {it.key for it in rsn2.seen} == {json.loads(x)["key"] for x in r_lines[-5:]}

    cap3, rsn3 = FakeCaptioner(truth), FakeReasoner()
    third = run_pipeline(cfg, policy=lambda: cap3, reasoner=lambda: rsn3)
    assert cap3.rows == 0 and rsn3.calls == N and [it.key for it in rsn3.seen] == [fail_key]
    assert third["sophia/reason_failed"] == 0
    assert (run / "selected.jsonl").read_text() == selected  # same result as the uninterrupted run

    cap4, rsn4 = FakeCaptioner(truth), FakeReasoner()
    run_pipeline(cfg, policy=lambda: cap4, reasoner=lambda: rsn4)
    assert cap4.rows == 0 and rsn4.calls == 0  # nothing left to do

    log = cfg.run_path / "metrics.jsonl"
    metrics = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(metrics) == 4 and all("sophia/kept_fraction" in m for m in metrics)


def test_update_sample_excludes_the_caption(setup):
    from recipes.sophia.stages import load_questions, training_rows

    cfg, _, _ = setup
    qs = load_questions(cfg.data.dir + "/sophia_train.json")
    marker = "CAPTION-MARKER: The left digit is 3. The right digit is 7."
    sel = [{"question_id": qs[0].uid, "reasoning": "3 + 7 = 10. \\boxed{10}", "caption": marker, "reward": 1.0}]
    (row,) = training_rows(cfg, qs, sel)
    assert "CAPTION-MARKER" not in json.dumps(row.prompt) and "CAPTION-MARKER" not in row.target
    assert row.target == "3 + 7 = 10. \\boxed{10}" and row.images == qs[0].images
    assert row.prompt[0]["role"] == "system" and "step by step" in row.prompt[0]["content"]
    assert row.prompt[-1] == {"role": "user", "content": qs[0].prompt[0]["content"]}  # the original question
    cfg.update.target = "caption"  # the caption-only baseline trains on the caption instead
    (row,) = training_rows(cfg, qs, sel)
    assert row.target == marker and "CAPTION-MARKER" not in json.dumps(row.prompt)


def test_collection_is_redone_when_the_model_or_settings_change(setup, tmp_path):
    cfg, truth, rows = setup
    cfg.select.alpha = 0.5
    run_pipeline(cfg, policy=lambda: FakeCaptioner(truth), reasoner=lambda: FakeReasoner())
    # a new captioner (its weights file changed): every image is captioned again; the stand-in writes the
    # same texts, and reasonings are keyed by (question, caption text), so none is requested again
    model = tmp_path / "captioner"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"new weights")
    cfg.actor_rollout_ref.model.path = str(model)
    cap, rsn = FakeCaptioner(truth), FakeReasoner()
    run_pipeline(cfg, policy=lambda: cap, reasoner=lambda: rsn)
    assert cap.rows == len(rows) and rsn.calls == 0
    # other reasoning settings: captions are kept, reasonings are redone
    cfg.reason.temperature = 0.5
    cap, rsn = FakeCaptioner(truth), FakeReasoner()
    run_pipeline(cfg, policy=lambda: cap, reasoner=lambda: rsn)
    assert cap.rows == 0 and rsn.calls == len(rows) * K * N
    # the same settings again: nothing to do
    cap, rsn = FakeCaptioner(truth), FakeReasoner()
    run_pipeline(cfg, policy=lambda: cap, reasoner=lambda: rsn)
    assert cap.rows == 0 and rsn.calls == 0


class WrongReasoner(FakeReasoner):
    """Every reasoning ends in a wrong answer: the filter keeps nothing."""

    def reason(self, items, sampling: Sampling):
        return [None if texts is None else [t.replace("boxed{", "boxed{9") for t in texts]
                for texts in super().reason(items, sampling)]


def test_a_round_that_keeps_nothing_stops_with_one_named_error(setup):
    from verl.utils.cli import RunError

    cfg, truth, _ = setup
    cfg.stages = [*cfg.stages, "update"]
    cfg.actor_rollout_ref.model.path = str(cfg.run_path / "no_model_needed")  # stopped before any model loads
    with pytest.raises(RunError, match=r"update: the filter kept none of the 6 questions \(select.alpha=0.75; "
                                       r"per-type counts in .*selection.json\)"):
        run_pipeline(cfg, policy=lambda: FakeCaptioner(truth), reasoner=lambda: WrongReasoner())
    selection = json.loads((cfg.run_path / "selection.json").read_text())
    assert selection  # the per-type drop counts the message points to were written


def test_image_keys_do_not_depend_on_where_the_data_lives(tmp_path):
    """Stage files, caption ids and per-item seeds are keyed by image_key: a copy of the data folder elsewhere
    (another checkout) gives the same keys; embedded parquet bytes are keyed by their hash and stay bytes."""
    import shutil

    from recipes.sophia.stages import load_questions
    from verl.data.formats import convert_json_to_parquet

    paths = build_pairs_dataset(tmp_path / "a" / "data", seed=0, sizes={"caption_train": 1, "sophia_train": 3,
                                                                       "eval": 1, "dev": 1})
    shutil.copytree(tmp_path / "a", tmp_path / "b" / "elsewhere")
    qa = load_questions(paths["sophia_train"])
    qb = load_questions(tmp_path / "b" / "elsewhere" / "data" / "sophia_train.json")
    assert [q.image_key for q in qa] == [q.image_key for q in qb]
    assert qa[0].image_key == "images/sophia_train/sophia_train_00000.png" and qa[0].images != qb[0].images
    pq = convert_json_to_parquet(paths["sophia_train"], tmp_path / "train.parquet")
    qp = load_questions(pq)
    assert isinstance(qp[0].images[0], bytes) and re.fullmatch(r"sha256:[0-9a-f]{16}", qp[0].image_key)
    assert len({q.image_key for q in qp}) == 3
