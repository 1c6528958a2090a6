"""autolr: AutoWU, an automated learning-rate scheduler for large-batch training, and its baselines."""

from typing import Any

from autolr.schedules import SCHEDULERS, Constant, Scheduler, WarmupCosine, build_scheduler

__all__ = ["AutoWU", "Scheduler", "WarmupCosine", "Constant", "build_scheduler", "SCHEDULERS"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # AutoWU is imported on first use so that `import autolr.data` and friends stay light
    if name == "AutoWU":
        from autolr.autowu import AutoWU

        return AutoWU
    raise AttributeError(f"module 'autolr' has no attribute {name!r}")
