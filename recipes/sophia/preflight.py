"""Checks of everything a SOPHIA run reads, before any caption is generated.

Each failure raises ``ValueError`` / ``FileNotFoundError`` with one line naming what and where (file and
record id, config key, URL); ``recipes.sophia.main`` prints it as ``error: ...`` and exits 2. Checked: the
train and eval files (readable, every record has a gold answer, every image exists and decodes), the policy
model folder, and the reasoner (local: its folder; http: the server answers ``GET /models`` and serves
``reason.http.model``). ``select.alpha`` and the other ranges are checked by the config itself.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from recipes.sophia.config import SophiaConfig

logger = logging.getLogger("recipes.sophia.preflight")


def check_data(cfg: SophiaConfig) -> None:
    """Both question files: readable records, a gold answer each, images present and readable."""
    from verl.data.formats import load_records
    from verl.data.validate import validate_records

    d = cfg.data
    splits = [("data.train_file", d.train_file, d.max_train)]
    if "evaluate" in cfg.stages:
        splits.append(("data.eval_file", d.eval_file, d.max_eval))
    for key, file, max_n in splits:
        path = Path(d.dir) / file
        if not path.is_file():
            raise FileNotFoundError(f"{key}: {path} not found (data.dir={d.dir})")
        records = load_records([path], format=d.format, image_root=d.image_root)
        records = records[:max_n] if max_n > 0 else records
        if not records:
            raise ValueError(f"{key}: {path} has no records")
        for r in records:
            if r.ground_truth is None or not str(r.ground_truth).strip():
                raise ValueError(f"{r.where()}: no gold answer ('answer' field); SOPHIA's rewards need one for "
                                 f"every question ({key})")
        validate_records(records, on_invalid="error")


def check_policy(cfg: SophiaConfig) -> None:
    from verl.models.load import check_model_folder

    try:
        check_model_folder(cfg.model_path)
    except (OSError, ValueError) as err:
        raise ValueError(f"actor_rollout_ref.model.path: {err}") from err


def served_models(base_url: str, api_key_env: str | None, timeout_s: float = 10.0) -> list[str]:
    """Model ids an OpenAI-compatible server lists at ``GET <base_url>/models``; ``ValueError`` naming the URL
    when it cannot be reached or does not answer like one."""
    url = base_url.rstrip("/") + "/models"
    req = urllib.request.Request(url)
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (the configured server)
            body = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        raise ValueError(f"reason.http.base_url: {url} answered HTTP {err.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(f"reason.http.base_url: cannot reach {url} ({reason})") from None
    except ValueError:
        raise ValueError(f"reason.http.base_url: {url} did not answer with JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError(f"reason.http.base_url: {url} did not answer like an OpenAI-compatible server")
    return [str(m.get("id")) for m in body["data"] if isinstance(m, dict)]


def check_reasoner(cfg: SophiaConfig) -> None:
    r = cfg.reason
    if r.backend == "local":
        if not (Path(r.model_path) / "config.json").is_file():
            raise FileNotFoundError(f"reason.model_path: no model folder at {r.model_path} (config.json missing)")
        return
    served = served_models(r.http.base_url, r.http.api_key_env, min(r.http.timeout_s, 30.0))
    if r.http.model not in served:
        raise ValueError(f"reason.http.model: {r.http.base_url} does not serve {r.http.model!r}; it serves {served}")


def preflight(cfg: SophiaConfig) -> None:
    """All checks above, in the order a user would fix them."""
    if {"update", "evaluate"} <= set(cfg.stages) and cfg.eval.max_new_tokens < cfg.update.max_response_tokens:
        logger.warning("eval.max_new_tokens=%d < update.max_response_tokens=%d: an answer trained at full length is "
                       "cut before its final answer and scored wrong", cfg.eval.max_new_tokens,
                       cfg.update.max_response_tokens)
    check_data(cfg)
    check_policy(cfg)
    if {"reason", "reward", "select"} & set(cfg.stages):
        check_reasoner(cfg)
