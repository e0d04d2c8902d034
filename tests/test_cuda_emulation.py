"""The host emulation of the CUDA execution model (csrc/cuda/emulation.h), which runs the CUDA kernels
on the CPU in the tests where there is no GPU: it runs block reductions right at any block size, and
rejects or shows what would be a bug on a GPU."""

import pytest
import torch


@pytest.fixture(scope="module")
def checks(emulated_cuda_ops):
    return torch.ops.fastsde_emulation_checks


@pytest.mark.parametrize("threads", [32, 96, 256, 1024])
def test_block_sum(checks, threads):
    x = torch.randn(5, 3000, generator=torch.Generator().manual_seed(threads))
    torch.testing.assert_close(checks.block_sums(x, threads), x.sum(1))


def test_missing_barrier_shows(checks):
    # Threads run one at a time between barriers, so shared memory read before the barrier that
    # orders it holds what an earlier block left there.
    x = torch.arange(64, dtype=torch.float32)
    torch.testing.assert_close(checks.rotate(x, True), x.roll(-1))
    assert not torch.equal(checks.rotate(x + 100, False), (x + 100).roll(-1))


@pytest.mark.parametrize(
    "what,message",
    [
        ("divergent_shuffle", "deadlocks"),
        ("partial_warp_shuffle", "mask 4294967295 but its live lanes are 65535"),
        ("block_too_large", r"invalid block size \(2048, 1, 1\)"),
        ("empty_grid", r"invalid grid size \(0, 1, 1\)"),
        ("misaligned_vector", "16-byte vector access at 0x[0-9a-f]+, which is not aligned to 16 bytes"),
        (
            "shared_memory_too_large",
            r"49156 bytes of dynamic shared memory, more than a block gets without cudaFuncSetAttribute \(49152\)",
        ),
    ],
)
def test_misuse_is_an_error(checks, what, message):
    with pytest.raises(RuntimeError, match=message):
        checks.misuse(what)
    # and the emulation still works afterwards
    x = torch.randn(2, 100)
    torch.testing.assert_close(checks.block_sums(x, 64), x.sum(1))


def test_vector_access(checks):
    x = torch.randn(64)
    torch.testing.assert_close(checks.vector_copy(x), x)


def test_unwritten_shared_memory_shows(checks):
    # Dynamic shared memory starts each block as NaN, so an element the block never wrote shows.
    out = checks.read_shared_memory(64, 40)
    torch.testing.assert_close(out[:40], torch.arange(40, dtype=torch.float32))
    assert out[40:].isnan().all()
