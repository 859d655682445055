from recipes.ttrv.readability import prompt_text, unreadable_warning
from verl.rewards.answers import INVALID

MC = [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": "<image>\nWhat colour is the ball?\nOptions:\nA. red\nB. blue"}]


def test_warns_when_most_answers_are_unreadable_quoting_two_prompts():
    answers = [INVALID, INVALID, "A", INVALID, INVALID, INVALID]
    responses = ["rouge", "rouge", "A", "bleu", "c'est bleu", "x" * 400]
    prompts = [MC] * 3 + [[{"role": "user", "content": "<image>\nWhich shape?\nOptions:\nA. cube\nB. ball"}]] * 3
    uids = ["p1"] * 3 + ["p2"] * 3
    msg = unreadable_warning(answers, responses, prompts, uids)
    assert msg.startswith("5 of 6 answers (83 %) on the first step cannot be read against the options")
    assert "\n" not in msg  # one console line
    assert ("prompt '<image> What colour is the ball? Options: A. red B. blue' -> response 'rouge'; "
            "prompt '<image> Which shape? Options: A. cube B. ball' -> response 'bleu'") in msg


def test_silent_when_half_or_more_are_readable():
    assert unreadable_warning([INVALID, "A"], ["?", "A"], [MC, MC], ["u", "u"]) is None
    assert unreadable_warning([], [], [], []) is None


def test_prompt_text_is_the_last_user_message_and_long_text_is_cut():
    assert prompt_text(MC).startswith("<image>\nWhat colour")
    msg = unreadable_warning([INVALID], ["y" * 400], ["plain prompt"], ["u"])
    assert "response '" + "y" * 157 + "...'" in msg and "prompt 'plain prompt'" in msg
