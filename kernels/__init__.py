"""fastsde's Triton kernels, one module per op (installed as fastsde.kernels).

Import only after deciding on TRITON_INTERPRET: @triton.jit reads it when these modules load. The
ops that wrap the kernels (checks, fake implementations, autograd) are in fastsde/ops/.
"""
