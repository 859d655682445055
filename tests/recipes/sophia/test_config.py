"""Typed SOPHIA config (Hydra on the schema): the shipped YAMLs load, overrides apply, unknown keys and bad
values fail by name, and the command line turns them into one `error:` line with exit 2."""

from __future__ import annotations

import pytest

from recipes.sophia.config import CONFIG_DIR, load_sophia_config
from verl.config.loader import ConfigError


def test_default_yaml_and_overrides():
    cfg = load_sophia_config(overrides=["select.alpha=0.5", "reason.http.model=teacher", "trainer.total_epochs=2",
                                        "actor_rollout_ref.actor.optim.lr=0.5"])
    assert cfg.select.alpha == 0.5 and cfg.reason.http.model == "teacher" and cfg.trainer.total_epochs == 2
    assert cfg.actor_rollout_ref.actor.optim.lr == 0.5
    assert cfg.run_path.as_posix() == "logs/sophia/cpu_tiny"
    assert cfg.trainer.default_local_dir == "logs/sophia/cpu_tiny/checkpoints"
    assert cfg.actor_rollout_ref.model.freeze_vision_tower and cfg.reason.n == 8 and cfg.caption.k == 4
    assert cfg.trainer.device in ("cpu", "cuda")  # auto resolved
    assert not cfg.actor_rollout_ref.actor.use_kl_loss and cfg.actor_rollout_ref.ref.enable is False


def test_paper_config_has_the_paper_hyper_parameters():
    cfg = load_sophia_config("sophia", ["actor_rollout_ref.model.path=m", "reason.http.model=r", "data.train_file=t.json",
                                        "data.eval_file=e.json"])
    a = cfg.actor_rollout_ref.actor
    assert (cfg.caption.k, cfg.reason.n, a.ppo_mini_batch_size, a.optim.lr, a.optim.min_lr_ratio,
            a.optim.weight_decay, a.optim.lr_scheduler_type) == (8, 8, 512, 2e-5, 0.25, 0.05, "cosine")
    assert cfg.actor_rollout_ref.model.freeze_vision_tower and cfg.select.alpha == 0.75
    assert cfg.select.pick == "shortest" and cfg.trainer.total_epochs == 1


@pytest.mark.parametrize("override, key", [
    ("select.alhpa=0.1", "select.alhpa"),
    ("reason.http.bse_url=x", "reason.http.bse_url"),
    ("+selct.alpha=0.1", "selct"),
    ("actor_rollout_ref.actor.optim.lrr=1", "actor_rollout_ref.actor.optim.lrr"),
])
def test_unknown_override_key_is_named(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        load_sophia_config(overrides=[override])


def test_unknown_yaml_key_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("defaults:\n  - ppo_trainer_schema\n  - _self_\nselect:\n  alpha: 0.5\n"
                                       "  keepn: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'select.keepn'.*did you mean 'select.keep_n'"):
        load_sophia_config("bad", config_dir=tmp_path)


@pytest.mark.parametrize("override, match", [
    ("actor_rollout_ref.actor.loss_agg_mode=sum", "loss_agg_mode"),
    ("reason.backend=grpc", "reason.backend"),
    ("select.alpha=1.5", "select.alpha"),
    ("select.alpha=-0.1", "select.alpha"),
    ("reason.n=zero", "reason.n"),
    ("stages=[caption,train]", "stages"),
    ("reason.backend=http", "reason.http.model"),
    ("actor_rollout_ref.actor.use_kl_loss=true", "use_kl_loss"),
    ("trainer.n_gpus_per_node=2", "trainer.backend=local"),
    ("trainer.test_freq=5", "trainer.test_freq=5 does nothing in SOPHIA"),
    ("actor_rollout_ref.rollout.temperature=0.5", "rollout.temperature=0.5 does nothing in SOPHIA .*caption"),
    ("trainer.guard.enable=false", "trainer.guard.enable=False does nothing in SOPHIA"),
])
def test_bad_values_fail(override, match):
    with pytest.raises(ConfigError, match=match):
        load_sophia_config(overrides=[override])


def test_command_line_names_a_misspelled_key(capsys):
    from recipes.sophia.main import main

    rc = main(["--config-dir", str(CONFIG_DIR), "--config-name", "sophia_cpu_tiny", "select.alhpa=0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: unknown config key 'select.alhpa'")


def test_local_reasoner_gets_trust_remote_code(monkeypatch):
    import recipes.sophia.reasoners as R

    seen = []
    monkeypatch.setattr(R, "LocalReasoner", lambda path, trust_remote_code, device: seen.append((path, trust_remote_code)))
    cfg = load_sophia_config(overrides=["reason.trust_remote_code=true"])
    R.make_reasoner(cfg.reason)
    assert seen == [(cfg.reason.model_path, True)]


def test_report_names_the_run_folder_and_the_plots(capsys):
    from recipes.sophia.main import report

    report({"run_dir": "logs/sophia/x", "eval/base/acc": 0.0, "eval/sophia/acc": 0.785,
            "plots": ["logs/sophia/x/plots/accuracy.png", "logs/sophia/x/plots/caption_reward_hist.png"]}, 12.0)
    assert capsys.readouterr().out.splitlines() == [
        "run folder (logs, stage files, model): logs/sophia/x  (12 s)",
        "held-out VLM accuracy (greedy): base 0.0% -> SOPHIA 78.5%",
        "plots: logs/sophia/x/plots/ (accuracy.png, caption_reward_hist.png)"]
