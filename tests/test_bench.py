"""The benchmarks' harness (benchmarks/harness.py) on a tiny model: what a timed PC run of a few steps
stands for, what a training step keeps for its backward, what the likelihood's rows measure; and the
results tables (benchmarks/table.py)."""

import copy
import json
import math
import os

import pytest
import torch

from fastsde import checkpoint, models

import harness
import table
from tiny import perturb, tiny_config


@pytest.fixture(scope="module")
def tiny():
    config = tiny_config()  # VP, N = 25
    torch.manual_seed(0)
    return models.create_model(config).eval(), checkpoint.sde_from_config(config), config


def test_pc_rows_stand_for_the_configs_run(tiny, monkeypatch):
    # Off CUDA the graph flag is ignored, so a "graphed" path runs here, eagerly, timed at two
    # lengths; the timings are made up: a step costs 10 ms, a graphed run pays 0.5 s once.
    model, sde, config = tiny
    paths = [
        dict(
            name="official loop",
            backend="reference",
            precision=None,
            cuda_graph=False,
            channels_last=False,
            compile=False,
            fold=False,
        ),
        dict(
            name="graphed",
            backend=None,
            precision="fp32",
            cuda_graph=True,
            channels_last=True,
            compile=False,
            fold=True,
        ),
    ]
    monkeypatch.setattr(harness, "paths_for", lambda *args: paths)

    def time_runs(runs, batch, rounds, device):
        out = {}
        for (name, n), run in runs.items():
            seconds = 0.01 * n + 0.5 * (name == "graphed")
            out[name, n] = {"seconds": seconds, "first": seconds, "nfe": run(batch, 0)[1], "peak": None}
        return out

    monkeypatch.setattr(harness, "time_runs", time_runs)
    rows = {r["path"]: r for r in harness.throughput(model, sde, config, "cpu", (2,), ("pc",), pc_steps=3, rounds=1)}
    # The VP SDE needs N > beta_max = 20: 21 steps, not 3.
    assert rows["official loop"]["timed_steps"] == [21] and rows["graphed"]["timed_steps"] == [21, 42]
    assert rows["official loop"]["seconds_per_batch"] == pytest.approx(0.01 * sde.N)
    assert rows["graphed"]["seconds_per_batch"] == pytest.approx(0.5 + 0.01 * sde.N)
    assert all(r["nfe"] == sde.N for r in rows.values())  # Euler-Maruyama, no corrector


def test_fused_training_step_keeps_less(tiny):
    model, sde, config = tiny
    rows = {r["path"]: r for r in harness.train_memory(model, sde, config, "cpu", batch=2)}
    assert set(rows) == {"official loop", "fastsde fp32"}
    assert 0 < rows["fastsde fp32"]["saved_MiB"] < rows["official loop"]["saved_MiB"]
    assert all(r["train_step_peak_MiB"] is None for r in rows.values())  # measured on CUDA only


def test_op_profile_shows_each_paths_kernels(tiny):
    model, sde, config = tiny
    profiles = {p["path"]: p for p in harness.op_profile(model, sde, config, "cpu", batch=2, calls=1)}
    assert set(profiles) == {"official loop", "fastsde fp32"}
    ops = {path: {name: n for name, n, _, _ in p["ops"]} for path, p in profiles.items()}
    # The tiny DDPM++'s GroupNorms: torch's on the loop, the fused kernel on fastsde, as many.
    assert "fastsde::group_norm" in ops["fastsde fp32"]
    assert "aten::native_group_norm" in ops["official loop"]
    assert not any(name.startswith("fastsde::") for name in ops["official loop"])
    assert ops["official loop"]["aten::native_group_norm"] == ops["fastsde fp32"]["fastsde::group_norm"]
    for p in profiles.values():
        assert sum(share for _, _, _, share in p["ops"]) == pytest.approx(1)
        assert p["wall_ms"] > 0 and p["kernels_per_call"] is None
        assert [ms for _, _, ms, _ in p["ops"]] == sorted((ms for _, _, ms, _ in p["ops"]), reverse=True)
    # The ops a call dispatches: the loop's, fewer on fastsde's (fused GroupNorm+SiLU, folded constants).
    assert 0 < profiles["fastsde fp32"]["ops_per_call"] < profiles["official loop"]["ops_per_call"]
    assert "fastsde::group_norm" in harness.op_profile_table([dict(profiles["fastsde fp32"], model="tiny")])


def test_likelihood_rows_time_the_likelihoods_own_right_hand_side(tiny, monkeypatch):
    # Each run is `evals` calls of likelihood.ode_with_divergence's rhs (the function RK45 integrates
    # in log_likelihood) on every path but the CUDA-graphed ones, for each batch size.
    from fastsde import likelihood

    model, sde, config = tiny
    made, calls = [], []
    real = likelihood.ode_with_divergence

    def counted(sde_, score_fn, probe):
        made.append(probe.shape[0])
        rhs = real(sde_, score_fn, probe)

        def call(t, state):
            calls.append((t, tuple(state.shape)))
            return rhs(t, state)

        return call

    monkeypatch.setattr(likelihood, "ode_with_divergence", counted)
    rows = harness.likelihood_speed(model, sde, config, "cpu", batches=(1, 3), evals=2, rounds=2)
    assert [(r["batch"], r["path"]) for r in rows] == [
        (b, p) for b in (1, 3) for p in ("official loop", "fastsde fp32")
    ]
    n = config.data.num_channels * config.data.image_size**2
    # Per batch and path: one untimed run and two timed ones, each of 2 evaluations at t = 0.5.
    assert made == [b for b in (1, 3) for _ in range(3 * 2)]
    assert calls == [(0.5, (b, n + 1)) for b in (1, 3) for _ in range(3 * 2 * 2)]
    for r in rows:
        assert r["evals"] == 2 and r["ms_per_eval"] > 0 and r["peak_memory_MiB"] is None
        assert r["vs_official_loop"] == 1.0 if r["path"] == "official loop" else r["vs_official_loop"] > 0
    assert "ms/eval" in harness.likelihood_table(rows)


def test_likelihood_accuracy_measures_every_path_on_the_same_images_and_probes(tiny):
    model, sde, config = tiny
    torch.manual_seed(1)
    model = perturb(copy.deepcopy(model))  # a zero last layer would give every path the same bits/dim
    rows = harness.likelihood_accuracy(model, sde, config, "cpu", batch=2, tol=1e-2)  # loose: seconds
    assert [r["variant"] for r in rows] == ["fp32 channels_last", "bf16", "fp16"]
    assert len({r["bpd_fp32"] for r in rows}) == 1 and len({r["nfe_fp32"] for r in rows}) == 1
    for r in rows:
        assert math.isfinite(r["bpd"]) and r["nfe"] > 0
        assert r["max_abs_diff_bpd"] >= r["mean_abs_diff_bpd"] >= abs(r["bpd"] - r["bpd_fp32"]) - 1e-9
    assert rows == harness.likelihood_accuracy(model, sde, config, "cpu", batch=2, tol=1e-2)  # seeded throughout
    assert "likelihood (vs fp32 eager)" in harness.likelihood_accuracy_table(rows)


def test_throughput_and_accuracy_rows(tiny):
    model, sde, config = tiny
    rows = harness.throughput(model, sde, config, "cpu", (1, 2), ("pc", "dpmpp_2m"), 21, 3, 1, None, ("fp32", "bf16"))
    assert {(r["sampler"], r["batch"], r["path"]) for r in rows} == {
        (s, b, p) for s in ("pc", "dpmpp_2m") for b in (1, 2) for p in ("official loop", "fastsde fp32", "fastsde bf16")
    }
    for r in rows:
        # nfe as the samplers count it: PC's N = 25, the solver's 3 steps and its noise removal.
        assert r["images_per_s"] > 0 and r["nfe"] == (25 if r["sampler"] == "pc" else 4)
        assert 0 < r["of_floor"] < 1 and r["matrix_gflop_per_call"] > 0
        assert r["vs_official_loop"] == 1.0 if r["path"] == "official loop" else r["vs_official_loop"] > 0
    assert "official loop" in harness.table(rows)
    accuracy = harness.accuracy(model, sde, config, "cpu", batch=2, solver_steps=3, pc_steps=25)
    assert {(a["sampler"], a["variant"]) for a in accuracy} == {
        (s, v) for s in ("pc", "dpmpp_2m", "RK45") for v in ("fp32 channels_last", "bf16", "fp16")
    }
    for a in accuracy:
        assert (
            a["max_abs_diff_8bit"] >= a["mean_abs_diff_8bit"] >= abs(a["mean_shift_8bit"]) - 1e-3 and a["std_ratio"] > 0
        )
        assert a["nfe"] > 0 and (a["sampler"] == "RK45" or a["nfe"] == a["nfe_fp32"])


def test_a_table_is_updated_in_place(tmp_path):
    first = [dict(case=table.case(model="m", batch=1), path="a", ms=2.0, label="text", peak=None)]
    first.append(dict(case=table.case(model="m", batch=2), path="a", ms=3.0))
    path = table.record("demo", "cpu", first, tmp_path)
    assert os.path.basename(path) == f"demo-cpu-{os.cpu_count()}core.csv"
    rows = table.read(path)
    assert [(r["case"], r["metric"], r["value"]) for r in rows] == [
        ("model=m batch=1", "ms", 2.0),  # text and None are no metrics
        ("model=m batch=2", "ms", 3.0),
    ]
    assert rows[0]["torch"] == torch.__version__ and rows[0]["machine"].endswith("threads)")
    table.record(
        "demo", "cpu", [dict(case="model=m batch=1", path="a", ms=1.5), dict(case="x=1", path="b", n=4)], tmp_path
    )
    rows = table.read(path)
    assert [(r["case"], r["path"], r["value"]) for r in rows] == [
        ("model=m batch=1", "a", 1.5),  # replaced where it stood
        ("model=m batch=2", "a", 3.0),
        ("x=1", "b", 4.0),
    ]
    other = [dict(r, machine="elsewhere", date="2020-01-01T00:00:00+00:00", value=9.0) for r in rows]
    assert table.newest(other + rows) == rows and table.newest([]) == []
    assert table.records(rows)[0] == dict(model="m", batch=1, case="model=m batch=1", path="a", ms=1.5)
    assert table.fields("model=ve/cifar10 batch=8") == {"model": "ve/cifar10", "batch": "8"}
    with pytest.raises(ValueError, match="case field model='a b'"):
        table.case(model="a b")
    rows = table.rows_of(
        [dict(model="m", sampler="pc", variant="bf16", nfe=5)], "accuracy", ("model", "sampler"), "variant"
    )
    assert rows == [dict(nfe=5, case="measure=accuracy model=m sampler=pc", path="bf16")]


def test_pytest_benchmark_results_become_op_rows(tmp_path):
    def bench(candidate, median):
        info = dict(case="op=x", candidate=candidate, baseline="eager", copy="copy", bytes=8e6, inner=2)
        return {"extra_info": info, "stats": {"median": median}}

    report = {"benchmarks": [bench("eager", 0.008), bench("cpp", 0.002), bench("copy", 0.001)]}
    rows = {r["path"]: r for r in table.from_pytest_benchmark(json.loads(json.dumps(report)))}
    assert rows["cpp"]["median_ms"] == pytest.approx(1.0)  # a round is `inner` calls
    assert rows["cpp"]["vs_baseline"] == pytest.approx(4.0) and rows["cpp"]["of_copy"] == pytest.approx(0.5)
    assert rows["cpp"]["GB_per_s"] == pytest.approx(8.0)
