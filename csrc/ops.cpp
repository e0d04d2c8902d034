// The library fastsde (its op schemas are in schemas.h) and the Python module fastsde._C, which
// only loads it and says how the extension was built. Kernels register per device in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>

#include "schemas.h"

#ifndef FASTSDE_CUDA_ARCHS
#define FASTSDE_CUDA_ARCHS ""
#endif
#ifndef FASTSDE_TORCH_VERSION
#define FASTSDE_TORCH_VERSION ""
#endif

TORCH_LIBRARY(fastsde, m) { fastsde::define_ops(m); }

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
