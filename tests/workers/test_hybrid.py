"""The hybrid worker hands each part its typed config section."""

from __future__ import annotations

import torch

from verl.config.loader import load_config


def test_sections_reach_actor_reference_and_rollout(monkeypatch, tmp_path):
    import verl.workers.actor as actor_mod
    import verl.workers.rollout as rollout_mod
    from verl.single_controller.worker import INIT_METHOD_ENV
    from verl.workers.hybrid import ActorRolloutRefWorker

    built: list = []
    class Actor:  # records its sections; a module for the parameter count
        def __init__(self, model, actor, device, role):
            built.append((role, model, actor))
            self.module = torch.nn.Linear(1, 1)

    monkeypatch.setattr(actor_mod, "FSDPActor", Actor)
    monkeypatch.setattr(rollout_mod, "make_rollout", lambda rollout, model, **kw: built.append(("rollout", model, rollout)))
    for key, val in {"RANK": "0", "WORLD_SIZE": "1", INIT_METHOD_ENV: f"file://{tmp_path}/pg_store"}.items():
        monkeypatch.setenv(key, val)
    cfg = load_config(overrides=["trainer.device=cpu"])
    threads = torch.get_num_threads()
    try:
        ActorRolloutRefWorker(cfg).init_model()
    finally:
        torch.set_num_threads(threads)
    arr = cfg.actor_rollout_ref
    (r1, m1, a1), (r2, m2, a2), (r3, m3, ro) = built
    assert (r1, r2, r3) == ("actor", "ref", "rollout") and m1 is m2 is m3 is arr.model and ro is arr.rollout
    assert a1 is a2 is arr.actor
