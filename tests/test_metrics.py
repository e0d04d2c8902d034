"""FID, KID and Inception score against closed forms, and the feature-extraction mechanics on a tiny
network standing in for Inception."""

import numpy as np
import pytest
import torch

from fastsde import metrics


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert metrics.fid(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T
    assert metrics.fid(mu1[:2].repeat(3)[:5], sigma, mu1[:2].repeat(3)[:5], sigma) == pytest.approx(0, abs=1e-8)
    with pytest.raises(ValueError, match="feature sizes differ"):
        metrics.fid(mu1, np.eye(3), mu1[:2], np.eye(2))


def test_kid_is_tfgans_block_estimator():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(7, 3)) + 0.3

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    def brute(blocks):
        return np.mean(
            [
                sum(k(x[i], x[j]) for i in bx for j in bx if i != j) / (len(bx) * (len(bx) - 1))
                + sum(k(y[i], y[j]) for i in by for j in by if i != j) / (len(by) * (len(by) - 1))
                - 2 * np.mean([k(x[i], y[j]) for i in bx for j in by])
                for bx, by in blocks
            ]
        )

    assert metrics.kid(x, y) == pytest.approx(brute([(range(8), range(7))]), rel=1e-12)
    # tfgan's blocks for max_block_size 3: ceil(8 / 3) = 3 of each set, the larger ones last
    three = brute([(range(0, 2), range(0, 2)), (range(2, 5), range(2, 4)), (range(5, 8), range(4, 7))])
    assert metrics.kid(x, y, max_block_size=3) == pytest.approx(three, rel=1e-12)
    assert metrics.kid(y, x, max_block_size=3) == pytest.approx(three, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 features of each set in each of its 3 blocks"):
        metrics.kid(x, y[:5], max_block_size=3)
    with pytest.raises(ValueError, match=r"\[N1, D\] and \[N2, D\]"):
        metrics.kid(x, y[:, :2])


def test_kid_is_unbiased_and_sees_a_shift():
    rng = np.random.default_rng(0)
    same = [metrics.kid(rng.normal(size=(200, 8)), rng.normal(size=(150, 8)), max_block_size=64) for _ in range(40)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    shifted = metrics.kid(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1.0, max_block_size=64)
    assert shifted > 0.1


def test_inception_score_bounds():
    assert metrics.inception_score(np.zeros((10, 5))) == pytest.approx(1.0)
    confident = np.full((10, 5), -1e4)
    confident[np.arange(10), np.arange(10) % 5] = 0
    assert metrics.inception_score(confident) == pytest.approx(5.0, rel=1e-6)


class TinyFeatures(torch.nn.Module):
    """uint8 images -> (pool features [N, 4], logits [N, 3]), as a local Inception would."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        pool = self.conv(x.float() / 255).mean((2, 3))
        return pool, self.head(pool)


def test_evaluate_with_an_exported_feature_network(tmp_path):
    torch.manual_seed(0)
    direct = TinyFeatures()
    example = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(direct, (example,), dynamic_shapes=({0: batch},)), str(tmp_path / "net.pt2"))
    net = metrics.load_feature_net(tmp_path / "net.pt2")
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)  # grey: repeated to 3 channels
    pool, logits = metrics.extract(net, images, batch_size=7)
    expected_pool, expected_logits = direct(images.expand(-1, 3, -1, -1))
    np.testing.assert_allclose(pool, expected_pool.detach().double().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logits, expected_logits.detach().double().numpy(), rtol=1e-6, atol=1e-7)
    np.savez(tmp_path / "stats.npz", pool_3=pool)  # the official statistics layout
    result = metrics.evaluate(net, images, tmp_path / "stats.npz", batch_size=16)
    assert result["fid"] == pytest.approx(0, abs=1e-6) and abs(result["kid"]) < 1e-3
    assert result["inception_score"] >= 1.0
    mu, sigma = metrics.moments(pool)
    np.savez(tmp_path / "musigma.npz", mu=mu + 1, sigma=sigma)
    assert metrics.evaluate(net, images, tmp_path / "musigma.npz")["fid"] == pytest.approx(4.0, rel=1e-6)
    np.savez(tmp_path / "bad.npz", other=pool)
    with pytest.raises(ValueError, match="pool_3"):
        metrics.reference_stats(tmp_path / "bad.npz")
