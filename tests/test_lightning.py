"""``autolr.lightning.AutoLRCallback`` in real ``lightning.Trainer`` fits on the CPU: the LR trace
of each optimizer step is the one a plain PyTorch loop gives with the same scheduler (with and
without gradient accumulation, including an epoch that ends on an incomplete accumulation), and
a fit resumed from a Lightning checkpoint continues the uninterrupted trace exactly."""

from __future__ import annotations

import logging

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from autolr import build_scheduler  # noqa: E402
from autolr.lightning import AutoLRCallback  # noqa: E402

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore:.*LeafSpec:FutureWarning")

N, BATCH, EPOCHS = 72, 8, 4  # 9 batches an epoch: with accumulation 2 the last step has one micro-batch


def _data() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 6, generator=g)
    y = (x @ torch.randn(6, 1, generator=g)).squeeze(1) + 0.1 * torch.randn(N, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def _net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).squeeze(1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_data(), batch_size=BATCH, shuffle=False)


class LRTrace(pl.Callback):
    """The LR each optimizer step was taken with."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))


def _fit(tmp_path, name, accumulate=1, epochs=EPOCHS, ckpt_path=None, checkpoint=False, **options):
    trace, cb = LRTrace(), AutoLRCallback(name, **options)
    callbacks = [cb, trace]
    if checkpoint:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1,
                                                      filename="{epoch}"))
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                         enable_checkpointing=checkpoint, enable_progress_bar=False, enable_model_summary=False,
                         accumulate_grad_batches=accumulate, default_root_dir=tmp_path)
    trainer.fit(Regressor(), ckpt_path=ckpt_path)
    return trainer, cb, trace.lrs


def _plain_loop(name, accumulate=1, **options):
    """The same training in a plain loop: the reference trace."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    loader = torch.utils.data.DataLoader(_data(), batch_size=BATCH, shuffle=False)
    spe = -(-len(loader) // accumulate)
    sched = build_scheduler(name, opt, steps_per_epoch=spe, total_epochs=EPOCHS, batch_size=BATCH * accumulate,
                            **options)
    lrs = []
    for _ in range(EPOCHS):
        batches = list(loader)
        for i in range(0, len(batches), accumulate):
            window = batches[i:i + accumulate]
            step_loss = torch.zeros((), dtype=torch.float64)
            for x, y in window:
                loss = torch.nn.functional.mse_loss(net(x).squeeze(1), y)
                (loss / accumulate).backward()
                step_loss += loss.detach().double()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            opt.zero_grad()
            sched.step(step_loss / len(window))
    return sched, lrs


@pytest.mark.parametrize("accumulate", [1, 2])
def test_autowu_fit_matches_a_plain_loop(tmp_path, accumulate):
    trainer, cb, lrs = _fit(tmp_path, "auto", accumulate=accumulate, max_warmup_fraction=0.75)
    ref_sched, ref_lrs = _plain_loop("auto", accumulate=accumulate, max_warmup_fraction=0.75)
    spe = -(-9 // accumulate)
    assert len(lrs) == trainer.global_step == spe * EPOCHS == cb.scheduler.last_step
    assert isinstance(cb.scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert cb.scheduler.steps_per_epoch == spe and cb.scheduler.total_steps == spe * EPOCHS
    assert len(cb.scheduler.history) == len(ref_sched.history) >= 2  # the GP test ran at epoch ends
    assert cb.scheduler.warmup_losses == ref_sched.warmup_losses
    assert lrs == ref_lrs
    assert trainer.callback_metrics["lr"] == pytest.approx(lrs[-1])


def test_baseline_fit_matches_a_plain_loop(tmp_path):
    _, cb, lrs = _fit(tmp_path, "linear", accumulate=2, lr=0.05, warmup_epochs=1)
    _, ref_lrs = _plain_loop("linear", accumulate=2, lr=0.05, warmup_epochs=1)
    assert cb.scheduler.describe()["batch_size"] == 2 * BATCH  # the global batch, accumulation included
    assert lrs == ref_lrs


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_from_a_lightning_checkpoint_continues_the_trace(tmp_path, accumulate):
    # resumed after two of the four epochs, mid-warmup, with two GP tests in the state
    _, full_cb, full = _fit(tmp_path / "full", "auto", accumulate=accumulate, checkpoint=True,
                            max_warmup_fraction=0.75)
    ckpt = tmp_path / "full" / "epoch=1.ckpt"
    state = torch.load(ckpt, weights_only=True)["callbacks"]["AutoLRCallback{'name': 'auto'}"]["scheduler"]
    assert state["phase"] == "warmup" and len(state["history"]) == 2
    _, cb, tail = _fit(tmp_path / "resumed", "auto", accumulate=accumulate, ckpt_path=str(ckpt),
                       max_warmup_fraction=0.75)
    spe = -(-9 // accumulate)
    assert len(full) == spe * EPOCHS and tail == full[2 * spe:]
    untimed = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert untimed(cb.scheduler.history) == untimed(full_cb.scheduler.history)
    assert cb.scheduler.switch_step == full_cb.scheduler.switch_step


def test_checkpoint_of_another_scheduler_is_refused(tmp_path):
    _fit(tmp_path / "a", "linear", epochs=2, checkpoint=True, lr=0.05, warmup_epochs=1)
    with pytest.raises(ValueError, match="resume from a checkpoint written with this callback"):
        _fit(tmp_path / "b", "auto", epochs=4, ckpt_path=str(tmp_path / "a" / "epoch=0.ckpt"))


def test_bad_settings_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown scheduler"):
        AutoLRCallback("nope")
    with pytest.raises(ValueError, match="needs lr"):
        _fit(tmp_path, "fixed", epochs=1)
