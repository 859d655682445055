"""Online (prequential) TTRV: every item is answered by the current model before any update used it.

    python -m recipes.ttrv.online --config-name protocol_e_online [key=value ...]

Items arrive in file order (``data.train_files``, the first ``online.items_per_source`` of each data
source).  The stream is cut into chunks of ``online.k`` items; for each chunk the current model answers
every item greedily (that answer is the item's prediction), then one update runs: ``online.steps_per_update``
of the trainer's GRPO steps (:meth:`verl.trainer.fit.Trainer.train_step`), the first on the chunk's items
plus items drawn from the window (the last ``online.window`` items seen, -1 = all since the last reset),
the others on window items only.  ``online.mode=episodic`` restores the initial weights (and optimizer)
at every task boundary (a ``data_source`` change, or every ``online.episode_items`` items) and empties the
window; ``continual`` never resets.

Outputs in the run folder: ``predictions.jsonl`` (one row per item in arrival order: ``id``, ``uid``,
``data_source``, ``position``, ``episode``, ``answer``, ``base_answer``, ``answered_after_updates``,
``first_trained_in_update``) and metrics ``online/prequential_acc`` and ``online/base_acc`` (the base
model's greedy accuracy on the same items; labels are read only by :func:`prequential_metrics`).  A
checkpoint after every ``online.save_every`` updates holds the stream position, so a killed run resumes
exactly (``trainer.resume_mode=auto``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verl.config.loader import ConfigError, load_config
from verl.config.schema import RLConfig
from verl.data.formats import Record
from verl.trainer.predictions import write_jsonl
from verl.utils.cli import run_command, setup_logging

logger = logging.getLogger("recipes.ttrv.online")
CONFIG_DIR = Path(__file__).resolve().parent / "config"
MODES = ("continual", "episodic")
BASE_DIR = "online_base"  # under trainer.default_local_dir: the initial weights episodic resets restore
BASE_DONE = "complete"


@dataclass
class OnlineConfig:
    mode: str = "continual"  # continual | episodic
    k: int = 8  # items answered between two updates (<= data.train_batch_size)
    window: int = -1  # updates draw from the last `window` items seen since the last reset; -1 = all
    steps_per_update: int = 1  # trainer steps per update (batches of data.train_batch_size prompts)
    episode_items: int = 0  # episodic: also start a new episode every this many items (0: data_source only)
    items_per_source: int = -1  # first items of each data_source in the stream (-1: all)
    save_every: int = 1  # updates between checkpoints (0: none)


@dataclass
class OnlineRLConfig(RLConfig):
    """The trainer's config plus the ``online`` section."""

    online: OnlineConfig = field(default_factory=OnlineConfig)


def check_online(cfg: OnlineRLConfig) -> None:
    """One readable error naming the key when the ``online`` section cannot work."""
    o = cfg.online
    if o.mode not in MODES:
        raise ConfigError(f"online.mode must be one of {MODES}, got {o.mode!r}")
    if not 1 <= o.k <= cfg.data.train_batch_size:
        raise ConfigError(f"online.k ({o.k}) must be in [1, data.train_batch_size={cfg.data.train_batch_size}]")
    if o.window != -1 and o.window < o.k:
        raise ConfigError(f"online.window ({o.window}) must be -1 (all) or >= online.k ({o.k})")
    if o.steps_per_update < 1:
        raise ConfigError(f"online.steps_per_update must be >= 1, got {o.steps_per_update}")
    if o.episode_items < 0 or o.save_every < 0:
        raise ConfigError(f"online.episode_items ({o.episode_items}) and online.save_every ({o.save_every}) "
                          "must be >= 0")


# ---------------------------------------------------------------- pure planning (no models)
def stream_order(records: list[Record], items_per_source: int) -> list[Record]:
    """Records in file order, keeping the first ``items_per_source`` of each data source (-1: all)."""
    seen: dict[str, int] = {}
    out = []
    for r in records:
        seen[r.data_source] = seen.get(r.data_source, 0) + 1
        if items_per_source < 0 or seen[r.data_source] <= items_per_source:
            out.append(r)
    return out


def episodes(sources: list[str], mode: str, episode_items: int) -> list[int]:
    """Episode number of every stream position: continual -> all 0; episodic -> a new episode at each
    data_source change and after every ``episode_items`` items of one episode (0: no length limit)."""
    out, ep, start = [], 0, 0
    for pos, src in enumerate(sources):
        if mode == "episodic" and pos > 0 and (src != sources[pos - 1] or (episode_items and pos - start == episode_items)):
            ep, start = ep + 1, pos
        out.append(ep)
    return out


def chunks(episode_of: list[int], k: int) -> list[list[int]]:
    """Consecutive positions in chunks of at most ``k``; a chunk never crosses an episode boundary."""
    out: list[list[int]] = []
    for pos, ep in enumerate(episode_of):
        if out and len(out[-1]) < k and episode_of[out[-1][0]] == ep:
            out[-1].append(pos)
        else:
            out.append([pos])
    return out


def update_batches(new: list[int], window: list[int], batch_size: int, steps: int,
                   rng: np.random.Generator) -> list[list[int]]:
    """Positions of each step's batch: step 1 = the new items + window draws, later steps = window draws."""
    older = [p for p in window if p not in set(new)]
    batches = []
    for step in range(steps):
        head = list(new) if step == 0 else []
        pool = older if step == 0 else window
        fill = min(batch_size - len(head), len(pool))
        extra = [pool[i] for i in sorted(rng.choice(len(pool), size=fill, replace=False))] if fill > 0 else []
        batches.append(head + extra)
    return batches


def prequential_metrics(rows: list[dict], labels: dict[str, str]) -> dict[str, float]:
    """The only label reader: accuracy of the online answers and of the base answers on the same items."""
    scored = [r for r in rows if r["uid"] in labels]
    if not scored:
        return {}
    out = {"online/prequential_acc": float(np.mean([r["answer"] == labels[r["uid"]] for r in scored])),
           "online/base_acc": float(np.mean([r["base_answer"] == labels[r["uid"]] for r in scored])),
           "online/items": float(len(rows))}
    for src in sorted({r["data_source"] for r in scored}):
        part = [r for r in scored if r["data_source"] == src]
        out[f"online/{src}/prequential_acc"] = float(np.mean([r["answer"] == labels[r["uid"]] for r in part]))
        out[f"online/{src}/base_acc"] = float(np.mean([r["base_answer"] == labels[r["uid"]] for r in part]))
    return out


# ---------------------------------------------------------------- the driver
class OnlineRun:
    """Drives a :class:`~verl.trainer.fit.Trainer` (its step and generation) through the stream."""

    def __init__(self, cfg: OnlineRLConfig, stream: list[Record], tracker: Any) -> None:
        from verl.trainer.fit import Trainer

        check_online(cfg)
        self.cfg, self.stream, self.tracker = cfg, stream, tracker
        self.trainer = Trainer(cfg, stream, [], tracker)
        self.episode_of = episodes([r.data_source for r in stream], cfg.online.mode, cfg.online.episode_items)
        self.chunks = chunks(self.episode_of, cfg.online.k)
        self.base_dir = Path(cfg.trainer.default_local_dir) / BASE_DIR
        self.state: dict[str, Any] = {}

    def _answer(self, positions: list[int]) -> list[str]:
        """Greedy answers of the current model, in the order of ``positions``."""
        recs = [self.stream[p] for p in positions]
        gen = self.trainer._generate(recs, self.trainer._sampling(1, greedy=True))
        by_uid = dict(zip(gen.non_tensor_batch["uid"], gen.non_tensor_batch["answer"]))
        return [str(by_uid[r.uid]) for r in recs]

    def _fresh_state(self) -> dict[str, Any]:
        base = self._answer(list(range(len(self.stream))))
        return {"chunk": 0, "updates": 0, "window": [], "rows": [], "base_answers": base, "frozen": False}

    def _reset(self) -> None:
        """Episodic task boundary: the initial weights and optimizer state, an empty window, a fresh guard."""
        from verl.trainer.guards import CollapseGuard

        self.trainer.wg.load_checkpoint(str(self.base_dir))
        self.state["window"] = []
        if self.trainer.guard is not None:
            self.trainer.guard = CollapseGuard(self.cfg.trainer.guard)

    def run(self) -> dict[str, float]:
        t, o = self.trainer, self.cfg.online
        t.init_workers()
        resumed = t._maybe_resume()
        if resumed is None:  # a fresh run: its initial weights are what episodic resets restore
            (self.base_dir / BASE_DONE).unlink(missing_ok=True)
            self.base_dir.mkdir(parents=True, exist_ok=True)
            t.wg.save_checkpoint(str(self.base_dir))
            (self.base_dir / BASE_DONE).write_text("ok\n")
        elif not (self.base_dir / BASE_DONE).is_file():
            raise FileNotFoundError(f"{self.base_dir} is missing or incomplete: cannot resume the online run")
        self.state = resumed["online"] if resumed is not None else self._fresh_state()
        n_items = len(self.stream)
        if len(self.state["base_answers"]) != n_items:
            raise ConfigError(f"{self.cfg.trainer.default_local_dir} holds an online run over "
                              f"{len(self.state['base_answers'])} items, this config streams {n_items}: a changed "
                              "stream cannot resume it (choose another trainer.experiment_name or delete that folder)")
        preds = self.tracker.run_dir / "predictions.jsonl"
        while self.state["chunk"] < len(self.chunks):
            new = self.chunks[self.state["chunk"]]
            if o.mode == "episodic" and new[0] > 0 and self.episode_of[new[0]] != self.episode_of[new[0] - 1]:
                self._reset()
            for pos, ans in zip(new, self._answer(new)):
                r = self.stream[pos]
                self.state["rows"].append({
                    "id": r.record_id, "uid": r.uid, "data_source": r.data_source, "position": pos,
                    "episode": self.episode_of[pos], "answer": ans, "base_answer": self.state["base_answers"][pos],
                    "answered_after_updates": self.state["updates"], "first_trained_in_update": None})
            window = self.state["window"] + new
            self.state["window"] = window if o.window == -1 else window[-o.window:]
            metrics = {} if self.state["frozen"] else self._update(new)
            self.state["chunk"] += 1
            metrics.update(prequential_metrics(self.state["rows"], t._labels))
            self.tracker.log(metrics, step=t.global_step)
            write_jsonl(preds, self.state["rows"])
            if o.save_every and self.state["updates"] % o.save_every == 0:
                t.save_checkpoint(extra={"online": self.state})
        summary = prequential_metrics(self.state["rows"], t._labels)
        self.tracker.summary(summary)
        return summary

    def _update(self, new: list[int]) -> dict[str, float]:
        """One update on the chunk + window; marks the items it uses for the first time."""
        t = self.trainer
        self.state["updates"] += 1
        rng = np.random.default_rng([self.cfg.data.seed, self.state["updates"]])
        metrics: dict[str, float] = {}
        first = {row["position"]: row for row in self.state["rows"] if row["first_trained_in_update"] is None}
        for batch in update_batches(new, self.state["window"], self.cfg.data.train_batch_size,
                                    self.cfg.online.steps_per_update, rng):
            t.global_step += 1
            metrics, timing = t.train_step([self.stream[p] for p in batch])
            metrics.update(timing)
            for p in batch:
                if p in first:
                    first.pop(p)["first_trained_in_update"] = self.state["updates"]
        metrics["online/updates"] = float(self.state["updates"])
        if t._act_on_guard(metrics):  # stop / rollback: no more updates, the stream is still answered
            self.state["frozen"] = True
        return metrics


def run(cfg: OnlineRLConfig) -> dict[str, float]:
    from verl.logging.tracker import Tracker
    from verl.trainer.main import init_ray, load_data

    records, _ = load_data(cfg)
    stream = stream_order(records, cfg.online.items_per_source)
    logger.info("online stream: %d items, mode %s, k %d", len(stream), cfg.online.mode, cfg.online.k)
    tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, list(cfg.trainer.logger),
                      log_dir=cfg.trainer.log_dir, config=cfg)
    if cfg.trainer.backend == "ray":
        init_ray(cfg)
    driver = OnlineRun(cfg, stream, tracker)
    try:
        summary = driver.run()
    finally:
        driver.trainer.close()
        tracker.finish()
    print(f"prequential accuracy {summary['online/prequential_acc']:.4f} (base {summary['online/base_acc']:.4f}) "
          f"on {len(stream)} items; predictions: {tracker.run_dir / 'predictions.jsonl'}")
    return summary


def load_online_config(config_name: str, overrides: list[str], config_dir: str | Path = CONFIG_DIR) -> OnlineRLConfig:
    cfg = load_config(config_name, overrides, config_dir=config_dir, schema=OnlineRLConfig)
    check_online(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2: bad config, data, model or checkpoint)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", default=str(CONFIG_DIR))
    p.add_argument("--config-name", default="protocol_e_online")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. online.mode=episodic online.k=4")
    args = p.parse_args(argv)
    setup_logging()

    def setup() -> None:  # the whole run: its config, data, model and checkpoint errors say what and where
        run(load_online_config(args.config_name, args.overrides, args.config_dir))

    return run_command(setup)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
