"""Real handwritten digits (scikit-learn's ``load_digits``, no download) as JSON-record tasks.

Splits of the 1,797 8×8 images (stratified by digit, deterministic given ``seed``):

- ``train`` (1,000) and ``val`` (197): clean, labeled; for pretraining the tiny base model only;
- ``dev_elastic`` (100 other images, elastic distortion): shifted split reserved for hyper-parameter selection;
- ``test_noise``, ``test_blur``, ``test_rotate``, ``test_invert``, ``test_occlude``: the remaining 500
  images, each under one shift (the same images in every test split); evaluation / adaptation only.
  Shifts: Gaussian noise (sigma 0.4), Gaussian blur, rotation by 12-20 degrees, partial inversion (pixels
  blended 35-45 % toward their inverse), a grey-black occluding square; dev: elastic distortion.

Images are upscaled (bilinear) to ``image_size`` px, dark ink on a white background, RGB PNG, written
under ``out_dir/images/<split>/``. Each split gets two prompt styles: ``<split>_mc.json`` (4-way multiple
choice as in TTRV's recognition sets, answer = letter) and ``<split>_open.json`` (answer = digit); JSON
``image_path`` values are relative to ``out_dir``. A ``manifest.json`` lists splits, sizes and roles.
Every record is generated from its own RNG stream, so the output is byte-identical for a seed, and
limiting sizes keeps the first records unchanged.

Answer phrasings (for pretraining the base model, :func:`answer_phrasings`): like a real VLM's answers, an
open answer comes in several surface forms, and, like class names with one usual name or with many
synonyms, digits differ in how many: the even digits are always answered with the bare digit ("4"), the
odd digits in four forms, evenly ("seven", "Answer: 7", "It is a 7.", "The digit is seven.").  Greedy
decoding follows the most likely token path, so an odd digit's probability, split over four paths,
must be about four times an even digit's to win; a majority vote over extracted answers adds up all
forms of each digit.  Every form is read back to its digit by :func:`verl.rewards.answers.extract_answer`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

N_TRAIN, N_VAL, N_DEV = 1000, 197, 100
SHIFTS = ("noise", "blur", "rotate", "invert", "occlude")
DEV_SHIFT = "elastic"
LETTERS = "ABCD"

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SINGLE_FORM = ("{d}",)  # even digits
MANY_FORMS = ("{w}", "Answer: {d}", "It is a {d}.", "The digit is {w}.")  # odd digits, drawn evenly
MC_PROMPT = ("<image> \n Look at the given image and identify what digit it shows. Choose the correct answer "
             "from the options below and respond with only the corresponding option letter (A, B, C, or D). "
             "Do not include any explanation or extra text. \n Options:\n{options}")
OPEN_PROMPT = ("<image> \n Look at the given image and identify what digit it shows. What digit is shown? "
               "Answer with the digit only.")


# ---------------------------------------------------------------------------------------------- shifts
def _clean(img8: np.ndarray, size: int) -> np.ndarray:
    """8×8 ink intensities in [0, 16] (+1 px margin) → size×size float image in [0, 1], white paper, dark ink."""
    padded = np.pad(img8 / 16.0, 1).astype(np.float32)  # 1-pixel margin: strokes do not touch the edge
    ink = Image.fromarray(padded).resize((size, size), Image.Resampling.BILINEAR)
    return 1.0 - np.clip(np.asarray(ink, dtype=np.float64), 0.0, 1.0)


def _noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, 0.4, size=x.shape)


def _blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = float(rng.uniform(0.07, 0.09)) * x.shape[0]
    return gaussian_filter(x, sigma, mode="nearest")


def _rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = float(rng.uniform(12.0, 20.0)) * (1 if rng.random() < 0.5 else -1)
    from scipy.ndimage import rotate

    return rotate(x, angle, reshape=False, order=1, mode="constant", cval=1.0)


def _invert(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Partial inversion: every pixel blended 35-45 % toward its inverse (paper darkens, ink lightens)."""
    a = float(rng.uniform(0.35, 0.45))
    return (1.0 - a) * x + a * (1.0 - x)


def _occlude(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = x.shape[0]
    side = int(round(size * rng.uniform(0.3, 0.4)))
    lo, hi = size // 8, size - size // 8 - side  # keep the box on the digit's area
    r0, c0 = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    y = x.copy()
    y[r0:r0 + side, c0:c0 + side] = 0.0
    return y


def _elastic(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter, map_coordinates

    size = x.shape[0]
    alpha, sigma = 0.5 * size, 0.09 * size
    dx = gaussian_filter(rng.uniform(-1, 1, x.shape), sigma) * alpha
    dy = gaussian_filter(rng.uniform(-1, 1, x.shape), sigma) * alpha
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return map_coordinates(x, [rows + dy, cols + dx], order=1, mode="constant", cval=1.0)


SHIFT_FNS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": _noise, "blur": _blur, "rotate": _rotate, "invert": _invert, "occlude": _occlude,
    "elastic": _elastic,
}


def answer_phrasings(digit: int) -> list[str]:
    """The surface forms of ``digit``'s open answer (drawn evenly): one for an even digit, four for an odd one."""
    templates = SINGLE_FORM if digit % 2 == 0 else MANY_FORMS
    return [t.format(d=digit, w=NUMBER_WORDS[digit]) for t in templates]


def render_digit(img8: np.ndarray, size: int, shift: str | None, rng: np.random.Generator) -> Image.Image:
    """One 8×8 digit → RGB PIL image of ``size`` px, with an optional shift applied after upscaling."""
    x = _clean(img8, size)
    if shift is not None:
        x = SHIFT_FNS[shift](x, rng)
    gray = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


# ---------------------------------------------------------------------------------------------- splits
def _stratified_split(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Partition indices into groups of the given sizes with the class mix of the whole set."""
    from sklearn.model_selection import train_test_split

    rest = np.arange(len(labels))
    parts = []
    for k, n in enumerate(sizes[:-1]):
        take, rest = train_test_split(rest, train_size=n, stratify=labels[rest], random_state=seed + 7919 * k)
        parts.append(np.sort(take))
    if len(rest) != sizes[-1]:
        raise ValueError(f"split sizes {sizes} do not add up to {len(labels)} images")
    parts.append(np.sort(rest))
    return parts


def _split_plan() -> list[tuple[str, str | None, str, str]]:
    """(split, shift, role, pool) for every split; pool names the image group it draws from."""
    plan = [("train", None, "train", "train"), ("val", None, "val", "val"),
            (f"dev_{DEV_SHIFT}", DEV_SHIFT, "dev", "dev")]
    plan += [(f"test_{s}", s, "test", "test") for s in SHIFTS]
    return plan


def _mc_record(digit: int, rng: np.random.Generator) -> tuple[str, str]:
    distractors = rng.choice([d for d in range(10) if d != digit], size=3, replace=False)
    choices = [digit, *(int(d) for d in distractors)]
    order = rng.permutation(4)
    shown = [choices[i] for i in order]
    options = "\n".join(f"{LETTERS[i]}. {d}" for i, d in enumerate(shown))
    return MC_PROMPT.format(options=options), LETTERS[shown.index(digit)]


def build_digits_dataset(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 56,
    n_test_per_split: int | None = None,
    max_per_split: int | None = None,
) -> dict[str, Path]:
    """Write the digits splits as JSON records under ``out_dir``; returns ``{"<split>_<style>": path, "manifest": path}``.

    ``n_test_per_split`` caps the dev/test splits, ``max_per_split`` caps every split (for fast tests);
    capped splits keep the first records of the full build.
    """
    from sklearn.datasets import load_digits

    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    out = Path(out_dir)
    digits = load_digits()
    images8, labels = digits.images, digits.target.astype(int)
    n_test = len(labels) - N_TRAIN - N_VAL - N_DEV
    pools = dict(zip(("train", "val", "dev", "test"),
                     _stratified_split(labels, [N_TRAIN, N_VAL, N_DEV, n_test], seed)))
    # a fixed, seed-dependent presentation order inside each pool
    for k, name in enumerate(pools):
        pools[name] = np.random.default_rng([seed, 1000 + k]).permutation(pools[name])

    paths: dict[str, Path] = {}
    manifest_splits: dict[str, dict] = {}
    for code, (split, shift, role, pool) in enumerate(_split_plan()):
        idx = pools[pool]
        cap = max_per_split
        if role in ("dev", "test") and n_test_per_split is not None:
            cap = n_test_per_split if cap is None else min(cap, n_test_per_split)
        if cap is not None:
            idx = idx[:cap]
        img_dir = out / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        rows_mc, rows_open = [], []
        for orig in idx.tolist():
            digit = int(labels[orig])
            rid = f"d{orig:04d}"
            img = render_digit(images8[orig], image_size, shift, np.random.default_rng([seed, code, orig, 0]))
            rel = f"images/{split}/{rid}.png"
            img.save(out / rel, format="PNG")
            prompt, letter = _mc_record(digit, np.random.default_rng([seed, code, orig, 1]))
            common = {"image_path": rel, "source": f"digits_{split}", "id": rid, "digit": str(digit),
                      "shift": shift or "none"}
            rows_mc.append({"prompt": prompt, "answer": letter, **common})
            rows_open.append({"prompt": OPEN_PROMPT, "answer": str(digit), **common})
        for style, rows in (("mc", rows_mc), ("open", rows_open)):
            p = out / f"{split}_{style}.json"
            p.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            paths[f"{split}_{style}"] = p
        manifest_splits[split] = {
            "n": len(idx), "shift": shift or "none", "role": role,
            "labeled_for_training": role in ("train", "val"),
            "files": {"mc": f"{split}_mc.json", "open": f"{split}_open.json"},
            "class_counts": np.bincount(labels[idx], minlength=10).tolist(),
        }
    manifest = {
        "dataset": "digits", "origin": "sklearn.datasets.load_digits (1,797 8x8 handwritten digits)",
        "seed": seed, "image_size": image_size, "n_test_per_split": n_test_per_split,
        "max_per_split": max_per_split, "splits": manifest_splits,
        "notes": {"train/val": "clean, labeled: pretraining of the base model only",
                  "dev": "shift reserved for hyper-parameter selection (disjoint images)",
                  "test": "evaluation / test-time adaptation only; labels for metrics only"},
    }
    paths["manifest"] = out / "manifest.json"
    paths["manifest"].write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """CLI: ``python -m verl.data.digits --out data/digits --seed 0``."""
    ap = argparse.ArgumentParser(description="Build the digits test-time-adaptation tasks as JSON records.")
    ap.add_argument("--out", default="data/digits", help="output folder (default: data/digits)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=56)
    ap.add_argument("--n-test-per-split", type=int, default=None, help="cap the dev/test splits")
    ap.add_argument("--max-per-split", type=int, default=None, help="cap every split (quick builds)")
    args = ap.parse_args(argv)
    paths = build_digits_dataset(args.out, seed=args.seed, image_size=args.image_size,
                                 n_test_per_split=args.n_test_per_split, max_per_split=args.max_per_split)
    manifest = json.loads(paths["manifest"].read_text())
    for split, info in manifest["splits"].items():
        print(f"{split:14s} n={info['n']:5d} role={info['role']:5s} shift={info['shift']}")
    print(f"wrote {len(paths) - 1} JSON files + images under {args.out}")
    return paths


if __name__ == "__main__":
    main()
