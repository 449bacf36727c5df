"""Label shift between a run's splits: each objective's label rate per split, and a warning when
it moves between train and validation or between validation and test.

Why it matters: a run starts every output bias at the train split's rate and calibration
(config.calibrate) moves it to the validation split's, so a test split whose rate moved away
from validation's ends miscalibrated by about the ratio of the two, whatever the model: with a
time split whose click rate went .216 (valid) -> .248 (test), test calibration ends near
.216 / .248 = 0.87. Nothing in the metrics says why; the warning does.

A shift is reported when both hold:

- it is large: |rate_b - rate_a| / rate_a above LABEL_SHIFT_THRESHOLD, 10 %. That is the band
  the fleet's calibration is held to (docs/training.md: test calibration within [0.9, 1.1]),
  and a shift of 10 % moves calibration out of it on its own;
- it is not sampling noise: the two-proportion z statistic is at least LABEL_SHIFT_MIN_Z (3). A
  rate of 0.05 measured on 10,000 rows has a relative standard error of 4.4 %, so two such
  splits of one distribution differ by over 10 % about one time in ten; the z guard keeps
  synthetic data of one distribution (and small splits) quiet.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .metrics import format_by_split

LABEL_SHIFT_THRESHOLD = 0.10
LABEL_SHIFT_MIN_Z = 3.0
SPLIT_PAIRS = (("train", "valid"), ("valid", "test"))


@dataclass(frozen=True)
class LabelShift:
    """One objective's label rate moving from one split to the next.

    Attributes:
        objective: the objective's name.
        splits: (from, to), e.g. ("valid", "test").
        rates: the two label rates.
        relative: (rate_to - rate_from) / rate_from.
    """

    objective: str
    splits: tuple[str, str]
    rates: tuple[float, float]
    relative: float

    @property
    def message(self) -> str:
        """The warning line (without the model's name)."""
        (first, second), (before, after) = self.splits, self.rates
        consequence = (
            f"calibration targets the validation rate, so expect test calibration near {before / after:.2f}"
            if self.splits == ("valid", "test")
            else "the output bias starts at the train rate; calibration moves it to the validation rate"
            " (calibrate: false keeps it)"
        )
        return (
            f"warning: objective {self.objective}: label rate {before:.4g} ({first}) -> {after:.4g}"
            f" ({second}), {self.relative:+.1%}, beyond {LABEL_SHIFT_THRESHOLD:.0%}; {consequence}"
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


def label_shifts(rates: dict[str, dict[str, float]], rows: dict[str, int]) -> list[LabelShift]:
    """The shifts of every objective between train and valid and between valid and test.

    Args:
        rates: split -> objective -> label rate (Examples.label_rates).
        rows: split -> examples in it.
    """
    shifts = []
    for first, second in SPLIT_PAIRS:
        if first not in rates or second not in rates:
            continue
        for objective, before in rates[first].items():
            after = rates[second][objective]
            if not 0 < before < 1 or not 0 <= after <= 1:
                continue
            relative = (after - before) / before
            pooled = (before * rows[first] + after * rows[second]) / (rows[first] + rows[second])
            spread = math.sqrt(pooled * (1 - pooled) * (1 / rows[first] + 1 / rows[second]))
            z = abs(after - before) / spread if spread > 0 else math.inf
            if abs(relative) > LABEL_SHIFT_THRESHOLD and z >= LABEL_SHIFT_MIN_Z:
                shifts.append(LabelShift(objective, (first, second), (before, after), relative))
    return shifts


def format_label_rates(rates: dict[str, dict[str, float]]) -> str:
    """Label rates as a table: one row per objective, one column per split."""
    return format_by_split("label rate", rates, ">9.4f")
