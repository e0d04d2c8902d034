"""Sampling runs in a folder: saved as they go, resumed after a stop to the very samples of an
unbroken run, guarded against mixing runs, merged once."""

import os

import numpy as np
import pytest
import torch

from fastsde import checkpoint, generate, runs
from fastsde.sde import VESDE, subVPSDE

from tiny import tiny_config

CONFIG = tiny_config()
SDE = checkpoint.sde_from_config(CONFIG)


def score(x, t):
    return -x / (1 + t[:, None, None, None])  # any smooth field: the samples only need to be reproducible


class Stop(Exception):
    pass


def stopping_after(calls):
    """score, but raising Stop at network evaluation number `calls`."""
    count = [0]

    def fn(x, t):
        count[0] += 1
        if count[0] == calls:
            raise Stop
        return score(x, t)

    return fn


@pytest.mark.parametrize("sampler", generate.SAMPLERS)
def test_every_sampler_draws_a_sample_alike_in_any_batch(sampler):
    # What makes a resumed run (in other batches, or over other processes) the unbroken one. RK45 steps
    # each sample on its own: with one step size for the batch, its samples moved with their batch.
    whole, _ = generate.sample_batch(score, SDE, CONFIG, list(range(16)), 3, sampler)
    for chunks in ([[0], [1, 2, 3], list(range(4, 16))], [list(range(k, k + 3)) for k in range(0, 15, 3)] + [[15]]):
        parts = torch.cat([generate.sample_batch(score, SDE, CONFIG, chunk, 3, sampler)[0] for chunk in chunks])
        torch.testing.assert_close(parts, whole, rtol=0, atol=0)


def test_a_run_stopped_midway_resumes_to_the_samples_of_an_unbroken_one(tmp_path):
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    nfe, _ = generate.sample_to(whole, score, SDE, CONFIG, list(range(7)), 7, seed=3, progress=None)
    assert nfe.tolist() == [SDE.N] * 7
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        generate.sample_to(whole, score, SDE, CONFIG, [0], 0, progress=None)
    expected = generate.merge(whole)
    assert expected.shape == (7, 8, 8, 1) and expected.std() > 0
    # Batches of 2, nothing saved on a timer: what the stop in the third batch keeps is saved on the way out.
    with pytest.raises(Stop):
        generate.sample_to(
            parts,
            stopping_after(2 * SDE.N + 5),
            SDE,
            CONFIG,
            list(range(7)),
            2,
            seed=3,
            save_seconds=1e9,
            progress=None,
        )
    assert runs.done(parts, "samples", "samples") == {0, 1, 2, 3}
    missing, total = runs.todo(parts, "samples", "samples", 7)
    assert (missing, total) == ([4, 5, 6], 7)
    # Resumed by two processes, each its share, with another batch size.
    for rank in range(2):
        generate.sample_to(parts, score, SDE, CONFIG, missing[rank::2], 3, seed=3, save_seconds=0, progress=None)
    assert sorted(f for f in os.listdir(parts) if f.startswith("samples_part")) == [
        "samples_part000000000.npz",
        "samples_part000000004.npz",
        "samples_part000000005.npz",
    ]
    assert np.array_equal(generate.merge(parts), expected)
    assert sorted(os.listdir(parts)) == ["samples.npz", "samples.png"]
    # A longer run continues from the merged file; a shorter one has nothing to draw.
    assert runs.todo(parts, "samples", "samples", 9) == ([7, 8], 9)
    assert runs.todo(parts, "samples", "samples", 5) == ([], 7)


def test_sample_settings_name_what_the_samples_depend_on(tmp_path):
    settings = generate.run_settings(SDE, CONFIG, seed=0, weights="abc", precision="fp32")
    assert settings["steps"] == SDE.N and settings["predictor"] == CONFIG.sampling.predictor
    # A default named outright is the same run as the default left out.
    assert (
        generate.run_settings(
            SDE,
            CONFIG,
            0,
            predictor=CONFIG.sampling.predictor,
            snr=CONFIG.sampling.snr,
            weights="abc",
            precision="fp32",
        )
        == settings
    )
    assert generate.run_settings(SDE, CONFIG, 0, "heun")["steps"] == generate.SOLVER_STEPS
    assert generate.run_settings(SDE, CONFIG, 0, "heun", predictor="x")["predictor"] is None  # pc only
    assert generate.run_settings(SDE, CONFIG, 0, "ode", steps=5)["steps"] is None  # RK45 picks its own
    assert generate.default_eps(VESDE()) == 1e-5 and generate.default_eps(subVPSDE()) == 1e-3  # upstream's
    for changed in (dict(snr=0.5), dict(corrector="langevin"), dict(noise="philox"), dict(steps=7, sampler="heun")):
        assert generate.run_settings(SDE, CONFIG, 0, **changed, weights="abc", precision="fp32") != settings, changed


def test_a_sample_is_the_same_in_any_batch_with_a_langevin_corrector():
    # Upstream's Langevin step averages norms over the batch; runs take it per sample.
    one = generate.sample_batch(score, SDE, CONFIG, [3], seed=5, corrector="langevin", snr=0.3)[0]
    many = generate.sample_batch(score, SDE, CONFIG, [0, 1, 2, 3], seed=5, corrector="langevin", snr=0.3)[0]
    torch.testing.assert_close(many[3:], one, rtol=1e-5, atol=1e-5)


def test_digest_follows_the_weights_not_the_file(tmp_path):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert checkpoint.digest(a) != checkpoint.digest(b)
    b.load_state_dict(a.state_dict())
    assert checkpoint.digest(a) == checkpoint.digest(b)
    assert checkpoint.digest(a) != checkpoint.digest(b.to(torch.bfloat16))
    floats, ints = torch.nn.Module(), torch.nn.Module()
    floats.register_buffer("w", torch.ones(2))
    ints.register_buffer("w", torch.ones(2).view(torch.int32))  # the same bytes
    assert checkpoint.digest(floats) != checkpoint.digest(ints)
