"""TensorBoard event files of a run (``train.py --tensorboard DIR``), written as it trains.

Tags: ``train/loss_step`` and ``train/lr`` per optimizer step; ``train/loss``, ``train/acc``,
``val/loss``, ``val/acc`` per epoch and ``test/loss``, ``test/acc`` at the end (step: the
epoch); for AutoWU, per test (step: the optimizer step it ran at) ``autowu/p_mean`` (the mean
over its draws of the probability that the loss minimum lies behind the current LR),
``autowu/positive`` and ``autowu/candidate_lr``. Per-step points are written at the epoch's
end from values the loop already holds on the host, so logging adds no device sync per step.
The ``tensorboard`` package is an optional extra, imported only here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TensorBoardLog"]


class TensorBoardLog:
    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer: Any = SummaryWriter(log_dir=str(log_dir))
        self.tests_written = 0

    def steps(self, first_step: int, losses: Sequence[float], lrs: Sequence[float]) -> None:
        for i, (loss, lr) in enumerate(zip(losses, lrs, strict=True)):
            if math.isfinite(loss):
                self.writer.add_scalar("train/loss_step", loss, first_step + i)
            self.writer.add_scalar("train/lr", lr, first_step + i)

    def epoch(self, epoch: int, values: Mapping[str, float | None]) -> None:
        for tag, v in values.items():
            if v is not None and math.isfinite(v):
                self.writer.add_scalar(tag, v, epoch)
        self.writer.flush()

    def autowu_tests(self, history: Sequence[Mapping[str, Any]]) -> None:
        """AutoWU's tests since the last call (its history only grows; a resumed run starts over)."""
        for test in history[self.tests_written:]:
            step = int(test["step"])
            probs = [p for p in test.get("probs") or [] if p is not None and math.isfinite(p)]
            if probs:
                self.writer.add_scalar("autowu/p_mean", sum(probs) / len(probs), step)
            self.writer.add_scalar("autowu/positive", float(bool(test.get("positive"))), step)
            if test.get("candidate_lr") is not None:
                self.writer.add_scalar("autowu/candidate_lr", test["candidate_lr"], step)
        self.tests_written = len(history)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
