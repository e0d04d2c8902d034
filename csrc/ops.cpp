// The op schemas of fastsde and the Python module fastsde._C, which only loads them and says
// how the extension was built. Kernels register per device in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>

#ifndef FASTSDE_CUDA_ARCHS
#define FASTSDE_CUDA_ARCHS ""
#endif
#ifndef FASTSDE_TORCH_VERSION
#define FASTSDE_TORCH_VERSION ""
#endif

TORCH_LIBRARY(fastsde, m) {
  // Fake kernels and autograd are registered by the op modules of fastsde/ops, which load this.
  // kernel: [kh, kw], or [k] for the separable filter outer(k, k); pad = (x0, x1, y0, y1).
  // See fastsde/ops/upfirdn2d.py for the semantics.
  m.def("upfirdn2d(Tensor x, Tensor kernel, int up, int down, int[4] pad) -> Tensor");
  // Returns y and the per-(sample, group) mean and 1/std (float32, float64 for float64 x).
  m.def("group_norm(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, bool silu)"
        " -> (Tensor, Tensor, Tensor)");
  // Returns grad_x, grad_weight, grad_bias (the last two always computed, shape [C]).
  m.def("group_norm_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor? weight,"
        " Tensor? bias, bool silu) -> (Tensor, Tensor, Tensor)");
  // x_mean = a x + b score;  x_new = x_mean + c noise  (a, b, c per sample). Returns (x_new, x_mean).
  // The noise is the tensor `noise`, or drawn in the kernel from noise_key, int64 [B, 2] of
  // (seed, offset) per sample (see csrc/philox.h), or absent (no noise term) when both are None.
  m.def("predictor_step(Tensor x, Tensor score, Tensor? noise, Tensor a, Tensor b, Tensor c,"
        " Tensor? noise_key=None) -> (Tensor, Tensor)");
  // Langevin corrector step with eps = 2 alpha (snr |noise| / |score|)^2, the norms per sample or
  // averaged over the batch; the noise from `noise` or `noise_key` (one of them). Returns (x_new, x_mean).
  m.def("langevin_step(Tensor x, Tensor score, Tensor? noise, Tensor alpha, float snr,"
        " bool per_sample, Tensor? noise_key=None) -> (Tensor, Tensor)");
}

static PyObject* build_info(PyObject*, PyObject*) {
#ifdef FASTSDE_WITH_CUDA
  PyObject* cuda = Py_True;
#else
  PyObject* cuda = Py_False;
#endif
  return Py_BuildValue("{s:O,s:s,s:s}", "cuda", cuda, "cuda_archs", FASTSDE_CUDA_ARCHS,
                       "torch_version", FASTSDE_TORCH_VERSION);
}

static PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS, "How this extension was built."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
