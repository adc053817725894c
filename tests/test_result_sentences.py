"""The sentences chapters 1, 8e, 9 and 10 print about results are chosen by the numbers they report."""
import numpy as np
import pandas as pd

from booktools import FADE_RULE, coefficient_fading, difference_sentence, fading_sentence, paired_difference


def record(first: float, last: float, epochs: int = 4, steps: int = 5) -> dict:
    """A fake MLB record whose |k - 1| goes linearly from `first` (epoch 0) to `last` (last epoch)."""
    dev = np.repeat(np.linspace(first, last, epochs), steps)               # (epochs * steps,)
    return {"trace": {"epoch": np.repeat(np.arange(epochs), steps).tolist(),
                      "coeff/audio": (1 - dev).tolist(), "coeff/video": (1 + dev).tolist()}}


def test_fading_measures_mean_abs_deviation_per_epoch_and_counts_seeds():
    table = coefficient_fading({0: record(0.4, 0.1), 1: record(0.2, 0.3)})
    np.testing.assert_allclose(table.loc["video", "|k-1| first epoch"], 0.3)
    np.testing.assert_allclose(table.loc["audio", "|k-1| last epoch"], 0.2)
    np.testing.assert_allclose(table.loc["audio", "last / first"], 0.2 / 0.3)
    assert table.loc["video", "seeds closer to 1"] == "1/2"


def test_the_sentence_follows_the_rule_not_the_hope():
    fades = fading_sentence(coefficient_fading({0: record(0.4, 0.4 * FADE_RULE * 0.9)}))
    shrinks = fading_sentence(coefficient_fading({0: record(0.4, 0.4 * (1 + FADE_RULE) / 2)}))
    grows = fading_sentence(coefficient_fading({0: record(0.02, 0.3)}))
    assert "k_video:\n    fades towards 1" in fades and "does not fade" not in fades
    assert "by less than the rule asks" in shrinks
    assert "k_audio:\n    does not fade" in grows and "ratio 15.00" in grows and "0/1 seeds" in grows
    assert f"below {FADE_RULE}" in grows


def test_difference_sentence_reports_mean_std_wins_and_p():
    runs = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "fusion": "concat", "seed": [1, 2, 3] * 2,
                         "test_accuracy": [0.80, 0.82, 0.79, 0.78, 0.80, 0.80]})
    text = difference_sentence(paired_difference(runs, "a", "b"), "A", "B")
    assert text.startswith("A - B: +1.0 ± 1.4 points fused accuracy,\n    A ahead on 2 of 3 seeds, paired t-test p = 0.")
    assert "rule: within seed noise" in text
    one = paired_difference(runs[runs["seed"] == 1], "a", "b")
    assert difference_sentence(one, "A", "B").endswith("1 paired seeds, no verdict")
