"""The estimators comparison: dev candidates, and the generated page's tables and summary line by hand."""

from __future__ import annotations

from recipes.ttrv import estimator_grid as G
from recipes.ttrv.grid_runs import Run


def test_candidates_try_every_lr_and_the_stop_thresholds():
    s = G.SIZES["estimators"]
    assert [label for label, _ in G.candidates("ttrv", s)] == ["lr 3e-05", "lr 0.0001"]
    stop = G.candidates(G.STOP, s)
    assert len(stop) == len(s.lrs) * len(s.stop_ratios)
    assert stop[1] == ("lr 3e-05, stop at majority ratio 0.9", ["actor_rollout_ref.actor.optim.lr=3e-05",
                                                                "trainer.guard.max_majority_ratio=0.9"])


def test_report_tables_and_summary_line():
    s = G.Sizes(seeds=2, max_prompts=4, n_votes=4, n_train=2, batch=4, epochs=1, lrs=(1e-4,), stop_ratios=(0.9,),
                shifts=("noise", "blur"))
    grid, res = {}, {}
    # adapted - base greedy per (shift, seed): noise +10, +20 ; blur -10, -30 for every configuration
    deltas = {("noise", 1): 0.1, ("noise", 2): 0.2, ("blur", 1): -0.1, ("blur", 2): -0.3}
    for c in G.CONFIGS:
        for (shift, seed), d in deltas.items():
            r = Run(f"{G.slug(c)}_{shift}_{seed}", "protocol_a_full", [], c, f"test_{shift}")
            grid[(c, shift, seed)] = r
            key = f"val-core/digits_test_{shift}/acc"
            res[r.name] = {f"base/{key}/mean@1": 0.5, f"adapted/{key}/mean@1": 0.5 + d, f"base/{key}/maj@4": 0.6}
    best = {c: ("lr 0.0001", ["actor_rollout_ref.actor.optim.lr=0.0001"], 0.7) for c in G.CONFIGS}
    md = G.report(s, best, 0.6, "view_vote", grid, res)
    # noise: mean +15.0 (std 7.1); blur: mean -20.0 (std 14.1); mean over splits -2.5, worst -20.0
    assert "| ttrv (lr 0.0001) | 70.0 | +15.0 ± 7.1 | -20.0 ± 14.1 | -2.5 | -20.0 |" in md
    # adapted - base maj@4: noise 0.6 / 0.7 - 0.6 -> +5.0 ; blur 0.4 / 0.2 - 0.6 -> -30.0
    assert "| ttrv (lr 0.0001) | 70.0 | +5.0 ± 7.1 | -30.0 ± 14.1 | -12.5 | -30.0 |" in md
    assert ("Label-free rewards, protocol (a): chosen on dev = view_vote (lr 0.0001): mean Δ greedy = -2.5 points, "
            "worst split Δ greedy = -20.0 points\n") in md
    assert "**missed**" in md and "Tried: 8 configurations" in md
