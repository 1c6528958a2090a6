"""AutoWU's once-per-epoch test: has the GP-smoothed loss curve confidently passed its minimum?

Two implementations of the same recipe (shared/AUTOWU.md), sharing the subsampling, the
hyperparameter state and the decision rule:

``oracle``
    The reference recipe step by step with gpytorch: an exact GP fitted with 100 Adam steps on
    the negative marginal log-likelihood, then five predictions each with the full 500×500
    posterior covariance. It is the yardstick for the fast path (~0.4 s a test on 2 cores).

``fast`` (default)
    The same model, computed in a basis in which it is cheap. With the lengthscale fixed at
    0.2 on inputs in [0, 1], the RBF kernel has numerical rank ~18: a Nyström feature map
    built from a 32-point grid reproduces k(x, x') to ~1e-12 everywhere on [0, 1]. The GP is
    then Bayesian linear regression on ~18 features:

    - the marginal likelihood of the fit subsample reduces, after one thin SVD of its feature
      matrix, to sums over ~18 eigenvalues, so each Adam step costs a few microseconds (the
      gradients are analytic, the Adam update is torch's, moment for moment);
    - each prediction needs one q×q Cholesky, the posterior mean on the grid, the posterior
      variances and the covariance column of the last grid point: never the 500×500 matrix.

    A test costs about a millisecond and takes the oracle's decisions (bench/gp_test.py).

The hyperparameter state (raw parameters and Adam moments) has one format for both paths, so
a run can even switch path on resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["GPConfig", "GPState", "TestResult", "run_test", "posterior_stats", "subsample"]

_LOG_2PI = math.log(2.0 * math.pi)
# The variance floor the reference adds to every difference of two grid values.
_DIFF_JITTER = 1e-4


@dataclass(frozen=True)
class GPConfig:
    lengthscale: float = 0.2
    fit_points: int = 100  # points in the hyperparameter fit
    fit_iters: int = 100  # Adam steps per test
    fit_lr: float = 0.01
    pred_points: int = 500  # points each prediction is conditioned on
    grid_size: int = 500  # prediction grid over [0, 1]; its last point is "now"
    n_tests: int = 5
    confidence: float = 0.95
    init_noise: float = 1e-3
    noise_floor: float = 1e-4
    record_points: int = 51  # grid of the posterior band kept in the record

    def __post_init__(self) -> None:
        if not (self.lengthscale > 0 and math.isfinite(self.lengthscale)):
            raise ValueError(f"lengthscale must be > 0, got {self.lengthscale}")
        for name in ("fit_points", "pred_points", "grid_size", "n_tests", "record_points"):
            if getattr(self, name) < (2 if name in ("grid_size", "record_points") else 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.fit_iters < 0:
            raise ValueError(f"fit_iters must be >= 0, got {self.fit_iters}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")
        if not self.init_noise > self.noise_floor >= 0:
            raise ValueError("init_noise must exceed noise_floor >= 0")


def _softplus(x: float) -> float:
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class GPState:
    """GP hyperparameters (raw, as gpytorch parameterises them) and Adam's moments.

    Order of the three parameters everywhere: mean constant, raw noise, raw output scale.
    noise = softplus(raw_noise) + noise_floor; outputscale = softplus(raw_outputscale).
    """

    raw: list[float]
    adam_step: int = 0
    exp_avg: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    exp_avg_sq: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    @classmethod
    def initial(cls, cfg: GPConfig) -> GPState:
        # outputscale starts at softplus(0) ≈ 0.69, gpytorch's default
        return cls(raw=[0.0, _inv_softplus(cfg.init_noise - cfg.noise_floor), 0.0])

    def hyperparameters(self, cfg: GPConfig) -> dict[str, float]:
        return {"mean": self.raw[0], "noise": _softplus(self.raw[1]) + cfg.noise_floor,
                "outputscale": _softplus(self.raw[2]), "lengthscale": cfg.lengthscale}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPState:
        return cls(raw=[float(v) for v in d["raw"]], adam_step=int(d["adam_step"]),
                   exp_avg=[float(v) for v in d["exp_avg"]],
                   exp_avg_sq=[float(v) for v in d["exp_avg_sq"]])


@dataclass
class TestResult:
    """One epoch's test, as stored in the scheduler's history."""

    probs: list[float]  # per prediction: max_{j<k} P(f_j < f_k)
    argmin_x: list[float]  # per prediction: grid x of the posterior mean's minimum
    positive: bool
    n_points: int
    n_finite: int
    hyper: dict[str, float]
    grid_x: list[float]
    grid_mean: list[float]
    grid_std: list[float]
    skipped: str | None = None  # why no GP was fitted (too few finite losses, numerical failure)


def subsample(valid: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``k`` of the ``valid`` indices, drawn without replacement, in increasing order.

    The generator is only consumed when there is something to choose, as in the reference.
    """
    if len(valid) <= k:
        return valid
    return valid[np.sort(rng.choice(len(valid), size=k, replace=False))]


def _adam_update(state: GPState, grad: tuple[float, float, float], lr: float) -> None:
    # torch.optim.Adam's default update (betas 0.9/0.999, eps 1e-8), moment for moment
    b1, b2, eps = 0.9, 0.999, 1e-8
    state.adam_step += 1
    t = state.adam_step
    c1 = 1.0 - b1**t
    c2_sqrt = math.sqrt(1.0 - b2**t)
    for i, g in enumerate(grad):
        m = state.exp_avg[i] = b1 * state.exp_avg[i] + (1.0 - b1) * g
        v = state.exp_avg_sq[i] = b2 * state.exp_avg_sq[i] + (1.0 - b2) * g * g
        state.raw[i] -= (lr / c1) * m / (math.sqrt(v) / c2_sqrt + eps)


class _Features:
    """Nyström features φ with φ(x)·φ(x') = k(x, x') (unit output scale) on [0, 1]."""

    _cache: dict[float, _Features] = {}

    def __init__(self, lengthscale: float, n_anchor: int = 32, rel_tol: float = 1e-13) -> None:
        self.gamma = 0.5 / lengthscale**2
        # anchors spaced well below the lengthscale; a longer lengthscale would need fewer
        n = max(n_anchor, int(math.ceil(6.0 / lengthscale)))
        self.anchors = np.linspace(0.0, 1.0, n)
        kzz = np.exp(-self.gamma * (self.anchors[:, None] - self.anchors[None, :]) ** 2)
        w, u = np.linalg.eigh(kzz)
        keep = w > w.max() * rel_tol
        self.proj = u[:, keep] / np.sqrt(w[keep])

    @classmethod
    def get(cls, lengthscale: float) -> _Features:
        if lengthscale not in cls._cache:
            cls._cache[lengthscale] = cls(lengthscale)
        return cls._cache[lengthscale]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.exp(-self.gamma * (x[..., None] - self.anchors) ** 2) @ self.proj


def _fit_fast(x: np.ndarray, y: np.ndarray, state: GPState, cfg: GPConfig) -> None:
    """Adam on −MLL/m in the eigenbasis of the fit subsample's kernel matrix."""
    m = len(y)
    u, s, _ = np.linalg.svd(_Features.get(cfg.lengthscale)(x), full_matrices=False)
    keep = s > s.max() * 1e-8 if s.size else s > 0
    u, lam = u[:, keep], s[keep] ** 2
    a, b = u.T @ y, u.sum(axis=0)
    yy, y1 = float(y @ y), float(y.sum())
    rest = m - len(lam)  # directions the kernel does not reach: variance = noise alone
    for _ in range(cfg.fit_iters):
        c, rn, rs = state.raw
        noise = _softplus(rn) + cfg.noise_floor
        scale = _softplus(rs)
        d = scale * lam + noise
        e = a - c * b
        e2 = e * e
        r2 = yy - 2.0 * c * y1 + c * c * m
        off = r2 - float(e2.sum())  # squared residual outside the kernel's span
        inv_d = 1.0 / d
        # −MLL = ½[Σ e²/d + off/σ² + Σ log d + rest·log σ² + m log 2π]
        eb = e * b
        dq_dc = float(-2.0 * (eb * inv_d).sum()) + (-2.0 * y1 + 2.0 * c * m + 2.0 * float(eb.sum())) / noise
        dq_ds = float(-(e2 * lam * inv_d * inv_d).sum())
        dq_dn = float(-(e2 * inv_d * inv_d).sum()) - off / noise**2
        dl_ds = float((lam * inv_d).sum())
        dl_dn = float(inv_d.sum()) + rest / noise
        g_c = 0.5 * dq_dc / m
        g_s = 0.5 * (dq_ds + dl_ds) / m * _sigmoid(rs)
        g_n = 0.5 * (dq_dn + dl_dn) / m * _sigmoid(rn)
        _adam_update(state, (g_c, g_n, g_s), cfg.fit_lr)


def _predict_fast(xs: list[np.ndarray], ys: list[np.ndarray], state: GPState, cfg: GPConfig,
                  grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean, variances and covariance with the last grid point, for each subsample."""
    hp = state.hyperparameters(cfg)
    c, noise, scale = hp["mean"], hp["noise"], hp["outputscale"]
    feats = _Features.get(cfg.lengthscale)
    g = feats(grid)  # (G, q)
    q = g.shape[1]
    means, variances, cross = [], [], []
    for x, y in zip(xs, ys, strict=True):
        phi = feats(x)
        # w ~ N(0, scale·I): posterior covariance = scale·noise·B⁻¹ with B = scale·ΦᵀΦ + noise·I
        chol = np.linalg.cholesky(scale * (phi.T @ phi) + noise * np.eye(q))
        w = scale * _cho_solve(chol, phi.T @ (y - c))
        v = _tri_solve(chol, g.T)  # (q, G)
        means.append(c + g @ w)
        variances.append(scale * noise * np.einsum("ij,ij->j", v, v))
        cross.append(scale * noise * (v.T @ v[:, -1]))
    return np.stack(means), np.stack(variances), np.stack(cross)


def _tri_solve(lower: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    # q is ~18: a plain forward substitution beats a scipy import and LAPACK call overhead
    out = np.empty_like(rhs)
    for i in range(lower.shape[0]):
        out[i] = (rhs[i] - lower[i, :i] @ out[:i]) / lower[i, i]
    return out


def _cho_solve(lower: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    z = _tri_solve(lower, rhs)
    out = np.empty_like(z)
    for i in range(lower.shape[0] - 1, -1, -1):
        out[i] = (z[i] - lower[i + 1:, i] @ out[i + 1:]) / lower[i, i]
    return out


def posterior_stats(means: np.ndarray, variances: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """p = max_{j<k} P(f_j < f_k) for each prediction, k the last grid point."""
    diff = means[:, -1:] - means[:, :-1]
    var = variances[:, :-1] + variances[:, -1:] - 2.0 * cross[:, :-1] + _DIFF_JITTER
    z = (diff / np.sqrt(np.maximum(var, _DIFF_JITTER))).max(axis=1)
    return np.array([0.5 * math.erfc(-float(v) / math.sqrt(2.0)) for v in z])


def _oracle(x_fit: np.ndarray, y_fit: np.ndarray, xs: list[np.ndarray], ys: list[np.ndarray],
            state: GPState, cfg: GPConfig, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import gpytorch
    import torch

    dtype = torch.float64

    class _ExactGP(gpytorch.models.ExactGP):
        def __init__(self, tx: torch.Tensor, ty: torch.Tensor, lik: gpytorch.likelihoods.GaussianLikelihood):
            super().__init__(tx, ty, lik)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    lik = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(cfg.noise_floor)).to(dtype)
    model = _ExactGP(t(x_fit), t(y_fit), lik).to(dtype)
    model.covar_module.base_kernel.lengthscale = cfg.lengthscale
    params = [model.mean_module.raw_constant, lik.noise_covar.raw_noise, model.covar_module.raw_outputscale]
    with torch.no_grad():
        for p, v in zip(params, state.raw, strict=True):
            p.fill_(v)
    opt = torch.optim.Adam(params, lr=cfg.fit_lr)
    if state.adam_step:
        for i, p in enumerate(params):
            opt.state[p] = {"step": torch.tensor(float(state.adam_step)),
                            "exp_avg": torch.full_like(p, state.exp_avg[i]),
                            "exp_avg_sq": torch.full_like(p, state.exp_avg_sq[i])}
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train()
    lik.train()
    with gpytorch.settings.max_cholesky_size(10**6):
        for _ in range(cfg.fit_iters):
            opt.zero_grad()
            loss = -mll(model(model.train_inputs[0]), model.train_targets)
            loss.backward()
            opt.step()
        state.raw = [float(p.detach().reshape(-1)[0]) for p in params]
        if cfg.fit_iters:
            state.adam_step = int(opt.state[params[0]]["step"])
            state.exp_avg = [float(opt.state[p]["exp_avg"].reshape(-1)[0]) for p in params]
            state.exp_avg_sq = [float(opt.state[p]["exp_avg_sq"].reshape(-1)[0]) for p in params]

        model.eval()
        means, variances, cross = [], [], []
        with torch.no_grad():
            for x, y in zip(xs, ys, strict=True):
                model.set_train_data(t(x), t(y), strict=False)
                post = model(t(grid))  # noise-free latent posterior, full covariance
                cov = post.covariance_matrix
                means.append(post.mean.numpy())
                variances.append(torch.diagonal(cov).numpy())
                cross.append(cov[:, -1].numpy())
    return np.stack(means), np.stack(variances), np.stack(cross)


def run_test(losses: np.ndarray, state: GPState, rng: np.random.Generator, cfg: GPConfig,
             path: str = "fast") -> TestResult:
    """One epoch's test on the whole per-step loss history (non-finite entries allowed).

    Updates ``state`` (hyperparameters, Adam moments) and consumes ``rng`` exactly as the
    reference does: one subsample for the fit, then one per prediction.
    """
    if path not in ("fast", "oracle"):
        raise ValueError(f"path must be 'fast' or 'oracle', got {path!r}")
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    valid = np.flatnonzero(np.isfinite(losses))
    grid = np.linspace(0.0, 1.0, cfg.grid_size)
    rec_idx = np.unique(np.round(np.linspace(0, cfg.grid_size - 1, cfg.record_points)).astype(int))

    def skipped(reason: str) -> TestResult:
        return TestResult(probs=[], argmin_x=[], positive=False, n_points=n, n_finite=len(valid),
                          hyper=state.hyperparameters(cfg), grid_x=grid[rec_idx].tolist(), grid_mean=[],
                          grid_std=[], skipped=reason)

    if len(valid) < 2:
        return skipped("fewer than 2 finite losses")
    backup = GPState.from_dict(state.to_dict())
    # the reference resets the mean to the data's every epoch; Adam's moments carry over
    with np.errstate(over="ignore", invalid="ignore"):  # a mean that overflows fails the fit below, quietly
        state.raw[0] = float(losses[valid].mean())
    fit_idx = subsample(valid, cfg.fit_points, rng)
    pred_idx = [subsample(valid, cfg.pred_points, rng) for _ in range(cfg.n_tests)]
    xs = [i / n for i in pred_idx]
    ys = [losses[i] for i in pred_idx]
    try:
        # underflow is harmless (a short lengthscale's far kernel entries are 0); the rest is a broken fit
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            if path == "fast":
                _fit_fast(fit_idx / n, losses[fit_idx], state, cfg)
                means, variances, cross = _predict_fast(xs, ys, state, cfg, grid)
            else:
                means, variances, cross = _oracle(fit_idx / n, losses[fit_idx], xs, ys, state, cfg, grid)
        if not (np.isfinite(means).all() and np.isfinite(variances).all() and np.isfinite(state.raw).all()):
            raise FloatingPointError("non-finite posterior")
    except (FloatingPointError, np.linalg.LinAlgError, RuntimeError, OverflowError) as err:
        # a numerically broken fit must not end a training run: keep the last good hyperparameters
        state.raw, state.adam_step = backup.raw, backup.adam_step
        state.exp_avg, state.exp_avg_sq = backup.exp_avg, backup.exp_avg_sq
        return skipped(f"GP failed: {type(err).__name__}: {err}"[:200])
    probs = posterior_stats(means, variances, cross)
    votes = int((probs > cfg.confidence).sum())
    return TestResult(
        probs=probs.tolist(),
        argmin_x=grid[means.argmin(axis=1)].tolist(),
        positive=votes > cfg.n_tests / 2,
        n_points=n,
        n_finite=len(valid),
        hyper=state.hyperparameters(cfg),
        grid_x=grid[rec_idx].tolist(),
        grid_mean=means[:, rec_idx].mean(axis=0).tolist(),
        grid_std=np.sqrt(np.maximum(variances[:, rec_idx], 0.0).mean(axis=0)).tolist(),
    )
