"""The learning-rate schedule: linear warm-up, then a cosine down to a floor.

A pure function of the step: no scheduler object with hidden state, so resuming a run only needs the
step number, a plot of the schedule is one list comprehension, and a test can check any step directly.
"""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier for optimiser step ``step`` (0-based).

    Args:
        step: the step about to be taken.
        total_steps: steps in the whole run.
        warmup_steps: steps of linear warm-up; step 0 gets ``1 / warmup_steps`` (never exactly 0, which
            would waste a step), step ``warmup_steps - 1`` gets 1.
        min_ratio: multiplier at the end of the cosine.

    Returns:
        A multiplier in ``[min_ratio, 1]``: the rate is ``peak_lr * warmup_cosine(...)``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)  # 0 at the peak, 1 at the last step
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
