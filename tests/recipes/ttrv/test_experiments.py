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
    assert "+20.0 points" in E.headline(runs, results)


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
