"""Reasoning reward: answer extraction and rule-based verification."""

from __future__ import annotations

import threading

import pytest

from recipes.sophia.verify import answers_match, extract_final_answer, option_letter, reasoning_reward


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"first \boxed{1} then \boxed{\frac{a}{b+1}}", r"\frac{a}{b+1}"),  # nested braces, last wins
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\fbox{7}", "7"),
        (r"unbalanced \boxed{3", None),
        ("blah\nAnswer: (C)\nmore words", "(C)"),
        ("I answered quickly. So the answer is 42.", "42"),
        ("Final answer:\n  B. koala", "B. koala"),
        ("no conclusion here", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("response", "gold", "reward"),
    [
        (r"... so \boxed{3.50}", "3.5", 1.0),  # numbers
        (r"\boxed{3.49}", "3.5", 0.0),
        (r"\boxed{\dfrac{1}{2}}", "0.5", 1.0),  # fractions via math-verify
        (r"\boxed{1/2}", r"\frac{1}{2}", 1.0),
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
        (r"\boxed{1000}", "1,000", 1.0),
        (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", 0.0),
        (r"\boxed{B}", "B", 1.0),  # option letters in every spelling
        (r"\boxed{(B)}", "B", 1.0),
        (r"\boxed{\text{B}}", "(B)", 1.0),
        ("The answer is B. koala.", "B", 1.0),
        (r"\boxed{B}", "B. koala", 1.0),
        (r"\boxed{E}", "E", 1.0),  # E/F are options too
        (r"\boxed{C}", "B", 0.0),
        ("This is a cat", "A", 0.0),  # no standalone letter guessing
        (r"\boxed{Because}", "B", 0.0),
        (r"\boxed{ Red  Apple! }", "red apple", 1.0),  # short text, case/space/punctuation-insensitive
        (r"\boxed{act}", "cat", 0.0),  # math-verify would call c*a*t == a*c*t: not used for text
        (r"\boxed{yes}", "No", 0.0),
        ("garbage without an answer", "3", 0.0),
        (r"\boxed{}", "3", 0.0),
        ("\\boxed{" + "(" * 400 + "}", "1", 0.0),  # pathological input: no crash, no hang
    ],
)
def test_reasoning_reward(response, gold, reward):
    assert reasoning_reward(response, gold) == reward


def test_option_letter():
    assert [option_letter(s) for s in ["(D)", "D.", "D: x", r"\text{D}", "d", "DOG", "G"]] == \
        ["D", "D", "D", "D", None, None, None]


def test_never_raises_on_odd_inputs():
    for pred, gold in [(None, "1"), ("1", None), ("\\frac{", "\\frac{1}{"), ("}}}{{{", "x^^2"), ("1" * 5000, "1")]:
        assert answers_match(pred, gold) in (True, False)


def test_works_off_the_main_thread():
    out: list[float] = []
    t = threading.Thread(target=lambda: out.append(reasoning_reward(r"\boxed{\frac{2}{4}}", "0.5")))
    t.start()
    t.join()
    assert out == [1.0]
