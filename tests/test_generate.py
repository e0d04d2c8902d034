"""Sampling runs in a folder: saved as they go, resumed after a stop to the very samples of an
unbroken run, guarded against mixing runs, merged once."""
import json
import os

import numpy as np
import pytest
import torch

from fastsde import checkpoint, generate
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


def merged(out):
    with np.load(os.path.join(out, "samples.npz")) as f:
        return f["samples"]


def test_a_run_stopped_midway_resumes_to_the_samples_of_an_unbroken_one(tmp_path):
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    nfe, _ = generate.sample_to(whole, score, SDE, CONFIG, list(range(7)), 7, seed=3, progress=None)
    assert nfe == SDE.N
    expected = generate.merge(whole)
    assert expected.shape == (7, 8, 8, 1) and expected.std() > 0
    # Batches of 2, nothing saved on a timer: what the stop in the third batch keeps is saved on the way out.
    with pytest.raises(Stop):
        generate.sample_to(parts, stopping_after(2 * SDE.N + 5), SDE, CONFIG, list(range(7)), 2, seed=3,
                           save_seconds=1e9, progress=None)
    assert generate.done(parts) == {0, 1, 2, 3}
    missing, total = generate.todo(parts, 7)
    assert (missing, total) == ([4, 5, 6], 7)
    # Resumed by two processes, each its share, with another batch size.
    for rank in range(2):
        generate.sample_to(parts, score, SDE, CONFIG, missing[rank::2], 3, seed=3, save_seconds=0, progress=None)
    assert sorted(f for f in os.listdir(parts) if f.startswith("samples_part")) == [
        "samples_part000000000.npz", "samples_part000000004.npz", "samples_part000000005.npz"]
    assert np.array_equal(generate.merge(parts), expected)
    assert sorted(os.listdir(parts)) == ["samples.npz", "samples.png"]
    # A longer run continues from the merged file; a shorter one has nothing to draw.
    assert generate.todo(parts, 9) == ([7, 8], 9)
    assert generate.todo(parts, 5) == ([], 7)


def test_todo_fills_the_gaps_of_a_longer_run_cut_short(tmp_path):
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    generate.write_part(str(tmp_path), [0, 1, 5], images)
    assert generate.todo(str(tmp_path), 3) == ([2, 3, 4], 6)  # sample 5 is kept, so 2..4 are drawn
    with pytest.raises(ValueError, match=r"samples \[2, 3, 4\] are missing \(3 of 0..5 there\)"):
        generate.merge(str(tmp_path))


def test_merge_keeps_one_copy_of_samples_saved_twice(tmp_path):
    # A merge stopped after writing samples.npz but before deleting the parts leaves both.
    out = str(tmp_path)
    images = torch.arange(4 * 64, dtype=torch.uint8).reshape(4, 1, 8, 8)
    generate.write_part(out, [0, 1, 2, 3], images)
    generate.save_npz(os.path.join(out, "samples.npz"), samples=images[:3].permute(0, 2, 3, 1).numpy())
    assert generate._rows(os.path.join(out, "samples.npz")) == 3
    assert generate.done(out) == {0, 1, 2, 3}
    assert np.array_equal(generate.merge(out), images.permute(0, 2, 3, 1).numpy())
    assert generate._rows(os.path.join(out, "samples.npz")) == 4 and generate.todo(out, 4) == ([], 4)
    with pytest.raises(FileNotFoundError, match="no samples.npz or samples_part"):
        generate.merge(str(tmp_path / "empty"))


def test_a_run_resumes_only_when_drawn_alike(tmp_path):
    out = str(tmp_path)
    settings = generate.run_settings(SDE, CONFIG, seed=0, weights="abc", precision="fp32")
    assert settings["steps"] == SDE.N and settings["predictor"] == CONFIG.sampling.predictor
    assert generate.run_settings(SDE, CONFIG, 0, "heun")["steps"] == generate.SOLVER_STEPS
    assert generate.run_settings(SDE, CONFIG, 0, "heun", predictor="x")["predictor"] is None  # pc only
    generate.open_run(out, settings)
    generate.write_part(out, [0], torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    generate.open_run(out, dict(settings))  # the same run: resumed
    generate.open_run(out, generate.run_settings(SDE, CONFIG, seed=0, predictor=CONFIG.sampling.predictor,
                                             weights="abc", precision="fp32"))  # a default named is the same
    with pytest.raises(ValueError, match=r"holds samples of another run \(precision: 'fp32' there, 'bf16' "
                                         r"here; seed: 0 there, 1 here\).*--overwrite"):
        generate.open_run(out, {**settings, "seed": 1, "precision": "bf16"})
    changed = json.loads(json.dumps(CONFIG))
    changed["model"]["nf"] = 32
    with pytest.raises(ValueError, match=r"\(config differs\)"):
        generate.open_run(out, {**settings, "config": changed})
    assert generate.done(out) == {0}
    generate.open_run(out, {**settings, "seed": 1}, overwrite=True)
    assert generate.done(out) == set() and json.load(open(os.path.join(out, "run.json")))["seed"] == 1
    # Samples without a run.json (another tool's, or an older fastsde's) are never taken for this run's.
    os.unlink(os.path.join(out, "run.json"))
    generate.save_npz(os.path.join(out, "samples.npz"), samples=np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="holds samples but no run.json"):
        generate.open_run(out, settings)


def test_digest_follows_the_weights_not_the_file(tmp_path):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert checkpoint.digest(a) != checkpoint.digest(b)
    b.load_state_dict(a.state_dict())
    assert checkpoint.digest(a) == checkpoint.digest(b)
    assert checkpoint.digest(a) != checkpoint.digest(b.to(torch.bfloat16))
