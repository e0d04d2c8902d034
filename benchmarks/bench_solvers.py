"""Accuracy per network evaluation (NFE): fastsde's solvers against k-diffusion's, same model, same noise.

    python benchmarks/bench_solvers.py [--record]         # the embedded digits model, on this machine
    python benchmarks/bench_solvers.py --smoke            # CI: the code paths at the smallest sizes

ODE: from one batch of prior noise, each deterministic solver's samples against RK45 at rtol = atol =
1e-7, as RMSE and largest error in 8-bit pixel levels, at about 10, 15, 20, 35 and 50 NFE. Every run
ends alike: the solution at eps, then the denoised estimate there (k-diffusion's last step to sigma
0, one evaluation), counted in the NFE. SDE: the Frechet distance, on pixels, of each stochastic
solver's samples to a large sample of the model's own PC sampler at its full N steps; a second PC
sample of the same size gives the distance that sampling noise alone makes (the floor).
--mixture instead compares the SDE solvers where the answer is known: a 64-D Gaussian mixture with
its exact score, each sampler's Frechet distance to exact samples (two exact samples give the floor).

k-diffusion is compared through its sampling module alone; install it without its training and
evaluation dependencies: pip install --no-deps k-diffusion torchsde torchdiffeq trampoline tqdm
"""

import argparse
import importlib.util
import os
import sys
import time
import types
import warnings

import torch

from fastsde import checkpoint, engine, metrics, sampling, solvers
from fastsde.generate import default_eps

import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "fastsde", "assets", "digits.safetensors")
BUDGETS = (10, 15, 20, 35, 50)


def k_sampling():
    """k-diffusion's sampling module, without the package's __init__ (which imports its training code)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise SystemExit(
            "k-diffusion is not installed: pip install --no-deps k-diffusion torchsde torchdiffeq trampoline tqdm"
        )
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")  # the one helper its sampling module takes from utils
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules.update({"k_diffusion": package, "k_diffusion.utils": utils})
    path = os.path.join(package.__path__[0], "sampling.py")
    module_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class Counted:
    """A score function that counts its calls per sample (a batch call counts once)."""

    def __init__(self, score_fn):
        self.score_fn, self.calls = score_fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.score_fn(x, t)


def denoiser(sde, score_fn):
    """k-diffusion's view of a score model: D(x / alpha, sigma), sigma = std / alpha (EDM's noise level)."""

    def D(x_hat, sigma, **_):
        t = sde.noise_level_time(sigma.double()).float().expand(len(x_hat))
        return solvers._denoised(sde, score_fn, sde.marginal_coef(t)[0][:, None, None, None] * x_hat, t)

    return D


def tweedie(sde, score_fn, x, eps):
    return solvers._denoised(sde, score_fn, x, torch.full((len(x),), eps))


def reference(sde, score_fn, z, eps):
    """(RK45 at rtol = atol = 1e-7 from z to eps, then denoised; its NFE)."""
    x, nfe = sampling.ode_sample(score_fn, sde, z.shape, "RK45", rtol=1e-7, atol=1e-7, eps=eps, z=z, denoise=False)
    return tweedie(sde, score_fn, x, eps), nfe + 1


def ode_rows(sde, score_fn, z, eps, levels, ref, quick):
    """Every deterministic fastsde solver and schedule at each budget."""
    rows = []

    def record(library, solver, schedule, budget, x, nfe, seconds):
        err = (x - ref) * levels
        rows.append(
            dict(
                library=library,
                solver=solver,
                schedule=schedule,
                budget=budget,
                nfe=nfe,
                rmse_levels=float(err.pow(2).mean().sqrt()),
                max_levels=float(err.abs().max()),
                seconds=seconds,
            )
        )

    for budget in BUDGETS[:1] if quick else BUDGETS:
        for name in ("heun", "dpmpp_2m", "dpmpp_3m", "unipc"):
            steps = budget // 2 if name == "heun" else budget - 1  # + the final denoising evaluation
            for schedule in solvers.SCHEDULES:
                counted, start = Counted(score_fn), time.perf_counter()
                x, _ = solvers.sample(counted, sde, z.shape, name, steps, schedule, eps, denoise=False, z=z)
                x = tweedie(sde, counted, x, eps)
                record("fastsde", name, schedule, budget, x, counted.calls, time.perf_counter() - start)
    for rtol in (0.05,) if quick else (0.05, 0.02, 0.01, 0.005):
        counted, start = Counted(score_fn), time.perf_counter()
        x, nfe = solvers.sample(counted, sde, z.shape, "dpm_adaptive", eps=eps, denoise=False, z=z, rtol=rtol)
        x = tweedie(sde, counted, x, eps)
        record(
            "fastsde",
            f"dpm_adaptive rtol={rtol}",
            "-",
            None,
            x,
            float(nfe.double().mean()) + 1,
            time.perf_counter() - start,
        )
    return rows


def k_ode_rows(k, sde, score_fn, z, eps, levels, ref, quick):
    """k-diffusion's deterministic samplers on its schedules, from the same noise, ending at sigma 0."""
    s_max, s_min = (float(v) for v in sde.noise_level(torch.tensor([sde.T, eps], dtype=torch.float64)))
    schedules = {
        "karras": lambda n: k.get_sigmas_karras(n, s_min, s_max),
        "exponential": lambda n: k.get_sigmas_exponential(n, s_min, s_max),
    }
    # NFE of n sigmas before the final 0: Heun and DPM-2 take 2 a step but 1 for the step to 0.
    samplers = {
        "euler": (k.sample_euler, 1),
        "heun": (k.sample_heun, 2),
        "dpm_2": (k.sample_dpm_2, 2),
        "lms": (k.sample_lms, 1),
        "dpmpp_2m": (k.sample_dpmpp_2m, 1),
        "dpmpp_3m_sde eta=0": (lambda *a, **kw: k.sample_dpmpp_3m_sde(*a, eta=0.0, **kw), 1),
    }
    rows = []
    for budget in BUDGETS[:1] if quick else BUDGETS:
        for name, (fn, per_step) in samplers.items():
            n = (budget - 1) // per_step + 1  # sigmas before the 0: n - 1 steps of per_step, then 1 evaluation
            for schedule, make in schedules.items():
                counted, start = Counted(score_fn), time.perf_counter()
                sigmas = make(n).float()
                alpha_T = sde.marginal_coef(torch.tensor([sde.T]))[0]
                x = fn(denoiser(sde, counted), z / alpha_T, sigmas, disable=True)
                err = (x - ref) * levels
                rows.append(
                    dict(
                        library="k-diffusion",
                        solver=name,
                        schedule=schedule,
                        budget=budget,
                        nfe=counted.calls,
                        rmse_levels=float(err.pow(2).mean().sqrt()),
                        max_levels=float(err.abs().max()),
                        seconds=time.perf_counter() - start,
                    )
                )
    return rows


def pixels(x, centered):
    return (((x + 1) / 2 if centered else x).clamp(0, 1) * 255).flatten(1).double().numpy()


def fd(a, b):
    return float(metrics.fid(*metrics.moments(a), *metrics.moments(b)))


def sde_rows(k, sde, score_fn, config, n, eps, quick):
    """Frechet distances on pixels to a PC reference sample, against NFE."""
    shape = (n, config.data.num_channels, config.data.image_size, config.data.image_size)
    s = config.sampling
    sde = checkpoint.sde_from_config(config, 50) if quick else sde  # a short PC sampler for the smoke run

    def pc(seed):
        return sampling.pc_sample(
            score_fn,
            sde,
            shape,
            s.predictor,
            s.corrector,
            snr=s.snr,
            eps=eps,
            generator=torch.Generator().manual_seed(seed),
        )

    ref = pixels(pc(100)[0], config.data.centered)
    x, pc_nfe = pc(1)
    rows = [
        dict(
            library="fastsde",
            solver=f"pc N={sde.N}",
            budget=pc_nfe,
            nfe=pc_nfe,
            fd=fd(pixels(x, config.data.centered), ref),
        )
    ]
    z = sde.prior_sampling(shape, torch.Generator().manual_seed(1))
    for budget in (20,) if quick else (20, 50, 100, 200):
        for name in ("edm", "dpmpp_2m_sde", "dpmpp_3m_sde"):
            steps = budget // 2 if name == "edm" else budget - 1
            x, nfe = solvers.sample(
                score_fn, sde, shape, name, steps, "edm", eps, z=z, generator=torch.Generator().manual_seed(2)
            )
            rows.append(
                dict(
                    library="fastsde", solver=name, budget=budget, nfe=nfe, fd=fd(pixels(x, config.data.centered), ref)
                )
            )
        s_max, s_min = (float(v) for v in sde.noise_level(torch.tensor([sde.T, eps], dtype=torch.float64)))
        alpha_T = sde.marginal_coef(torch.tensor([sde.T]))[0]
        for name, fn, per_step in (
            ("euler_ancestral", k.sample_euler_ancestral, 1),
            ("dpmpp_2m_sde", k.sample_dpmpp_2m_sde, 1),
            ("dpmpp_3m_sde", k.sample_dpmpp_3m_sde, 1),
            ("dpmpp_sde", k.sample_dpmpp_sde, 2),
        ):
            counted = Counted(score_fn)
            torch.manual_seed(2)  # k-diffusion draws from torch's global generator
            sigmas = k.get_sigmas_karras((budget - 1) // per_step + 1, s_min, s_max).float()
            x = fn(denoiser(sde, counted), z / alpha_T, sigmas, disable=True)
            rows.append(
                dict(
                    library="k-diffusion",
                    solver=name,
                    budget=budget,
                    nfe=counted.calls,
                    fd=fd(pixels(x, config.data.centered), ref),
                )
            )
    for reltol in (0.05,) if quick else (0.1, 0.05, 0.02, 0.01):
        x, nfe = solvers.sample(
            score_fn,
            sde,
            shape,
            "gotta_go_fast",
            eps=eps,
            z=z,
            reltol=reltol,
            generator=[torch.Generator().manual_seed(i) for i in range(n)],
        )
        rows.append(
            dict(
                library="fastsde",
                solver=f"gotta_go_fast reltol={reltol}",
                budget=None,
                nfe=float(nfe.double().mean()),
                nfe_max=int(nfe.max()),
                fd=fd(pixels(x, config.data.centered), ref),
            )
        )
    return rows


def mixture_rows(n, quick):
    """The SDE samplers on a 64-D Gaussian mixture (tests/gmm.py) with its exact score: the Frechet
    distance of n samples to n exact ones, against NFE, on VP and VE."""
    from fastsde import VESDE, VPSDE

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from gmm import mixture

    gmm = mixture(64)
    exact = gmm.sample(n, torch.Generator().manual_seed(0)).double().numpy()
    rows = [
        dict(
            sde="-",
            solver="exact samples",
            nfe=0,
            fd=fd(gmm.sample(n, torch.Generator().manual_seed(9)).double().numpy(), exact),
        )
    ]
    for name, make, eps in (("VP", VPSDE, 1e-3), ("VE", VESDE, 1e-5)):
        sde = make(N=1000)
        score_fn, shape = gmm.score_fn(sde), (n, 64)
        for N in (100,) if quick else (1000, 250, 100):
            x, nfe = sampling.pc_sample(
                gmm.score_fn(make(N=N)),
                make(N=N),
                shape,
                "euler_maruyama",
                "none",
                eps=eps,
                generator=torch.Generator().manual_seed(1),
            )
            rows.append(dict(sde=name, solver=f"pc euler_maruyama N={N}", nfe=nfe, fd=fd(x.double().numpy(), exact)))
        for budget in (20,) if quick else (20, 50, 100):
            for solver in ("edm", "dpmpp_2m_sde", "dpmpp_3m_sde"):
                steps = budget // 2 if solver == "edm" else budget - 1
                x, nfe = solvers.sample(
                    score_fn, sde, shape, solver, steps, eps=eps, generator=torch.Generator().manual_seed(1)
                )
                rows.append(dict(sde=name, solver=solver, nfe=nfe, fd=fd(x.double().numpy(), exact)))
        for reltol in (0.1,) if quick else (0.1, 0.05, 0.02):
            x, nfe = solvers.sample(
                score_fn,
                sde,
                shape,
                "gotta_go_fast",
                eps=eps,
                reltol=reltol,
                generator=torch.Generator().manual_seed(1),
            )
            rows.append(
                dict(
                    sde=name,
                    solver=f"gotta_go_fast reltol={reltol}",
                    nfe=float(nfe.double().mean()),
                    nfe_max=int(nfe.max()),
                    fd=fd(x.double().numpy(), exact),
                )
            )
    return rows


def mixture_table(rows, n):
    lines = [
        f"SDE solvers on a 64-D Gaussian mixture, exact score: Frechet distance of {n} samples to {n} exact ones",
        f"{'SDE':4s} {'solver':30s} {'NFE':>7s} {'FD':>8s}",
    ]
    lines += [f"{r['sde']:4s} {r['solver']:30s} {r['nfe']:7.1f} {r['fd']:8.4f}" for r in rows]
    return "\n".join(lines)


def text(report):
    lines = [
        f"ODE: 8-bit levels against RK45 at 1e-7 ({report['ode_reference_nfe']} NFE), batch {report['ode_batch']}",
        f"{'library':12s} {'solver':26s} {'schedule':12s} {'NFE':>6s} {'RMSE':>8s} {'max':>8s}",
    ]
    for r in sorted(report["ode"], key=lambda r: (r["budget"] or 0, r["rmse_levels"])):
        lines.append(
            f"{r['library']:12s} {r['solver']:26s} {r['schedule']:12s} {r['nfe']:6.1f} "
            f"{r['rmse_levels']:8.3f} {r['max_levels']:8.2f}"
        )
    lines.append(f"\nSDE: Frechet distance on pixels to {report['sde_samples']} PC samples (lower is better)")
    lines.append(f"{'library':12s} {'solver':30s} {'NFE':>7s} {'FD':>9s}")
    for r in report["sde"]:
        most = f" (max {r['nfe_max']})" if "nfe_max" in r else ""
        lines.append(f"{r['library']:12s} {r['solver']:30s} {r['nfe']:7.1f} {r['fd']:9.2f}{most}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the smallest sizes, for CI (no claims)")
    p.add_argument("--ode-batch", type=int, default=64)
    p.add_argument("--sde-samples", type=int, default=1000)
    p.add_argument(
        "--record", action="store_true", help="write the results into benchmarks/results/solvers-<machine>.csv"
    )
    p.add_argument("--mixture", action="store_true", help="only the SDE solvers on an exact 64-D mixture")
    p.add_argument("--mixture-samples", type=int, default=10000)
    args = p.parse_args()
    if args.mixture:
        n = 200 if args.smoke else args.mixture_samples
        rows = mixture_rows(n, args.smoke)
        if args.record:
            table.record(
                "solvers",
                "cpu",
                table.rows_of([dict(r, samples=n) for r in rows], "mixture", ("sde", "samples"), "solver"),
            )
        print(mixture_table(rows, n))
        return
    # torchsde's Brownian tree warns of float rounding at the ends of its interval, once a query.
    warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
    k = k_sampling()
    model, sde, config = checkpoint.load_checkpoint(DIGITS)
    score_fn = engine.fast_score_fn(model, sde, True, "cpu")
    eps = default_eps(sde)
    levels = 255 / 2 if config.data.centered else 255.0
    batch, n = (4, 16) if args.smoke else (args.ode_batch, args.sde_samples)
    z = sde.prior_sampling(
        (batch, config.data.num_channels, config.data.image_size, config.data.image_size),
        torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        ref, ref_nfe = reference(sde, score_fn, z, eps)
        ode = ode_rows(sde, score_fn, z, eps, levels, ref, args.smoke)
        ode += k_ode_rows(k, sde, score_fn, z, eps, levels, ref, args.smoke)
        sde_part = sde_rows(k, sde, score_fn, config, n, eps, args.smoke)
    report = {"ode_batch": batch, "ode_reference_nfe": ref_nfe, "ode": ode, "sde_samples": n, "sde": sde_part}
    if args.record:
        named = lambda rows, **more: [  # noqa: E731
            dict(r, model="digits", path=" ".join(filter(None, (r["library"], r["solver"], r.get("schedule")))), **more)
            for r in rows
        ]
        rows = table.rows_of(named(ode, batch=batch), "ode", ("model", "batch", "budget"))
        rows += table.rows_of(
            named([dict(library="fastsde", solver="RK45 rtol=atol=1e-7", nfe=ref_nfe)], batch=batch, budget=None),
            "ode",
            ("model", "batch", "budget"),
        )
        rows += table.rows_of(named(sde_part, samples=n), "sde", ("model", "samples", "budget"))
        table.record("solvers", "cpu", rows)
    print(text(report))


if __name__ == "__main__":
    main()
