"""Options of the op micro-benchmarks (bench_ops.py), run with pytest and pytest-benchmark."""


def pytest_addoption(parser):
    group = parser.getgroup("fastsde op benchmarks")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda"))
    group.addoption("--size", choices=("small", "large"), help="default: large on cuda, small on cpu")
    group.addoption("--compile", action="store_true", help="torch.compile of the references on the CPU too")
    group.addoption("--rounds", type=int, default=20, help="timed rounds a candidate (median)")
    group.addoption("--inner", type=int, default=3, help="calls a round")
