"""The `fastsde` command: each subcommand end to end on a tiny model, and its one-line errors."""

import importlib.metadata
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastsde import checkpoint, cli, generate
from fastsde.models import create_model

from conftest import FIXTURES
from tiny import perturb, tiny_config


def _save_tiny(path, config):
    torch.manual_seed(0)
    model = perturb(create_model(config))  # a zero score (last layer at zero) would stall the Langevin step
    checkpoint.save_safetensors(path, model, config)
    return str(path)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", tiny_config())


@pytest.fixture(scope="module")
def tiny_rgb(tmp_path_factory):
    """(an RGB tiny model, a tiny classifier for it)."""
    folder = tmp_path_factory.mktemp("rgb")
    config = tiny_config()
    config.data.dataset, config.data.num_channels = "DIGITS_RGB", 3
    model = _save_tiny(folder / "rgb.safetensors", config)
    assert (
        run(
            "train-classifier",
            "--config",
            model_config_path(folder, config),
            "--out",
            folder / "c.safetensors",
            "--steps",
            3,
            "--blocks",
            1,
            "--width",
            1,
        )
        == 0
    )
    return model, str(folder / "c.safetensors")


def model_config_path(folder, config):
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def run(*argv):
    return cli.main([str(a) for a in argv])


def test_the_command_is_installed_and_runs_as_a_module():
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="fastsde")
    assert entry.value == "fastsde.cli:main"
    out = subprocess.run([sys.executable, "-m", "fastsde", "--help"], capture_output=True, text=True, check=True).stdout
    for command in (
        "train",
        "sample",
        "likelihood",
        "eval",
        "stats",
        "inpaint",
        "colorize",
        "train-classifier",
        "convert",
        "merge",
        "configs",
        "bench",
        "info",
    ):
        assert command in out


def test_configs_list_and_show(capsys):
    assert run("configs") == 0
    names = capsys.readouterr().out.split()
    assert "digits" in names and "ve/cifar10_ncsnpp_continuous" in names and len(names) == 40
    assert run("configs", "vp/ddpm/cifar10") == 0
    assert json.loads(capsys.readouterr().out)["model"]["name"] == "ddpm"


def test_sample_writes_npz_and_png_and_is_batch_independent(tiny_ckpt, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    assert run("sample", "--ckpt", tiny_ckpt, "--num-samples", 5, "--batch-size", 5, "--out", tmp_path / "a") == 0
    summary = capsys.readouterr().out
    assert "5 samples in" in summary and "25 network evaluations per sample" in summary
    with np.load(tmp_path / "a" / "samples.npz") as f:
        a = f["samples"]
    assert a.dtype == np.uint8 and a.shape == (5, 8, 8, 1) and a.std() > 0
    assert np.asarray(Image.open(tmp_path / "a" / "samples.png")).shape == (2 * 33 + 1, 3 * 33 + 1)  # 3 per row, x4
    assert sorted(os.listdir(tmp_path / "a")) == [".samples.lock", "samples.json", "samples.npz", "samples.png"]
    assert run("sample", "--ckpt", tiny_ckpt, "--num-samples", 3, "--batch-size", 2, "--out", tmp_path / "b") == 0
    capsys.readouterr()
    # A longer run into the same folder draws only the samples missing, in other batches.
    assert run("sample", "--ckpt", tiny_ckpt, "--num-samples", 5, "--batch-size", 1, "--out", tmp_path / "b") == 0
    summary = capsys.readouterr().out
    assert "2 samples in" in summary and "3 were there already" in summary
    with np.load(tmp_path / "b" / "samples.npz") as f:
        assert np.array_equal(f["samples"], a)  # sample i depends on the seed and i only
    assert run("sample", "--ckpt", tiny_ckpt, "--num-samples", 4, "--out", tmp_path / "b") == 0
    assert "nothing to draw" in capsys.readouterr().out
    # Another run into it is refused, unless told to overwrite.
    assert run("sample", "--ckpt", tiny_ckpt, "--num-samples", 2, "--seed", 1, "--out", tmp_path / "b") == 1
    assert "seed: 0 there, 1 here" in capsys.readouterr().err
    assert (
        run("sample", "--ckpt", tiny_ckpt, "--num-samples", 2, "--seed", 1, "--overwrite", "--out", tmp_path / "b") == 0
    )
    with np.load(tmp_path / "b" / "samples.npz") as f:
        assert len(f["samples"]) == 2 and not np.array_equal(f["samples"], a[:2])


def test_train_then_sample_from_the_workdir(tmp_path, capsys):
    config = model_config_path(tmp_path, tiny_config())
    workdir = tmp_path / "w"
    assert run("train", "--config", config, "--workdir", workdir, "--steps", 8) == 0
    assert "trained to step 8" in capsys.readouterr().out
    assert sorted(os.listdir(workdir / "checkpoints")) == ["checkpoint_1.pth", "checkpoint_2.pth"]
    # --ckpt a workdir: its last checkpoint, with the config the workdir holds.
    assert run("sample", "--ckpt", workdir, "--num-samples", 2, "--out", tmp_path / "a") == 0
    with np.load(tmp_path / "a" / "samples.npz") as f:
        assert f["samples"].shape == (2, 8, 8, 1)
    (workdir / "checkpoints" / "checkpoint_10.pth").write_bytes(b"junk")
    assert run("sample", "--ckpt", workdir, "--num-samples", 2, "--out", tmp_path / "b") == 1
    assert "checkpoint_10.pth: not a readable checkpoint" in capsys.readouterr().err  # last by number, not name
    os.unlink(workdir / "checkpoints" / "checkpoint_10.pth")
    assert (
        run(
            "sample",
            "--ckpt",
            workdir / "checkpoints-meta" / "checkpoint.pth",
            "--num-samples",
            2,
            "--out",
            tmp_path / "c",
        )
        == 0
    )
    # A checkpoint outside a workdir's checkpoints folders takes no config.json from its surroundings.
    os.makedirs(tmp_path / "elsewhere")
    os.rename(workdir / "checkpoints" / "checkpoint_2.pth", tmp_path / "elsewhere" / "checkpoint_2.pth")
    assert run("sample", "--ckpt", tmp_path / "elsewhere" / "checkpoint_2.pth", "--out", tmp_path / "d") == 1
    assert "no official config fits" in capsys.readouterr().err
    assert run("sample", "--ckpt", tmp_path / "elsewhere", "--out", tmp_path / "d") == 1
    assert "a folder, but neither a training workdir" in capsys.readouterr().err


def test_sample_stopped_by_ctrl_c_resumes_to_the_samples_of_an_unbroken_run(tiny_ckpt, tmp_path):
    command = [sys.executable, "-m", "fastsde", "sample", "--ckpt", tiny_ckpt, "--num-samples", "30"]
    subprocess.run(
        [*command, "--batch-size", "30", "--out", str(tmp_path / "whole")], check=True, capture_output=True, timeout=300
    )
    stopped = subprocess.Popen(
        [*command, "--batch-size", "1", "--out", str(tmp_path / "cut")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    seen = b""
    while b"] 1/30" not in seen:  # the progress line: the first sample is drawn, 29 to go
        chunk = os.read(stopped.stderr.fileno(), 4096)
        assert chunk, seen.decode()
        seen += chunk
    stopped.send_signal(signal.SIGINT)
    _, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 130 and err.decode().endswith("\nfastsde: interrupted\n")
    (part,) = [f for f in os.listdir(tmp_path / "cut") if f.startswith("samples_part")]
    with np.load(tmp_path / "cut" / part) as f:
        assert 1 <= len(f["indices"]) < 30  # saved on the way out, though not a minute old
    resumed = subprocess.run(
        [*command, "--batch-size", "7", "--out", str(tmp_path / "cut")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "were there already" in resumed
    with np.load(tmp_path / "whole" / "samples.npz") as a, np.load(tmp_path / "cut" / "samples.npz") as b:
        assert np.array_equal(a["samples"], b["samples"])


def test_racing_sample_runs_never_mix_their_samples(tiny_ckpt, tmp_path):
    # Two runs with other settings into one folder at once: one draws, the other is refused (before
    # runs held their folder, some tries ended with both exiting 0 and samples of both seeds in one file).
    drawn = {}
    for seed, count in ((0, 8), (1, 24)):
        assert (
            run(
                "sample",
                "--ckpt",
                tiny_ckpt,
                "--num-samples",
                count,
                "--seed",
                seed,
                "--steps",
                21,
                "--out",
                tmp_path / f"alone{seed}",
            )
            == 0
        )
        with np.load(tmp_path / f"alone{seed}" / "samples.npz") as f:
            drawn[seed] = f["samples"]
    for attempt in range(3):
        out = str(tmp_path / f"race{attempt}")
        procs = {
            seed: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fastsde",
                    "sample",
                    "--ckpt",
                    tiny_ckpt,
                    "--num-samples",
                    str(count),
                    "--seed",
                    str(seed),
                    "--steps",
                    "21",
                    "--batch-size",
                    "8",
                    "--out",
                    out,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed, count in ((0, 8), (1, 24))
        }
        codes = {seed: p.wait(timeout=300) for seed, p in procs.items()}
        (winner,) = [seed for seed, code in codes.items() if code == 0]
        loser = procs[1 - winner].stderr.read()
        assert codes[1 - winner] == 1 and ("is in use" in loser or "of another run" in loser), loser
        with np.load(os.path.join(out, "samples.npz")) as f:
            assert np.array_equal(f["samples"], drawn[winner])


def test_every_sampler_refuses_a_model_that_makes_nan(tmp_path, capsys):
    config = tiny_config()
    torch.manual_seed(0)
    model = perturb(create_model(config))
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() == 4).view(-1)[0] = float("nan")
    ckpt = str(tmp_path / "nan.safetensors")
    checkpoint.save_safetensors(ckpt, model, config)
    for argv in (
        ["sample", "--sampler", "heun"],
        ["sample", "--sampler", "dpmpp_2m"],
        ["sample", "--steps", "21"],
        ["sample", "--sampler", "ode"],
        ["interpolate", "--sampler", "heun", "--pairs", "1"],
    ):
        assert run(*argv, "--ckpt", ckpt, "--out", tmp_path / argv[-1]) == 1, argv
        assert "NaN or Inf" in capsys.readouterr().err, argv


def test_sample_with_philox_noise_is_batch_independent(tiny_ckpt, tmp_path):
    # Noise drawn inside the PC kernels: reproducible per sample, and other numbers than --noise torch.
    out = {}
    for name, batch, noise in (("a", 4, "philox"), ("b", 3, "philox"), ("c", 4, "torch")):
        assert (
            run(
                "sample",
                "--ckpt",
                tiny_ckpt,
                "--num-samples",
                4,
                "--batch-size",
                batch,
                "--noise",
                noise,
                "--corrector",
                "langevin",
                "--out",
                tmp_path / name,
            )
            == 0
        )
        with np.load(tmp_path / name / "samples.npz") as f:
            out[name] = f["samples"]
    assert out["a"].std() > 0 and np.array_equal(out["a"], out["b"])
    assert not np.array_equal(out["a"], out["c"])


@pytest.mark.parametrize("sampler", generate.SAMPLERS)
def test_every_sampler_runs(tiny_ckpt, tmp_path, sampler, capsys):
    extra = {
        "pc": ["--corrector", "langevin", "--snr", "0.1", "--steps", "30"],
        "ode": [],
        "dpm_adaptive": [],
        "gotta_go_fast": [],
        "unipc": ["--steps", "4", "--schedule", "logsnr"],
    }.get(sampler, ["--steps", "4"])
    assert (
        run(
            "sample",
            "--ckpt",
            tiny_ckpt,
            "--num-samples",
            2,
            "--sampler",
            sampler,
            *extra,
            "--precision",
            "bf16",
            "--out",
            tmp_path,
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"({sampler}, bf16)" in out
    if sampler in ("dpm_adaptive", "gotta_go_fast"):  # steps of each sample's own
        assert "network evaluations per sample on average (at most" in out
    own_steps = sampler in ("ode", "dpm_adaptive", "gotta_go_fast")
    for refused, said in ((["--steps", "4"], "--steps: the"), (["--schedule", "time"], "--schedule: for the fixed")):
        if own_steps or (sampler == "pc" and refused[0] == "--schedule"):
            assert run("sample", "--ckpt", tiny_ckpt, "--sampler", sampler, *refused, "--out", tmp_path / "x") == 1
            assert said in capsys.readouterr().err


def test_likelihood_checks_the_data_against_the_model(tiny_ckpt, tmp_path, capsys):
    # Each failed inside the network (or printed 'nan bits/dim over 0 images' and exited 0).
    for name, shape, said in (
        ("big", (2, 1, 16, 16), "images of (1, 16, 16) (C, H, W); the model takes (1, 8, 8)"),
        ("rgb", (2, 3, 8, 8), "images of (3, 8, 8) (C, H, W); the model takes (1, 8, 8)"),
        ("empty", (0, 1, 8, 8), "holds no images"),
    ):
        np.savez(tmp_path / f"{name}.npz", images=np.zeros(shape, np.uint8))
        assert run("likelihood", "--ckpt", tiny_ckpt, "--data", tmp_path / f"{name}.npz") == 1
        assert f"{name}.npz: {said}" in capsys.readouterr().err
    (tmp_path / "text.npz").write_text("not an archive")
    assert run("likelihood", "--ckpt", tiny_ckpt, "--data", tmp_path / "text.npz") == 1
    assert "text.npz: not a readable .npz file" in capsys.readouterr().err


def test_likelihood_reports_bits_per_dim_and_resumes(tiny_ckpt, tmp_path, capsys):
    assert run("likelihood", "--ckpt", tiny_ckpt, "--num-samples", 3, "--tol", 1e-3) == 0
    out = capsys.readouterr().out
    bpd = float(out.split(" bits/dim")[0])
    assert np.isfinite(bpd) and "over 3 images x 1 repeats" in out
    common = ["likelihood", "--ckpt", tiny_ckpt, "--num-samples", 3, "--batch-size", 2, "--repeats", 2, "--tol", 1e-3]
    assert run(*common, "--out", tmp_path / "a") == 0
    whole = capsys.readouterr().out
    with np.load(tmp_path / "a" / "bpd.npz") as f:
        per_item = f["bpd"]
    assert per_item.shape == (6,) and float(whole.split(" bits/dim")[0]) == pytest.approx(per_item.mean(), abs=1e-4)
    # A run stopped after its first batch of the second pass (items 3, 4) computes the rest alone, alike.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bpd.json").write_text((tmp_path / "a" / "bpd.json").read_text())
    np.savez(tmp_path / "b" / "bpd_part000000003.npz", indices=np.array([3, 4]), bpd=per_item[3:5])
    assert run(*common, "--out", tmp_path / "b") == 0
    resumed = capsys.readouterr().out
    assert "2 were there already" in resumed and resumed.split(",")[0] == whole.split(",")[0]
    with np.load(tmp_path / "b" / "bpd.npz") as f:
        assert np.array_equal(f["bpd"], per_item)
    assert sorted(os.listdir(tmp_path / "b")) == [".bpd.lock", "bpd.json", "bpd.npz"]
    assert run(*common[:-1], 1e-4, "--out", tmp_path / "b") == 1
    assert "tol: 0.001 there, 0.0001 here" in capsys.readouterr().err


def test_eval_and_convert(tmp_path, capsys):
    from test_metrics import TinyFeatures

    net = TinyFeatures()
    example = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    torch.export.save(
        torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("b", max=512)},)),
        str(tmp_path / "net.pt2"),
    )
    samples = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", samples=samples)
    np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
    assert (
        run(
            "eval",
            "--samples",
            tmp_path / "samples.npz",
            "--stats",
            tmp_path / "stats.npz",
            "--inception",
            tmp_path / "net.pt2",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("fid ") and "inception_score" in out and "(20 samples)" in out
    # Statistics of a dataset, as the official files hold them: the samples against their own are at FID 0.
    assert (
        run(
            "stats",
            "--data",
            tmp_path / "samples.npz",
            "--inception",
            tmp_path / "net.pt2",
            "--out",
            tmp_path / "own.npz",
        )
        == 0
    )
    assert "the 4-dimensional features of 20 images" in capsys.readouterr().out
    with np.load(tmp_path / "own.npz") as f:
        assert f.files == ["pool_3"] and f["pool_3"].shape == (20, 4) and f["pool_3"].dtype == np.float32
    assert (
        run(
            "eval",
            "--samples",
            tmp_path / "samples.npz",
            "--stats",
            tmp_path / "own.npz",
            "--inception",
            tmp_path / "net.pt2",
        )
        == 0
    )
    assert abs(float(capsys.readouterr().out.split()[1])) < 1e-5
    official = os.path.join(FIXTURES, "ncsnpp_ve_cifar_small.pth")
    config = os.path.join(FIXTURES, "ncsnpp_ve_cifar_small.json")
    assert run("convert", "--ckpt", official, "--config", config, "--out", tmp_path / "w.safetensors") == 0
    model, _, _ = checkpoint.load_checkpoint(tmp_path / "w.safetensors")
    reference, _, _ = checkpoint.load_checkpoint(official, config)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_inpaint_colorize_and_class_conditional_sampling(tiny_rgb, tiny_ckpt, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    model, classifier = tiny_rgb
    common = ["--ckpt", model, "--num-samples", 3, "--steps", 30]
    assert run("inpaint", *common, "--mask", "center", "--out", tmp_path) == 0
    assert "rows: input, mask, known part, result" in capsys.readouterr().out
    with np.load(tmp_path / "inpaint.npz") as f:
        result, mask = f["samples"], f["mask"]
    original = __import__("fastsde").data.digits("test", rgb=True)[0][:3].permute(0, 2, 3, 1).numpy()
    known = mask[0] == 1
    assert known.sum() == 64 - 16 and np.array_equal(result[:, known], original[:, known])
    assert np.asarray(Image.open(tmp_path / "inpaint.png")).shape == (4 * 33 + 1, 3 * 33 + 1, 3)
    assert run("colorize", *common, "--out", tmp_path) == 0
    with np.load(tmp_path / "colorize.npz") as f:
        assert f["samples"].shape == (3, 8, 8, 3)  # grey kept: test_controllable, test_default_model
    assert np.asarray(Image.open(tmp_path / "colorize.png")).shape == (3 * 33 + 1, 3 * 33 + 1, 3)
    assert run("sample", *common, "--class", 3, "--classifier", classifier, "--out", tmp_path / "c") == 0
    assert "class 3)" in capsys.readouterr().out
    # Bad input: a colour image to colorize, a grey model, a class the classifier lacks, a mask that does not fit.
    np.savez(tmp_path / "rgb.npz", images=np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8))
    assert run("colorize", *common, "--images", tmp_path / "rgb.npz") == 1
    assert "3 channels that differ" in capsys.readouterr().err
    assert run("colorize", "--ckpt", tiny_ckpt, "--steps", 30) == 1
    assert "needs a model of RGB images" in capsys.readouterr().err
    assert run("sample", *common, "--class", 10, "--classifier", classifier) == 1
    assert "--class 10: the classifier has classes 0..9" in capsys.readouterr().err
    assert run("sample", "--ckpt", tiny_ckpt, "--steps", 30, "--class", 1, "--classifier", classifier) == 1
    assert "takes 3-channel images; the model makes 1-channel" in capsys.readouterr().err
    np.savez(tmp_path / "mask.npz", mask=np.ones((7, 8)))
    assert run("inpaint", *common, "--mask", tmp_path / "mask.npz") == 1
    assert "does not fit images of (3, 8, 8)" in capsys.readouterr().err


def test_interpolate_writes_paths_whose_ends_reconstruct_the_inputs(tiny_ckpt, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    # The embedded model: a trained score's flow is well conditioned both ways (a random network's is
    # not: the tiny model's round trip is off by 1.8 in model space).
    assert run("interpolate", "--pairs", 2, "--frames", 3, "--out", tmp_path) == 0
    assert "a row a pair: input, path, input" in capsys.readouterr().out
    with np.load(tmp_path / "interpolate.npz") as f:
        path = f["samples"].reshape(2, 3, 8, 8, 3).astype(np.float64)
    inputs = __import__("fastsde").data.digits("test", rgb=True)[0][:4].permute(0, 2, 3, 1).numpy()
    inputs = inputs.reshape(2, 2, 8, 8, 3)
    # RK45 both ways: the ends come back to the inputs (measured: 0.02 8-bit levels), the middle is elsewhere.
    assert np.abs(path[:, [0, 2]] - inputs).mean() < 0.5
    assert np.abs(path[:, 1] - inputs[:, 0]).mean() > 5
    assert np.asarray(Image.open(tmp_path / "interpolate.png")).shape == (2 * 33 + 1, 5 * 33 + 1, 3)
    np.savez(tmp_path / "three.npz", images=np.zeros((3, 1, 8, 8), dtype=np.uint8))
    assert run("interpolate", "--ckpt", tiny_ckpt, "--images", tmp_path / "three.npz", "--pairs", 2) == 1
    assert "--pairs 2 needs 4 images; --images has 3" in capsys.readouterr().err
    assert run("interpolate", "--images", tmp_path / "three.npz", "--pairs", 1) == 1  # grey, for an RGB model
    assert "three.npz: images of (1, 8, 8) (C, H, W); the model takes (3, 8, 8)" in capsys.readouterr().err
    assert run("interpolate", "--frames", 1) == 1
    assert "--frames must be at least 2" in capsys.readouterr().err


def test_errors_are_one_line_unless_debug(tmp_path, capsys):
    assert run("sample", "--ckpt", tmp_path / "missing.pth") == 1
    err = capsys.readouterr().err.strip()
    assert err == f"fastsde sample: error: --ckpt {tmp_path / 'missing.pth'}: no such file"
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert run("likelihood", "--ckpt", tmp_path / "junk.pth") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable checkpoint" in err and "weights_only" not in err
    assert (
        run(
            "sample",
            "--ckpt",
            FIXTURES + "/ddpmpp_vp_cifar_small.pth",
            "--config",
            FIXTURES + "/ddpmpp_vp_cifar_small.json",
            "--steps",
            10,
        )
        == 1
    )
    assert "N must exceed beta_max" in capsys.readouterr().err
    assert run("merge", "--out", tmp_path) == 1
    assert "no samples.npz or samples_part*.npz to merge" in capsys.readouterr().err
    assert run("merge", "--out", tmp_path / "none") == 1 and not os.path.exists(tmp_path / "none")
    assert "--out " + str(tmp_path / "none") + ": no such folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        run("--debug", "sample", "--ckpt", tmp_path / "missing.pth")
    with pytest.raises(SystemExit):
        run("sample", "--precision", "fp8")
    # Counts and tolerances are checked where they are parsed, by name (no range() error, no silent NaN).
    for argv, said in (
        (["sample", "--batch-size", 0], "argument --batch-size: must be a positive integer, got '0'"),
        (["sample", "--num-samples", -3], "argument --num-samples: must be a positive integer"),
        (["likelihood", "--repeats", 0], "argument --repeats: must be a positive integer"),
        (["likelihood", "--tol", "x"], "argument --tol: must be a positive number, got 'x'"),
        (["sample", "--snr", -0.16], "argument --snr: must be a positive number, got '-0.16'"),
        (["inpaint", "--snr", -1], "argument --snr: must be a positive number"),
    ):
        with pytest.raises(SystemExit):
            run(*argv)
        assert said in capsys.readouterr().err
    assert run("sample", "--sampler", "ode", "--steps", 50) == 1
    assert "--steps: the ode sampler (RK45) chooses its own steps" in capsys.readouterr().err
    assert run("sample", "--sampler", "heun", "--corrector", "ald", "--snr", 0.1) == 1
    assert "--corrector, --snr: for --sampler pc only, not heun" in capsys.readouterr().err
    assert run("interpolate", "--steps", 5) == 1
    assert "--steps: the ode sampler (RK45)" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert run("sample", "--out", tmp_path / "a_file") == 1
    assert "a_file exists and is not a folder" in capsys.readouterr().err
    assert run("sample", "--num-samples", 10_000_000_000, "--out", tmp_path / "many") == 1  # was a MemoryError
    assert (
        "--num-samples 10000000000: 1788.1 GiB of 8-bit images, more than the merge into samples.npz can hold"
        in capsys.readouterr().err
    )
    # A full disk: the error names the file that could not be written.
    import errno

    from fastsde import runs

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(runs.np, "savez", full)
        assert run("sample", "--num-samples", 2, "--steps", 21, "--out", tmp_path / "full") == 1
    said = capsys.readouterr().err
    assert "[Errno 28] could not write " in said and "samples_part000000000.npz: No space left on device" in said
    for argv, said in (
        (
            ["bench", "--precision", "fp32,fp8"],
            "--precision: takes a comma-separated list of fp32, tf32, bf16, fp16, got 'fp32,fp8'",
        ),
        (["bench", "--batch-sizes", "1,x"], "--batch-sizes: must be comma-separated positive integers"),
        (
            ["eval", "--samples", tmp_path / "none.npz", "--stats", "s", "--inception", "i"],
            f"argument --samples: no such file: '{tmp_path / 'none.npz'}'",
        ),
        (["sample", "--device", "gpu"], "argument --device: not a device: 'gpu' (cpu, cuda, cuda:1"),
    ):
        with pytest.raises(SystemExit):
            run(*argv)
        assert said in capsys.readouterr().err
    assert run("train", "--config", "ve/cifar10_ncsnp", "--workdir", tmp_path / "w") == 1
    assert "config 've/cifar10_ncsnp' is neither a config name" in capsys.readouterr().err
    (tmp_path / "cut.json").write_text('{"model": ')
    assert run("configs", tmp_path / "cut.json") == 1
    assert "cut.json': not a JSON file (Expecting value" in capsys.readouterr().err
    assert run("inpaint", "--mask", "middle") == 1
    said = capsys.readouterr().err
    assert "--mask middle: neither one of right, left, bottom, top, center nor a .npz or image file" in said


def test_bench_and_info(tiny_ckpt, tmp_path, capsys):
    report = tmp_path / "bench.json"
    argv = ("--ckpt", tiny_ckpt, "--batch-sizes", "1,2", "--steps", 3, "--repeats", 1, "--precision", "fp32,bf16")
    assert run("bench", *argv, "--samplers", "dpmpp_2m,heun", "--json", report) == 0
    out = capsys.readouterr().out
    assert "eager fp32" in out and "fast bf16" in out and "img/s" in out
    rep = json.loads(report.read_text())
    assert [(r["sampler"], r["batch"], r["path"]) for r in rep["rows"]] == [
        (s, b, p) for s in ("dpmpp_2m", "heun") for b in (1, 2) for p in ("eager fp32", "fast fp32", "fast bf16")
    ]
    for r in rep["rows"]:
        # NFE as the samplers count them: 3 steps and the noise removal; Heun's 2 a step, the last 1.
        assert r["images_per_s"] > 0 and r["nfe"] == (4 if r["sampler"] == "dpmpp_2m" else 6)
        assert r["vs_eager"] == 1.0 if r["path"] == "eager fp32" else r["vs_eager"] > 0
    assert rep["machine"]["device"] == "cpu" and rep["machine"]["torch"] == torch.__version__
    # The tiny model is VP with beta_max 20: PC needs N > 20, and says so.
    assert run("bench", *argv, "--samplers", "pc") == 1
    assert "N must exceed beta_max" in capsys.readouterr().err
    assert run("info") == 0
    assert "backends:" in capsys.readouterr().out
