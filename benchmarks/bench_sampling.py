"""End-to-end sampling benchmark (harness.py) on preset models: tables printed, recorded with --record.

    python benchmarks/bench_sampling.py --preset cpu [--official PATH] [--record]      # the shared fixtures
    python benchmarks/bench_sampling.py --preset gpu [--official PATH] [--record]      # CIFAR-10 NCSN++ / DDPM++
    python benchmarks/bench_sampling.py --preset smoke                                  # CI: seconds, no timing claims
    python benchmarks/bench_sampling.py --preset gpu --device cpu --dry-run             # CI: the gpu code paths
    python benchmarks/plot_sampling.py results/sampling-cpu-2core.csv PLOT.png           # throughput against batch size

Presets: cpu: the two official-format fixtures of tests/fixtures (NCSN++ VE and DDPM++ VP, 16x16,
trained weights not needed for speed), batch 1 and 8, and the training-step memory of the CIFAR-10
configs below at batch 4; gpu: the official CIFAR-10 configs
ve/cifar10_ncsnpp_continuous and vp/cifar10_ddpmpp_continuous at batch 1, 64 and 512 in tf32
(the official code's precision: torch's default is TF32 convolutions) and bf16, eager and
CUDA-graphed, the memory of a training step at batch 128, plus the 256x256 and 1024x1024 NCSN++
at batch 1 (random weights: speed does not depend on them); sized to fit the device check's
budget, the most wanted rows first (a run cut short keeps what it measured). Each preset also times
an evaluation of the likelihood's ODE (drift and vector-Jacobian product) on its models. The
accuracy sections (the samplers' images and the likelihood's bits/dim in each precision) use the
embedded digits model (trained), whose samples mean something.
--official PATH adds the official code itself (a local yang-song/score_sde_pytorch checkout).
"""

import argparse
import os
import sys

import torch

from fastsde import checkpoint, configs, models, timing

import harness
import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
DIGITS = os.path.join(ROOT, "fastsde", "assets", "digits.safetensors")


# measure: (the report's key, the fields that make a row's case, the field that names its path)
MEASURES = {
    "throughput": ("rows", ("model", "sampler", "batch"), "path"),
    "accuracy": ("accuracy", ("model", "sampler"), "variant"),
    "train_memory": ("train_memory", ("model", "batch"), "path"),
    "likelihood": ("likelihood", ("model", "batch"), "path"),
    "likelihood_accuracy": ("likelihood_accuracy", ("model",), "variant"),
}


def fixture(name, device):
    model, sde, config = checkpoint.load_checkpoint(
        os.path.join(FIXTURES, f"{name}.pth"), os.path.join(FIXTURES, f"{name}.json"), device=device
    )
    return name, model, sde, configs.load(config)


def official_config(name, device):
    config = configs.get(name)
    config.device = device
    torch.manual_seed(0)
    return name, models.create_model(config).to(device).eval(), checkpoint.sde_from_config(config), config


def cifar10(device):
    """The CIFAR-10 NCSN++ and DDPM++ configs that the targets speak of, random weights."""
    return [
        official_config("ve/cifar10_ncsnpp_continuous", device),
        official_config("vp/cifar10_ddpmpp_continuous", device),
    ]


PRESETS = {
    "smoke": dict(
        models=lambda d: [fixture("ncsnpp_ve_cifar_small", d)],
        batches=(2,),
        pc_steps=3,
        solver_steps=3,
        rounds=1,
        accuracy=dict(batch=2, solver_steps=3, pc_steps=25),
        train_batch=2,
        likelihood=dict(batches=(2,), evals=1),
    ),
    "cpu": dict(
        models=lambda d: [fixture("ncsnpp_ve_cifar_small", d), fixture("ddpmpp_vp_cifar_small", d)],
        batches=(1, 8),
        pc_steps=25,
        solver_steps=20,
        rounds=3,
        accuracy=dict(batch=16, solver_steps=20),
        train_batch=4,
        train_models=cifar10,
        likelihood=dict(batches=(1, 8), evals=3),
    ),
    "gpu": dict(
        models=cifar10,
        batches=(1, 64, 512),
        pc_steps=8,
        solver_steps=10,
        rounds=2,
        precisions=("tf32", "bf16"),
        train_batch=128,
        likelihood=dict(batches=(1, 64), evals=3),
        scaling=lambda d: [
            official_config("ve/celebahq_256_ncsnpp_continuous", d),
            official_config("ve/ffhq_ncsnpp_continuous", d),
        ],
        accuracy=dict(batch=64, solver_steps=20),
    ),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--device", help="default: cuda for the gpu preset, else cpu")
    p.add_argument("--official", help="a local checkout of yang-song/score_sde_pytorch, timed beside")
    p.add_argument("--samplers", default="pc,dpmpp_2m", help="comma-separated: pc, dpmpp_2m, heun")
    p.add_argument("--rounds", type=int, help="timed runs per case (default: the preset's)")
    p.add_argument(
        "--precision",
        help="fastsde's paths, comma-separated: fp32, tf32, bf16, fp16 (default: "
        "the preset's; fp32 on CPUs, where bf16 pays only with AMX and large networks)",
    )
    p.add_argument("--compile", action="store_true", help="also time the network under torch.compile")
    p.add_argument(
        "--record", action="store_true", help="write the results into benchmarks/results/sampling-<machine>.csv"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="the preset's code paths at the smallest sizes, "
        "a crash check on any device (CI runs the gpu preset on its CPU); the timings mean nothing",
    )
    args = p.parse_args()
    preset = PRESETS[args.preset]
    if args.dry_run:
        scaling = preset.get("scaling", lambda d: [])
        preset = dict(
            preset,
            batches=(1,),
            pc_steps=1,
            solver_steps=2,
            rounds=1,
            train_batch=1,
            accuracy=dict(batch=2, solver_steps=2, pc_steps=25),
            likelihood=dict(batches=(1,), evals=1),
            scaling=lambda d: scaling(d)[:1],
        )
    device = torch.device(args.device or ("cuda" if args.preset == "gpu" else "cpu"))
    rounds = args.rounds or preset["rounds"]
    precisions = tuple(args.precision.split(",")) if args.precision else preset.get("precisions")
    samplers = tuple(args.samplers.split(","))
    report = {key: [] for key, _, _ in MEASURES.values()}

    def add(measure):  # each measurement recorded as it comes: a run cut short keeps what it measured
        key, fields, path = MEASURES[measure]

        def add_rows(rows):
            report[key] += rows
            if args.record:
                table.record("sampling", device, table.rows_of(rows, measure, fields, path))

        return add_rows

    # First, as it takes seconds: a run cut short (the device check's time limit) still has it.
    print("accuracy of the fast paths (digits model) ...", file=sys.stderr)
    model, sde, config = checkpoint.load_checkpoint(DIGITS, device=device)
    digits = model, sde, configs.load(config)
    add("accuracy")([dict(r, model="digits") for r in harness.accuracy(*digits, device, **preset["accuracy"])])
    # Training memory (seconds, so before the throughput): of the preset's models, or of those named
    # for it (the CPU preset's CIFAR-10 configs, too slow there to sample from).
    for name, model, sde, config in preset.get("train_models", preset["models"])(device):
        print(f"training step memory of {name} ...", file=sys.stderr)
        add("train_memory")(
            harness.train_memory(model, sde, config, device, preset["train_batch"], args.official, label=name)
        )
    nets = preset["models"](device)
    for name, model, sde, config in nets:
        print(f"benchmarking {name} ...", file=sys.stderr)
        harness.throughput(
            model,
            sde,
            config,
            device,
            preset["batches"],
            samplers,
            preset["pc_steps"],
            preset["solver_steps"],
            rounds,
            args.official,
            precisions,
            args.compile,
            label=name,
            progress=add("throughput"),
        )
    for name, model, sde, config in nets:
        print(f"likelihood evaluations of {name} ...", file=sys.stderr)
        harness.likelihood_speed(
            model,
            sde,
            config,
            device,
            rounds=rounds,
            precisions=precisions,
            compile=args.compile,
            label=name,
            progress=add("likelihood"),
            **preset["likelihood"],
        )
    # Tens of seconds (RK45 to 1e-5 in each precision), so after the throughput rows.
    print("accuracy of the likelihood in each precision (digits model) ...", file=sys.stderr)
    lik = harness.likelihood_accuracy(*digits, device, batch=preset["accuracy"]["batch"])
    add("likelihood_accuracy")([dict(r, model="digits") for r in lik])
    for name, model, sde, config in preset.get("scaling", lambda d: [])(device):
        print(f"benchmarking {name} (image size {config.data.image_size}) ...", file=sys.stderr)
        harness.throughput(
            model,
            sde,
            config,
            device,
            (1,),
            ("pc",),
            preset["pc_steps"],
            preset["solver_steps"],
            rounds,
            None,
            ("bf16",),
            label=name,
            progress=add("throughput"),
        )
    m = timing.machine(device)
    print(f"# {m.get('gpu') or m['cpu']}, {m['threads']} threads, torch {m['torch']}, {m['date']}")
    print(harness.table(report["rows"], report["accuracy"]))
    print(harness.train_memory_table(report["train_memory"]))
    print(harness.likelihood_table(report["likelihood"]))
    print(harness.likelihood_accuracy_table(report["likelihood_accuracy"]))


if __name__ == "__main__":
    main()
