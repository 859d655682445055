"""The results regeneration command, small variant, end to end (random tiny model, few prompts)."""

from __future__ import annotations

import pytest

from recipes.ttrv import experiments as E


def test_table_statistics_by_hand():
    runs = [E.Run("a_noise_s1", "p", [], "(a) whole split", "test_noise"),
            E.Run("a_noise_s2", "p", [], "(a) whole split", "test_noise")]

    def summ(base, adapted):
        out = {}
        for kind, v in (("base", base), ("adapted", adapted)):
            for m in ("mean@1", "mean@4", "maj@4"):
                out[f"{kind}/val-core/digits_test_noise/acc/{m}"] = v
        return out

    results = {"a_noise_s1": summ(0.5, 0.6), "a_noise_s2": summ(0.5, 0.8)}
    md = E.table(runs, results, 4, E.VARIANTS["small"])
    row = md.splitlines()[2]
    # adapted greedy mean 70.0, sample std of (60, 80) = 14.1; delta +20.0 ± 14.1
    assert "| 50.0 ± 0.0 | 70.0 ± 14.1 | +20.0 ± 14.1 |" in row
    head = E.headline(runs, results, 4)
    assert "greedy 50.0 → 70.0, Δ greedy = +20.0 points (target ≥ +5.0: met)" in head
    assert "adapted greedy − base maj@4 = +20.0 points (target ≥ 0: met)" in head
    single = [E.Run("c1_s1", "p", [], "(c) one image", "test_noise"), E.Run("c1_s2", "p", [], "(c) one image",
                                                                          "test_noise")]
    results = {"c1_s1": summ(0.5, 0.45), "c1_s2": summ(0.5, 0.5)}
    assert "Δ greedy = -2.5 ± 3.5 points over 2 seed(s) (target > 0: missed)" in E.headline(single, results, 4)


def test_dev_selection_is_a_coordinate_search(monkeypatch, tmp_path):
    seen = []

    def fake_execute(run, out):
        seen.append(run.name)
        lr = float(next(o for o in run.overrides if "optim.lr=" in o).split("=")[1])
        form = next(o for o in run.overrides if "entropy_form=" in o).split("=")[1]
        acc = {1e-5: 0.5, 3e-5: 0.7, 1e-4: 0.6}[lr] + 0.1 * (run.epochs == 4) + 0.05 * (form == "per_sample")
        return {"adapted/val-core/digits_dev_elastic/acc/mean@1": acc,
                "base/val-core/digits_dev_elastic/acc/mean@1": 0.4}

    from recipes.ttrv import grid_runs

    monkeypatch.setattr(grid_runs, "execute", fake_execute)  # execute_all with jobs=1 calls it
    best, scores = E.choose_settings(E.VARIANTS["full"], tmp_path, "m", tmp_path)
    assert best == E.Settings(3e-5, 4, "per_sample")
    assert seen == ["dev_lr1e-05_e2_paper", "dev_lr3e-05_e2_paper", "dev_lr0.0001_e2_paper", "dev_lr3e-05_e4_paper",
                    "dev_lr3e-05_e4_per_sample"]
    assert scores[0] == ("base", 0.4) and len(scores) == 6


@pytest.mark.slow
def test_small_variant_end_to_end(ray_local, tiny_vlm_path, digits_dir, tmp_path):
    out = tmp_path / "results"
    md = E.main(["--variant", "small", "--data", str(digits_dir), "--model", str(tiny_vlm_path("qwen2_5_vl")),
                 "--out", str(out)])
    assert (out / "results.md").read_text() == md
    for group in ("(a) whole split", "(b) 20 images", "(c) one image", "(d) noise → blur"):
        assert f"| {group} |" in md
    assert (out / "accuracy_vs_step.png").stat().st_size > 0
    assert (out / "answer_entropy_vs_step.png").stat().st_size > 0
    # a second call reuses every finished run
    runs_before = sorted(p.name for p in (out / "runs").iterdir())
    assert E.main(["--variant", "small", "--data", str(digits_dir), "--model", str(tiny_vlm_path("qwen2_5_vl")),
                   "--out", str(out)]) == md
    assert sorted(p.name for p in (out / "runs").iterdir()) == runs_before
