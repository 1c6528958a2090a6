"""The peers of AutoWU that a user who will not tune warmup and peak LR would pick instead (issue 10).

| module | method | removes | tuning charge |
|---|---|---|---|
| ``schedulefree`` | Schedule-Free AdamW, AlgoPerf's self-tuning winner's configuration | the schedule | 0 runs |
| ``prodigy`` | Prodigy (lr 1, d_coef 1, decoupled decay) + cosine over all steps | the LR's size | 0 runs |
| ``rangetest`` | LR range test, then ``fixed``'s warmup + cosine at its peak | the peak search | 1 run, real cost |

``batchnorm`` recomputes BN statistics at Schedule-Free's evaluation weights. The optimizer
packages (``schedulefree``, ``prodigyopt``) are imported when an optimizer is built, so the
scheduler-only install stays light; ``pip install 'autolr[peers]'`` adds them. Background,
published results and pitfalls: shared/PEERS.md.

How each is declared in the scheduler registry (``autolr/registry.py``; a sketch, wired by the
lead, with builders taking the registry's ``(optimizer, *, steps_per_epoch, total_epochs,
batch_size, **options)``)::

    register(Method("schedulefree", build=lambda opt, *, steps_per_epoch, total_epochs, batch_size:
                        schedulefree.ScheduleFreeLR(opt, steps_per_epoch * total_epochs),
                    label="Schedule-Free AdamW", lr=None, warmup=False, tuning="never",
                    replaces_optimizer=True))   # optimizer: schedulefree.build_optimizer(params,
                                                #   total_steps=T, weight_decay=wd)
    register(Method("prodigy", build=lambda opt, *, steps_per_epoch, total_epochs, batch_size:
                        prodigy.ProdigyCosine(opt, steps_per_epoch * total_epochs),
                    label="Prodigy", lr=None, warmup=False, tuning="never",
                    replaces_optimizer=True))   # optimizer: prodigy.build_optimizer(params, weight_decay=wd)
    register(Method("rangetest", build=build_rangetest,  # schedules' fixed warmup (5 epochs) + cosine
                    label="LR range test", lr=None, warmup=False, tuning="one_run",
                    replaces_optimizer=False,
                    options=(Option("peak_lr", float, None, "the range test's peak (set by train.py)"),)))

``lr`` is None for all three: none takes an LR (Schedule-Free's 0.0025 is fixed, Prodigy's lr is
a multiplier fixed at 1, the range test finds its peak).
"""
