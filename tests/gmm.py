"""A Gaussian mixture whose perturbed scores are exact in closed form, for testing samplers.

Under the forward SDE each isotropic component N(mu_k, s_k^2 I) stays Gaussian:
N(alpha(t) mu_k, (alpha(t)^2 s_k^2 + std(t)^2) I), with alpha and std from the SDE's marginals.
"""

import math

import torch

from fastsde import VESDE, VPSDE, subVPSDE


class GaussianMixture:
    def __init__(self, weights, means, stds):
        self.w = torch.tensor(weights, dtype=torch.float64)
        self.mu = torch.tensor(means, dtype=torch.float64)  # [K, D]
        self.s = torch.tensor(stds, dtype=torch.float64)  # [K]

    def _components(self, x, alpha, std):
        """log(w_k N(x; alpha mu_k, v_k I)) [B, K] and the variances v_k [B, K]."""
        D = x.shape[1]
        v = alpha[:, None] ** 2 * self.s**2 + std[:, None] ** 2
        diff = x[:, None, :] - alpha[:, None, None] * self.mu
        logn = -0.5 * (diff**2).sum(-1) / v - 0.5 * D * torch.log(2 * math.pi * v)
        return torch.log(self.w) + logn, v, diff

    def log_prob(self, x, alpha=None, std=None):
        """Exact log density [B] of x [B, D] (at t = 0 by default)."""
        x = x.double()
        alpha = torch.ones(len(x), dtype=torch.float64) if alpha is None else alpha.double()
        std = torch.zeros(len(x), dtype=torch.float64) if std is None else std.double()
        return torch.logsumexp(self._components(x, alpha, std)[0], dim=1)

    def score_fn(self, sde):
        """The exact score of p_t for `sde`: score_fn(x, t) -> [B, D]."""

        def score(x, t):
            alpha, std = (v.double().cpu() for v in sde.marginal_coef(t))
            logc, v, diff = self._components(x.double().cpu(), alpha, std)
            r = torch.softmax(logc, dim=1)
            return (-(r / v)[:, :, None] * diff).sum(1).to(device=x.device, dtype=x.dtype)

        return score

    def sample(self, n, generator):
        k = torch.multinomial(self.w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.mu.shape[1], dtype=torch.float64, generator=generator)
        return (self.mu[k] + self.s[k, None] * z).float()

    def assign(self, x):
        """The nearest component mean of each sample, [B]."""
        return torch.cdist(x.double(), self.mu).argmin(1)


def mixture(dims=2):
    """Two isotropic components in `dims` dimensions (the first two hold the means' differences)."""
    pad = [0.0] * (dims - 2)
    return GaussianMixture(weights=[0.3, 0.7], means=[[-2.0, 0.0] + pad, [2.0, 1.0] + pad], stds=[0.3, 0.6])


GMM = mixture()
N_SAMPLES = 2000


def sdes(n=500):
    return {"VE": VESDE(N=n), "VP": VPSDE(N=n), "subVP": subVPSDE(N=n)}


def assert_is_mixture(x, gmm=GMM, spread=0.08):
    """x [B, D] is a sample of the mixture `gmm`: component weights, means and spreads (relative error
    `spread`, averaged over the dimensions) within sampling error."""
    assert torch.isfinite(x).all()
    k = gmm.assign(x)
    for j in range(2):
        w = gmm.w[j].item()
        frac = (k == j).double().mean().item()
        assert abs(frac - w) < 4 * math.sqrt(w * (1 - w) / len(x)) + 0.01, (j, frac, w)
        xs = x[k == j].double()
        sem = gmm.s[j].item() / math.sqrt(len(xs))
        assert (xs.mean(0) - gmm.mu[j]).abs().max() < 5 * sem + 0.03, (j, xs.mean(0))
        assert abs(xs.std(0).mean().item() / gmm.s[j].item() - 1) < spread, (j, xs.std(0))
