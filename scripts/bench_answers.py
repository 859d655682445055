"""Benchmark: answer extraction time vs output length on repetitive (collapse-style) outputs.

Prints, per pattern, the time at 10k and 100k characters and their ratio (linear scanning gives
a ratio near 10; the old parser took 70 s on 80k characters of a repeated cue).

    python scripts/bench_answers.py
"""

from __future__ import annotations

import time

from verl.rewards.answers import extract_answer

OPTIONS = {"A": "cello, violoncello", "B": "komondor", "C": "chambered nautilus, pearly nautilus, nautilus",
           "D": "dial telephone, dial phone"}
PATTERNS = ["The answer is ", "Answer: ", "dial phone ", "answer: the cello or komondor\n", "\\boxed{", "B. ",
            "(A) (B) ", "1,000 "]


def _time(text: str, options: dict[str, str] | None, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        extract_answer(text, options)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    print(f"{'pattern':34s} {'10k s':>9s} {'100k s':>9s} {'ratio':>6s}")
    for piece in PATTERNS:
        for options in (OPTIONS, None):
            small, big = (_time(piece * (n // len(piece)), options) for n in (10_000, 100_000))
            label = f"{piece!r}{'' if options else ' (open)'}"
            print(f"{label:34s} {small:9.4f} {big:9.4f} {big / max(small, 1e-9):6.1f}")


if __name__ == "__main__":
    main()
