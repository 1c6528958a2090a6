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

Each is an entry of the scheduler registry (``autolr/registry.py``): ``schedulefree`` and
``prodigy`` with ``replaces_optimizer=True`` and their ``optimizer`` builder (``train.py`` refuses
``--opt`` for them), ``rangetest`` with its ``peak_lr`` option, which ``train.py`` sets from the test
it runs before training (``tuning="one_run"``: charged one tuning run at the test's cost).
``lr`` is None for all three: none takes an LR (Schedule-Free's 0.0025 is fixed, Prodigy's lr is
a multiplier fixed at 1, the range test finds its peak). What each needs from the training loop:
README.md, "The peers".
"""
