"""autolr: AutoWU, an automated learning-rate scheduler for large-batch training, and its baselines."""

from autolr.autowu import AutoWU
from autolr.registry import SCHEDULERS, Method, build_scheduler, register
from autolr.scheduler import Scheduler
from autolr.schedules import Constant, WarmupCosine

__all__ = ["AutoWU", "Scheduler", "WarmupCosine", "Constant", "build_scheduler", "register", "Method", "SCHEDULERS"]
__version__ = "0.1.0"
