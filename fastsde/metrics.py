"""Sample-quality metrics from network features: FID, KID and the Inception score, as the official
evaluation computes them from Inception-v3 pool_3 features and logits (with tfgan).

fastsde downloads nothing: the feature network is a file the user supplies (torch.export's .pt2, or
TorchScript), mapping
uint8 images [N, 3, H, W] to pool features [N, D], or to a tuple / dict (pool features, logits).
Reference statistics: an official statistics file (score_sde's assets/stats/*_stats.npz, with the
dataset's 'pool_3' features) or any .npz with 'mu' and 'sigma'.
"""

import numpy as np
import torch

from .runs import open_npz


def load_feature_net(path, device="cpu"):
    """A feature network from a local file: a torch.export program (.pt2) or TorchScript (other
    suffixes), on `device`."""
    if str(path).endswith(".pt2"):
        return torch.export.load(str(path)).module().to(device)
    return torch.jit.load(str(path), map_location=device).eval()


def extract(net, images, batch_size=250, device="cpu"):
    """(pool features [N, D] float64, logits [N, K] float64 or None) of uint8 images [N, C, H, W];
    grey images are repeated to 3 channels, as Inception needs."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    pools, logits = [], []
    with torch.no_grad():
        for k in range(0, len(images), batch_size):
            x = images[k : k + batch_size].to(device)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            out = net(x)
            if isinstance(out, dict):
                out = (out["pool"], out.get("logits"))
            pool, logit = out if isinstance(out, (tuple, list)) else (out, None)
            pools.append(pool.double().flatten(1).cpu())
            if logit is not None:
                logits.append(logit.double().cpu())
    return torch.cat(pools).numpy(), (torch.cat(logits).numpy() if logits else None)


def moments(features):
    """(mean [D], covariance [D, D]) of features [N, D], the covariance with N - 1 as numpy's."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(m):
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1^1/2 sigma2 sigma1^1/2)^1/2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape} and {mu2.shape}")
    root = _sqrt_psd(sigma1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sigma2 @ root), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)


def kid(features1, features2, max_block_size=1024):
    """Kernel Inception distance as tfgan computes it for the official evaluation: the unbiased MMD^2
    with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over B = ceil(max(N1, N2) /
    max_block_size) contiguous blocks of each set (as even as possible, the larger ones last), so that
    it depends on the features' order; features [N1, D] and [N2, D]."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"kid needs features [N1, D] and [N2, D], got shapes {f1.shape} and {f2.shape}")
    blocks = -(-max(len(f1), len(f2)) // max_block_size)
    if min(len(f1), len(f2)) < 2 * blocks:
        raise ValueError(
            f"kid needs at least 2 features of each set in each of its {blocks} blocks "
            f"(max_block_size {max_block_size}), got {len(f1)} and {len(f2)} features"
        )

    def edges(n):
        size, larger = divmod(n, blocks)
        return np.cumsum([0] + [size] * (blocks - larger) + [size + 1] * larger)

    (e1, e2), d, total = (edges(len(f1)), edges(len(f2))), f1.shape[1], 0.0
    for b in range(blocks):
        x, y = f1[e1[b] : e1[b + 1]], f2[e2[b] : e2[b + 1]]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        total += (
            (kxx.sum() - np.trace(kxx)) / (len(x) * (len(x) - 1))
            + (kyy.sum() - np.trace(kyy)) / (len(y) * (len(y) - 1))
            - 2 * kxy.mean()
        )
    return float(total / blocks)


def inception_score(logits):
    """exp(E_x KL(p(y|x) || p(y))) of classifier logits [N, K], as tfgan's classifier score."""
    logits = np.asarray(logits, np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    p = np.exp(logp)
    logpy = np.log(p.mean(0))
    return float(np.exp((p * (logp - logpy)).sum(1).mean()))


def reference_stats(path):
    """(mu, sigma, features or None) from a statistics .npz: the official files' 'pool_3'
    features, or 'mu' and 'sigma'."""
    with open_npz(path) as f:
        if "pool_3" in f.files:
            features = f["pool_3"].astype(np.float64)
            return (*moments(features), features)
        if "mu" in f.files and "sigma" in f.files:
            return f["mu"].astype(np.float64), f["sigma"].astype(np.float64), None
        raise ValueError(f"{path}: a statistics file needs 'pool_3' (features) or 'mu' and 'sigma'; has {f.files}")


def evaluate(net, images, stats_path, batch_size=250, device="cpu"):
    """{'fid', 'kid' (when the statistics hold features), 'inception_score' (when the network gives
    logits)} of uint8 images [N, C, H, W] against a statistics file."""
    pool, logits = extract(net, images, batch_size, device)
    mu_ref, sigma_ref, ref_features = reference_stats(stats_path)
    result = {"fid": fid(*moments(pool), mu_ref, sigma_ref)}
    if ref_features is not None:
        result["kid"] = kid(ref_features, pool)  # tfgan's order: data, samples
    if logits is not None:
        result["inception_score"] = inception_score(logits)
    return result
