"""Any autolr scheduler in a PyTorch Lightning fit, as one callback (``pip install autolr[lightning]``)::

    from autolr.lightning import AutoLRCallback

    trainer = lightning.Trainer(max_epochs=30, callbacks=[AutoLRCallback("auto")])
    trainer.fit(model)                        # configure_optimizers returns the optimizer only

The callback builds the scheduler on the trainer's optimizer when training starts (steps per
epoch and budget from the trainer: ``max_epochs``, the training batches, gradient accumulation),
steps it once per optimizer step with that step's training loss (the mean over its accumulated
micro-batches, kept on the device), logs the LR as ``lr``, and keeps its state in Lightning's
checkpoints, so ``trainer.fit(model, ckpt_path=...)`` continues the same LR trace.

Lightning's own scheduler stepping is not used: it calls ``step()`` without the loss, which
AutoWU needs at every warmup step.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from autolr.registry import SCHEDULERS, build_scheduler
from autolr.scheduler import Scheduler

__all__ = ["AutoLRCallback"]


class AutoLRCallback(pl.Callback):
    """Schedule the LR of a Lightning fit with any registered autolr scheduler.

    Args:
        name: the scheduler (``autolr.SCHEDULERS``): ``"auto"`` (AutoWU), ``"linear"``, ...
        **options: what ``autolr.build_scheduler`` takes besides the optimizer and the budget:
            ``lr``, ``warmup_epochs``, ``legw_b0``, the method's own options (AutoWU's
            ``init_lr``, ``max_lr``, ...), and ``batch_size``, the global batch (default: the
            training DataLoader's batch size x gradient accumulation x processes).

    The optimizer's own ``lr`` only sets the ratio between its parameter groups.
    """

    def __init__(self, name: str = "auto", **options: Any) -> None:
        if name not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
        self.name = name
        self.options = dict(options)
        self.scheduler: Scheduler | None = None
        self._pending_state: dict[str, Any] | None = None
        self._loss_sum: torch.Tensor | float = 0.0
        self._micro_batches = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    # -- building ----------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(f"AutoLRCallback schedules one optimizer, the trainer has {len(trainer.optimizers)}")
        if trainer.lr_scheduler_configs:
            raise ValueError("AutoLRCallback schedules the LR itself: return only the optimizer from "
                             "configure_optimizers")
        if not trainer.max_epochs or trainer.max_epochs < 1:
            raise ValueError("AutoLRCallback needs the budget: set Trainer(max_epochs=...)")
        if not math.isfinite(trainer.num_training_batches):
            raise ValueError("AutoLRCallback needs the number of training batches per epoch (a sized DataLoader)")
        accumulate = trainer.accumulate_grad_batches
        # Lightning steps on the last batch of an epoch even when it ends an incomplete accumulation
        steps_per_epoch = math.ceil(trainer.num_training_batches / accumulate)
        options = dict(self.options)
        batch_size = options.pop("batch_size", None)
        if batch_size is None:
            per_device = getattr(trainer.train_dataloader, "batch_size", None)
            if per_device is None:
                raise ValueError("AutoLRCallback could not read the batch size: pass batch_size=, the global batch")
            batch_size = per_device * accumulate * trainer.world_size
        optimizer = trainer.optimizers[0]
        if self._pending_state is not None:
            # resumed: the optimizer holds the last LRs, which may be 0; the schedule is defined
            # on the groups' ratios, which the state keeps
            for group, ratio in zip(optimizer.param_groups, self._pending_state["scheduler"]["group_ratios"],
                                    strict=True):
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(ratio)
                else:
                    group["lr"] = ratio
        self.scheduler = build_scheduler(self.name, optimizer, steps_per_epoch=steps_per_epoch,
                                         total_epochs=trainer.max_epochs, batch_size=batch_size, **options)
        if self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state["scheduler"])
            self._loss_sum = self._pending_state["loss_sum"]
            self._micro_batches = self._pending_state["micro_batches"]
            self._pending_state = None
        if self.scheduler.last_step != trainer.global_step:
            raise ValueError(f"the scheduler is at step {self.scheduler.last_step}, the trainer at "
                             f"{trainer.global_step}: resume from a checkpoint written with this callback")

    # -- stepping ----------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        sched = self.scheduler
        assert sched is not None
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            # Lightning hands over the loss divided by the accumulation: undo it, on the device
            self._loss_sum = self._loss_sum + loss.detach().double() * trainer.accumulate_grad_batches
            self._micro_batches += 1
        if trainer.global_step > sched.last_step:  # this batch ended with an optimizer step
            lr_used = sched.get_last_lr()[0]
            step_loss = self._loss_sum / self._micro_batches if self._micro_batches else None
            sched.step(step_loss)
            self._loss_sum, self._micro_batches = 0.0, 0
            pl_module.log("lr", lr_used, on_step=True, on_epoch=False, batch_size=1)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is None:
            return self._pending_state or {}
        loss_sum = self._loss_sum
        return {"name": self.name, "scheduler": self.scheduler.state_dict(),
                "loss_sum": float(loss_sum.item()) if isinstance(loss_sum, torch.Tensor) else float(loss_sum),
                "micro_batches": self._micro_batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if state_dict.get("name") != self.name:
            raise ValueError(f"the checkpoint's scheduler is {state_dict.get('name')!r}, this callback's {self.name!r}")
        # applied when training starts, once the scheduler is built on the restored optimizer
        self._pending_state = dict(state_dict)
