"""The VE, VP and sub-VP SDEs of Song et al. (ICLR 2021), with the official code's names and defaults.

All three have a linear drift f(t) x, so each SDE states its coefficients as [B] tensors of t
(`drift_coef`, `diffusion`, `marginal_coef`, `discretize_coef`) and the official tensor-valued
methods (`sde`, `marginal_prob`, `discretize`) are built from them. Times t are [B] tensors; every
result lives on t's device and in t's dtype (no float64 leaks, no CPU buffers indexed by CUDA
indices: the official VESDE.discretize and ancestral sampling fail there).
"""

import abc
import math
import numbers

import torch

from . import _random


def batch_view(v, x):
    """A [B] tensor shaped to broadcast over x [B, ...]."""
    return v.reshape((-1,) + (1,) * (x.dim() - 1))


class SDE(abc.ABC):
    """dx = f(t) x dt + g(t) dw on t in [0, T], discretised into N steps."""

    T = 1.0

    def __init__(self, N):
        if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 1:
            raise ValueError(f"{type(self).__name__}: N must be a positive integer, got {N!r}")
        self.N = int(N)
        self._tables = {}

    def _table(self, name, make, t):
        # Per-step tables (discrete sigmas, betas) computed in t's dtype as the official code does
        # (in float32 for float32 t) and cached per device and dtype.
        key = (name, t.device, t.dtype)
        if key not in self._tables:
            self._tables[key] = make(t.dtype).to(t.device)
        return self._tables[key]

    def _index(self, t):
        """The official discrete step index of t: floor(t (N - 1) / T)."""
        return (t * (self.N - 1) / self.T).long()

    @abc.abstractmethod
    def drift_coef(self, t):
        """f(t), [B]: the drift is f(t) x."""

    @abc.abstractmethod
    def diffusion(self, t):
        """g(t), [B]."""

    @abc.abstractmethod
    def marginal_coef(self, t):
        """(alpha(t), std(t)), each [B]: x(t) | x(0) ~ N(alpha(t) x(0), std(t)^2 I)."""

    @abc.abstractmethod
    def prior_std(self):
        """The standard deviation of the prior N(0, prior_std^2 I)."""

    def noise_level(self, t):
        """sigma(t) = std(t) / alpha(t): x(t) / alpha(t) is x(0) plus noise of this std (EDM's sigma)."""
        alpha, std = self.marginal_coef(t)
        return std / alpha

    @abc.abstractmethod
    def noise_level_time(self, sigma):
        """The t at which noise_level(t) = sigma (the inverse of noise_level)."""

    def sde(self, x, t):
        """Drift [B, ...] and diffusion [B] of the forward SDE at (x, t)."""
        return batch_view(self.drift_coef(t), x) * x, self.diffusion(t)

    def marginal_prob(self, x, t):
        """Mean [B, ...] and std [B] of the perturbation kernel p_0t(x(t) | x(0) = x)."""
        alpha, std = self.marginal_coef(t)
        return batch_view(alpha, x) * x, std

    def prior_sampling(self, shape, generator=None, device=None, dtype=torch.float32):
        """A sample of the prior, [B, ...]; generator: a torch.Generator or one per sample."""
        if len(shape) < 1 or not all(isinstance(n, numbers.Integral) and n > 0 for n in shape):
            raise ValueError(
                f"shape must be a batch size followed by the shape of a sample, positive integers, got {tuple(shape)}"
            )
        return _random.randn(shape, generator, device=device, dtype=dtype) * self.prior_std()

    def prior_logp(self, z):
        """log N(z; 0, prior_std^2 I) per sample, [B], in nats."""
        D = z[0].numel()
        s2 = self.prior_std() ** 2
        return -D / 2 * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    def discretize_coef(self, t):
        """(f_i, G_i), each [B], of the discretisation x_{i+1} = x_i + f_i x_i + G_i z_i.
        Euler-Maruyama unless the SDE has its own (SMLD for VE, DDPM for VP)."""
        dt = 1.0 / self.N
        return self.drift_coef(t) * dt, self.diffusion(t) * math.sqrt(dt)

    def discretize(self, x, t):
        """The official discretize: (f [B, ...], G [B]) with x_{i+1} = x_i + f + G z."""
        f, G = self.discretize_coef(t)
        return batch_view(f, x) * x, G

    def langevin_alpha(self, t):
        """The alpha_i of the Langevin corrector's step size: 1 unless the SDE has discrete betas."""
        return torch.ones_like(t)

    def reverse(self, score_fn, probability_flow=False):
        """The reverse-time SDE (or, with probability_flow, ODE) driven by score_fn(x, t)."""
        return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
    """dx = [f(t) x - g(t)^2 s(x, t) k] dt + g(t) dw-bar, with k = 1/2 and no noise for the ODE."""

    def __init__(self, sde, score_fn, probability_flow):
        self.forward_sde, self.score_fn, self.probability_flow = sde, score_fn, probability_flow
        self.N, self.T = sde.N, sde.T

    def sde(self, x, t):
        drift, g = self.forward_sde.sde(x, t)
        k = 0.5 if self.probability_flow else 1.0
        drift = drift - batch_view(g**2, x) * self.score_fn(x, t) * k
        return drift, torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x, t):
        f, G = self.forward_sde.discretize(x, t)
        k = 0.5 if self.probability_flow else 1.0
        rev_f = f - batch_view(G**2, x) * self.score_fn(x, t) * k
        return rev_f, torch.zeros_like(G) if self.probability_flow else G


class VPSDE(SDE):
    """Variance preserving: dx = -beta(t)/2 x dt + sqrt(beta(t)) dw, beta linear in t (DDPM)."""

    def __init__(self, beta_min=0.1, beta_max=20.0, N=1000):
        super().__init__(N)
        if not 0 <= beta_min <= beta_max or beta_max <= 0:
            raise ValueError(
                f"{type(self).__name__}: beta_min and beta_max must satisfy 0 <= beta_min <= beta_max "
                f"and beta_max > 0, got {beta_min!r} and {beta_max!r}"
            )
        if beta_max >= N:  # DDPM's betas beta_i / N must stay below 1 (sqrt(1 - beta), alpha = 1 - beta > 0)
            raise ValueError(
                f"N must exceed beta_max: the discrete betas run up to beta_max / N = {beta_max / N:.3g}, "
                f"which must be below 1 (use N > {beta_max:g} steps)"
            )
        self.beta_0, self.beta_1 = beta_min, beta_max

    def discrete_betas(self, t):
        return self._table(
            "betas", lambda dtype: torch.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N, dtype=dtype), t
        )

    def sqrt_1m_alphas_cumprod(self, t):
        """sqrt(1 - prod_{j<=i} (1 - beta_j)) of DDPM, as a table over the N steps (indexed by labels)."""
        return self._table(
            "sqrt_1m_acp",
            lambda dtype: torch.sqrt(
                1.0
                - torch.cumprod(
                    1.0 - torch.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N, dtype=dtype), 0
                )
            ),
            t,
        )

    def beta(self, t):
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def marginal_coef(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), torch.sqrt(1.0 - torch.exp(2.0 * lmc))

    def prior_std(self):
        return 1.0

    def _time_of_integral(self, L):
        # Solves int_0^t beta = beta_0 t + (beta_1 - beta_0) t^2 / 2 = L for t >= 0.
        d = self.beta_1 - self.beta_0
        return 2 * L / (self.beta_0 + torch.sqrt(self.beta_0**2 + 2 * d * L))

    def noise_level_time(self, sigma):
        # sigma^2 = e^{int beta} - 1.
        return self._time_of_integral(torch.log1p(sigma**2))

    def discretize_coef(self, t):
        # DDPM: x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z.
        beta = self.discrete_betas(t)[self._index(t)]
        return torch.sqrt(1.0 - beta) - 1.0, torch.sqrt(beta)

    def langevin_alpha(self, t):
        # The official code uses alpha_i = 1 - beta_i (not the cumulative product the paper writes).
        return 1.0 - self.discrete_betas(t)[self._index(t)]


class subVPSDE(VPSDE):
    """Sub-variance preserving: dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - e^{-2 int_0^t beta})) dw."""

    def diffusion(self, t):
        discount = 1.0 - torch.exp(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t**2)
        return torch.sqrt(self.beta(t) * discount)

    def marginal_coef(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), 1.0 - torch.exp(2.0 * lmc)

    def noise_level_time(self, sigma):
        # sigma = (1 - u^2) / u with u = e^{-int beta / 2}.
        u = (torch.sqrt(sigma**2 + 4) - sigma) / 2
        return self._time_of_integral(-2 * torch.log(u))

    # Euler-Maruyama discretisation: the DDPM one belongs to the VP SDE.
    discretize_coef = SDE.discretize_coef
    # langevin_alpha: 1 - beta_i of the same beta schedule. The official code has no alphas for
    # sub-VP and crashes in the Langevin corrector ('subVPSDE' object has no attribute 'alphas').


class VESDE(SDE):
    """Variance exploding: dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw (SMLD / NCSN)."""

    def __init__(self, sigma_min=0.01, sigma_max=50.0, N=1000):
        super().__init__(N)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"{type(self).__name__}: sigma_min and sigma_max must satisfy 0 < sigma_min < sigma_max, "
                f"got {sigma_min!r} and {sigma_max!r}"
            )
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def discrete_sigmas(self, t):
        return self._table(
            "sigmas",
            lambda dtype: torch.exp(
                torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N, dtype=dtype)
            ),
            t,
        )

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))

    def marginal_coef(self, t):
        return torch.ones_like(t), self.sigma(t)

    def prior_std(self):
        return self.sigma_max

    def noise_level_time(self, sigma):
        return torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def discrete_sigma_pair(self, t):
        """(sigma_i, sigma_{i-1}) of the SMLD discretisation, sigma_{-1} = 0; on t's device."""
        sigmas = self.discrete_sigmas(t)
        i = self._index(t)
        prev = torch.where(i == 0, torch.zeros_like(t), sigmas[(i - 1).clamp(min=0)])
        return sigmas[i], prev

    def discretize_coef(self, t):
        sigma, prev = self.discrete_sigma_pair(t)
        return torch.zeros_like(t), torch.sqrt(sigma**2 - prev**2)
