"""Run a sweep file: tune each baseline's LR as REPRODUCTION.md says, then the final runs.

    python -m autolr.sweep sweeps/demo.yaml                       # everything, in this process
    python -m autolr.sweep sweeps/demo.yaml --dry-run             # what would run, and its cost
    python -m autolr.sweep sweeps/fashion.yaml --max-runs 5       # a resumable chunk of at most 5 runs
    python -m autolr.sweep sweeps/cifar10.yaml --jobs 8           # 8 processes, one GPU each
    python -m autolr.sweep sweeps/imagenet.yaml --executor slurm  # job arrays, requeued on preemption

Stages. ``tune``: for every (model, opt), ``linear`` and ``legw`` search their LR grid at B0 (the
smallest batch size) and ``fixed`` (and any other tuned scheduler) at every batch size, with seed
``tuning_seed``; a best value on a grid's edge extends the grid one step that way (at most
``max_extensions`` times). ``final``: every scheduler at every batch size over the final seeds,
with the chosen LR (``auto`` needs none). A final run with the tuning seed has the config of its
tuning run, hence its run_id, and reuses that record. The peers (autolr/peers) have no grid:
``schedulefree`` and ``prodigy`` are never tuned, and ``rangetest`` tunes itself with an LR range
test inside each run, charged one tuning run at the test's cost. ``schedulefree`` and ``prodigy``
bring their own optimizer: their runs take no ``--opt`` and are the same runs in every ``opts``
group.

Method labels. A ``schedulers:`` key is the method's label in stages.json and the tables; ``sched:``
names the registered scheduler (default: the key itself), so one scheduler can appear as several
labelled variants, each tuned like its scheduler (``auto`` and its variants never are)::

    schedulers:
      auto: {}
      auto-init1e-4: {sched: auto, init_lr: 1.0e-4}                 # an ablation variant of AutoWU
      fixed@auto: {sched: fixed, warmup_epochs: 5, lr_from: auto}   # a diagnostic control

``lr_from: <label>`` (a scheduler whose --lr is the peak, from a never-tuned method) makes a
control: each (model, opt, bs, seed) trains with --lr = the switch LR (record ``autowu.switch_lr``)
of that label's final run of the same cell, once that record exists (a later round or a later
driver); it is charged no tuning run; a diverged or failed source run skips it (stages.json says
why). The label is not part of train.py's config: a variant whose flags equal another entry's has
its run_ids and reuses its records.

Every run is identified by autolr.config's ``run_id(resolve(...))`` (train.py's own) and writes
``results/<name>/runs/<run_id>.json``; a run with a record is never run again, and every run gets
``--resume``, so a sweep killed at any point and started again runs only what is missing and
continues an interrupted run from its checkpoint (``checkpoints/<name>/<run_id>/``; per-run logs in
``checkpoints/<name>/logs/``). Executors: ``--jobs 1`` trains in this process, ``--jobs N`` runs N
train.py processes (one GPU each), ``--executor slurm`` submits submitit job arrays (``--cluster
local`` takes the same path on this machine).

Checks before anything runs: sweep keys are train.py's exact flag names (never prefixes, which
argparse would take), every value has its type, and every run is checked the way train.py checks it
before training (``check_run``); a bad file is one line and exit code 2. A results folder belongs to
the sweep file that wrote its stages.json: an edited file is refused, saying what changed, unless
``--start-over`` (records are kept; runs the new file shares reuse them); adding a scheduler entry is
additive and allowed. One driver per results folder (and per checkpoint folder) at a time.

``results/<name>/stages.json`` (atomic, rewritten after every run):
``schema``, ``name``, ``sweep_file``, ``spec`` (the sweep with its defaults filled), ``complete``,
``missing_runs`` (distinct runs still to do), ``updated_at``,
``stages``: {``tune``: {complete, runs, done, pending_extensions_max}, ``final``: {complete, runs,
done, waiting_for_tuning}},
``selection``: one entry per (method, model, opt, bs): {method (the label), sched (the registered
scheduler), model, opt, bs, tuned (grid searched
at this bs), tuned_at_bs (B0 for linear/legw, bs for fixed, null for auto), grid (sorted, extensions
included), trials [{lr, run_id, status, val_acc}], extensions [{direction, lr, why}], chosen_lr,
reason (best val acc | extended | all diverged | pending | not tuned | lr from <label> ...), capped,
messages, lr_from (controls)},
``final_runs``: [{method, sched, model, opt, bs, seed, lr, run_id, status (finished | diverged | failed |
missing | skipped), tuning_run (the record is the grid's tuning run); controls add lr_from, lr_from_run
(the source run's id) and, while waiting or when skipped, why}],
``tuning_charge``: one entry per grid, one per range-test cell with runs 1 (wall_seconds: its finals'
mean test device seconds), and one per control cell with runs 0: {method, sched, model, opt,
bs, run_ids, runs, wall_seconds, charged (once per grid | per batch size | none beyond <label>'s own
run), covers_bs}.
"""

from autolr.sweep.driver import (
    EVAL_SPEEDUP,
    RUN_OVERHEAD_S,
    THROUGHPUT,
    Driver,
    build_cli,
    check_data,
    compare_runs,
    estimate_seconds,
    main,
    spec_changes,
)
from autolr.sweep.executors import (
    InProcessExecutor,
    Outcome,
    SubmititExecutor,
    SubprocessExecutor,
    TrainJob,
    sbatch_preview,
    slurm_parameters,
)
from autolr.sweep.plan import STAGES_SCHEMA, Plan, Sweep
from autolr.sweep.protocol import TUNING_SEED, GridState, decide_grid, extension_value, pick_lr, selection_score
from autolr.sweep.runs import Run, RunResult, check_run, load_results, read_record
from autolr.sweep.spec import (
    NEVER_TUNED,
    TUNED_AT_B0,
    TUNED_BY_OWN_RUN,
    SweepError,
    SweepSpec,
    load_spec,
    spec_from_dict,
)

__all__ = [
    "SweepError", "SweepSpec", "load_spec", "spec_from_dict", "TUNED_AT_B0", "NEVER_TUNED", "TUNED_BY_OWN_RUN",
    "Run", "RunResult", "check_run", "read_record", "load_results",
    "TUNING_SEED", "selection_score", "pick_lr", "extension_value", "GridState", "decide_grid",
    "STAGES_SCHEMA", "Plan", "Sweep",
    "Outcome", "InProcessExecutor", "SubprocessExecutor", "SubmititExecutor", "TrainJob", "slurm_parameters",
    "sbatch_preview",
    "THROUGHPUT", "EVAL_SPEEDUP", "RUN_OVERHEAD_S", "estimate_seconds", "check_data", "compare_runs",
    "spec_changes", "Driver", "build_cli", "main",
]
