"""Training objectives and optimisation with the official semantics (score_sde_pytorch losses.py,
models/ema.py): denoising score matching for the continuous SDEs, the SMLD (VE) and DDPM (VP)
losses for discrete models, Adam with linear warmup and gradient clipping, and the EMA."""

import torch

from .sde import VESDE, VPSDE, batch_view, subVPSDE


def _reduce(reduce_mean):
    # Over all but the batch dimension: the mean, or half the sum (the official `reduce_mean=False`).
    if reduce_mean:
        return lambda v: v.flatten(1).mean(1)
    return lambda v: 0.5 * v.flatten(1).sum(1)


def sde_loss(score_fn, sde, x, reduce_mean=True, likelihood_weighting=False, eps=1e-5, generator=None):
    """Denoising score matching (Song et al. 2021, Eq. 7), [] scalar: t ~ U(eps, T), x_t = alpha x + std z,
    loss = |score std + z|^2, or with likelihood_weighting |score + z / std|^2 g(t)^2 (Song et al.
    2021b). x: [B, ...] data; score_fn(x, t) as the samplers take it; generator: a torch.Generator."""
    t = torch.rand(x.shape[0], device=x.device, generator=generator) * (sde.T - eps) + eps
    z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    mean, std = sde.marginal_prob(x, t)
    score = score_fn(mean + batch_view(std, x) * z, t)
    reduce = _reduce(reduce_mean)
    if likelihood_weighting:
        g2 = sde.diffusion(t) ** 2
        losses = reduce((score + z / batch_view(std, x)) ** 2) * g2
    else:
        losses = reduce((score * batch_view(std, x) + z) ** 2)
    return losses.mean()


def smld_loss(model, sde, x, reduce_mean=False, generator=None):
    """The NCSN loss of a discrete VE model (labels index its descending sigmas), [] scalar."""
    if not isinstance(sde, VESDE):
        raise ValueError(f"smld_loss needs a VESDE, got {type(sde).__name__}")
    labels = torch.randint(0, sde.N, (x.shape[0],), device=x.device, generator=generator)
    sigmas = sde.discrete_sigmas(torch.empty(0, device=x.device, dtype=x.dtype)).flip(0)[labels]
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator) * batch_view(sigmas, x)
    target = -noise / batch_view(sigmas**2, x)
    losses = _reduce(reduce_mean)((model(x + noise, labels) - target) ** 2) * sigmas**2
    return losses.mean()


def ddpm_loss(model, sde, x, reduce_mean=True, generator=None):
    """The DDPM loss of a discrete VP model (the network predicts the noise), [] scalar."""
    if not isinstance(sde, VPSDE) or isinstance(sde, subVPSDE):
        raise ValueError(f"ddpm_loss needs a VPSDE, got {type(sde).__name__}")
    labels = torch.randint(0, sde.N, (x.shape[0],), device=x.device, generator=generator)
    s1m = sde.sqrt_1m_alphas_cumprod(torch.empty(0, device=x.device, dtype=x.dtype))[labels]
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    perturbed = batch_view(torch.sqrt(1 - s1m**2), x) * x + batch_view(s1m, x) * noise
    return _reduce(reduce_mean)((model(perturbed, labels) - noise) ** 2).mean()


def optimizer(params, lr=2e-4, beta1=0.9, eps=1e-8, weight_decay=0.0):
    """The official optimiser: Adam with betas (beta1, 0.999)."""
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), eps=eps, weight_decay=weight_decay)


def optimize_step(opt, params, step, lr=2e-4, warmup=5000, grad_clip=1.0):
    """The official optimize_fn: learning rate lr min(step / warmup, 1) (0 at step 0), gradient norm
    clipped to grad_clip when grad_clip >= 0, then one optimiser step."""
    if warmup > 0:
        for group in opt.param_groups:
            group["lr"] = lr * min(step / warmup, 1.0)
    if grad_clip >= 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip)
    opt.step()


class EMA:
    """Exponential moving average of the trainable parameters, as upstream's models/ema.py: the
    effective decay is min(decay, (1 + n) / (10 + n)) after n updates; state_dict() has upstream's
    layout {'decay', 'num_updates', 'shadow_params'} (a list over the trainable parameters)."""

    def __init__(self, parameters, decay):
        self.decay, self.num_updates = decay, 0
        self.shadow_params = [p.detach().clone() for p in parameters if p.requires_grad]

    @torch.no_grad()
    def update(self, parameters):
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow_params, [p for p in parameters if p.requires_grad]):
            s.sub_((1 - decay) * (s - p))

    @torch.no_grad()
    def copy_to(self, parameters):
        for s, p in zip(self.shadow_params, [p for p in parameters if p.requires_grad]):
            p.copy_(s)

    def state_dict(self):
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": self.shadow_params}

    def load_state_dict(self, state):
        shadow = state["shadow_params"]
        if len(shadow) != len(self.shadow_params) or any(
            a.shape != b.shape for a, b in zip(shadow, self.shadow_params)
        ):
            raise ValueError(
                f"EMA state has {len(shadow)} shadow parameters that do not match the model's "
                f"{len(self.shadow_params)} trainable parameters"
            )
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        self.shadow_params = [s.clone() for s in shadow]
