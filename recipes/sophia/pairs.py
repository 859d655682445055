"""SOPHIA task data: two real handwritten digits side by side, questions on their sum, difference, product
and which is larger (``python -m recipes.sophia.pairs --out data/sophia_pairs``).

The 1,797 scikit-learn digits are split once (seeded permutation) into three disjoint pools, so no digit
image is shared between roles:

- ``caption_train`` (pool ``pretrain``, 1,000 digits): pair images with the reference description
  ("The left digit is 3. The right digit is 7.") as the answer to the fixed describe prompt; only for
  pretraining the tiny captioner VLM. No questions.
- ``sophia_train`` (pool ``sophia``, 397 digits): questions whose images the pipeline captions and reasons
  over; the gold answers are read by the reward only.
- ``eval`` (pool ``eval``, 400 digits): held-out questions (greedy VLM accuracy before / after).
- ``dev`` (pool ``sophia``): other pairs of the training digits, labeled, for choosing hyper-parameters
  (the selection threshold α) without looking at ``eval``.

``--shift NAME`` (one of ``verl.data.digits.SHIFT_FNS``) renders every *question* image (``sophia_train``,
``eval``, ``dev``) with that shift applied to each digit, while ``caption_train`` stays clean: the captioner is
pretrained on clean pairs and misreads many shifted ones (the hard captioning regime,
``data/sophia_pairs_hard``). Same digits, pairs and questions as the clean build.

Records are TTRV JSON (``prompt`` with an ``<image>`` placeholder, ``image_path`` relative to the JSON
file, ``answer``, ``source``, ``id``) plus ``left``, ``right``, ``qtype`` (kept in ``Record.extra``), so
``verl.data.formats.load_records`` reads them. Question types cycle through ``QTYPES`` so every split is
balanced. Each record comes from its own RNG stream: the output is byte-identical for a seed and a
smaller size keeps the first records of a larger build.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from recipes.sophia.prompts import BRIEF_CAPTION_PROMPT
from verl.data.digits import SHIFT_FNS, render_digit

QTYPES = ("sum", "difference", "product", "larger")
QUESTIONS = {
    "sum": "What is the sum of the two digits in the image?",
    "difference": "What is the larger digit minus the smaller digit in the image?",
    "product": "What is the product of the two digits in the image?",
    "larger": "Which of the two digits in the image is larger? Answer with that digit.",
}
POOL_SIZES = {"pretrain": 1000, "sophia": 397, "eval": 400}
SPLITS = {"caption_train": "pretrain", "sophia_train": "sophia", "eval": "eval", "dev": "sophia"}
DEFAULT_SIZES = {"caption_train": 2000, "sophia_train": 1024, "eval": 200, "dev": 200}
DIGIT_PX = 56


def gold_answer(qtype: str, left: int, right: int) -> str:
    """The gold answer (an integer as text) of a question type for the two digits."""
    if qtype == "sum":
        return str(left + right)
    if qtype == "difference":
        return str(abs(left - right))
    if qtype == "product":
        return str(left * right)
    if qtype == "larger":
        return str(max(left, right))
    raise ValueError(f"unknown question type {qtype!r}; known: {list(QTYPES)}")


def describe(left: int, right: int) -> str:
    """The reference description of a pair image (the captioner's pretraining target)."""
    return f"The left digit is {left}. The right digit is {right}."


def question_prompt(qtype: str) -> str:
    """TTRV-style prompt string of a question (image placeholder first)."""
    return f"<image> \n {QUESTIONS[qtype]}"


def render_pair(left8: np.ndarray, right8: np.ndarray, size: int = DIGIT_PX, shift: str | None = None,
                rng: np.random.Generator | None = None) -> Image.Image:
    """Two 8×8 digits rendered (``verl.data.digits.render_digit``, ``shift`` applied to each, drawn from
    ``rng``) side by side: size × 2·size RGB."""
    rng = rng if rng is not None else np.random.default_rng(0)  # unused by the clean rendering
    a = np.asarray(render_digit(left8, size, shift, rng))
    b = np.asarray(render_digit(right8, size, shift, rng))
    return Image.fromarray(np.concatenate([a, b], axis=1))


def split_pools(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Disjoint digit-index pools (seeded permutation of all digits)."""
    if sum(POOL_SIZES.values()) != len(labels):
        raise ValueError(f"pool sizes {POOL_SIZES} do not add up to {len(labels)} digits")
    perm = np.random.default_rng([seed, 4242]).permutation(len(labels))
    out, start = {}, 0
    for name, n in POOL_SIZES.items():
        out[name] = perm[start:start + n]
        start += n
    return out


def build_pairs_dataset(out_dir: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                        shift: str | None = None) -> dict[str, Path]:
    """Write the splits (JSON + PNG) under ``out_dir`` (question images with ``shift``); returns
    ``{split: json path, "manifest": path}``."""
    from sklearn.datasets import load_digits

    if shift is not None and shift not in SHIFT_FNS:
        raise ValueError(f"unknown shift {shift!r}; known: {sorted(SHIFT_FNS)}")
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; known: {list(SPLITS)}")
    out = Path(out_dir)
    digits = load_digits()
    images8, labels = digits.images, digits.target.astype(int)
    pools = split_pools(labels, seed)
    paths: dict[str, Path] = {}
    manifest: dict = {"dataset": "digit_pairs", "seed": seed, "digit_px": DIGIT_PX, "pools": POOL_SIZES,
                      "shift": shift, "splits": {}}
    for code, (split, pool) in enumerate(SPLITS.items()):
        idx = pools[pool]
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(sizes[split]):
            rng = np.random.default_rng([seed, code, i])
            li, ri = (int(x) for x in rng.choice(idx, size=2, replace=False))
            left, right = int(labels[li]), int(labels[ri])
            rid = f"{split}_{i:05d}"
            rel = f"images/{split}/{rid}.png"
            pair_shift = None if split == "caption_train" else shift
            render_pair(images8[li], images8[ri], shift=pair_shift, rng=np.random.default_rng([seed, code, i, 7])).save(
                out / rel, format="PNG")
            common = {"image_path": rel, "source": f"digit_pairs_{split}", "id": rid, "left": left, "right": right,
                      "digit_index": [li, ri]}
            if split == "caption_train":
                rows.append({"prompt": "<image> \n" + BRIEF_CAPTION_PROMPT, "answer": describe(left, right),
                             "qtype": "describe", **common})
            else:
                qtype = QTYPES[i % len(QTYPES)]
                rows.append({"prompt": question_prompt(qtype), "answer": gold_answer(qtype, left, right),
                             "qtype": qtype, **common})
        p = out / f"{split}.json"
        p.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        paths[split] = p
        manifest["splits"][split] = {"n": len(rows), "pool": pool, "file": p.name}
    paths["manifest"] = out / "manifest.json"
    paths["manifest"].write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return paths


def ensure_pairs_dataset(out_dir: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                         shift: str | None = None) -> Path:
    """Build the dataset unless ``out_dir/manifest.json`` already records the same seed, sizes and shift."""
    out = Path(out_dir)
    want = {**DEFAULT_SIZES, **(sizes or {})}
    m = out / "manifest.json"
    if m.is_file():
        old = json.loads(m.read_text())
        same = old.get("seed") == seed and old.get("shift") == shift
        if same and {k: v["n"] for k, v in old.get("splits", {}).items()} == want:
            return out
    build_pairs_dataset(out, seed=seed, sizes=want, shift=shift)
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/sophia_pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shift", default=None, choices=sorted(SHIFT_FNS),
                    help="shift of the question images (caption_train stays clean): the hard captioning regime")
    for split, n in DEFAULT_SIZES.items():
        ap.add_argument(f"--n-{split.replace('_', '-')}", type=int, default=n, dest=split)
    a = ap.parse_args(argv)
    out = ensure_pairs_dataset(a.out, a.seed, {s: getattr(a, s) for s in DEFAULT_SIZES}, a.shift)
    for split, info in json.loads((out / "manifest.json").read_text())["splits"].items():
        print(f"{split:14s} n={info['n']:5d} pool={info['pool']}")
    return out


if __name__ == "__main__":
    main()
