// MACE's symmetric contraction (product basis) for one architecture, and its backward.
//
// A template: mace_fast/ops/codegen.py fills the marker lines with the non-zero entries of
// the folded coupling basis (mace_fast/nn/symmetric_contraction.py): for every distinct
// monomial x_a x_b x_c of a channel's D components, the outputs it feeds and with which
// coefficient times which weight. Each thread owns one (node, channel): its D inputs, the
// node's element's weights for that channel and its outputs stay in registers.
//
// Layouts: x [N, C, D] with strides `xs` (and grad_x the same): contiguous, or the
// component-major [D, N, C] of the CUDA path (mace_fast/nn/grouped_layout.py), whose loads
// are coalesced over channels; element [N]; weight [Z, K_total, C]; out [N, F_out] ("mul_ir").
// Plain CUDA (no torch headers); the binding is binding.cpp.
#include <cstdint>
#include <cuda_runtime.h>

#include "symmetric_contraction.h"

namespace {

template <typename scalar_t>
__global__ void sc_forward_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ element,
                                  const scalar_t* __restrict__ weight, scalar_t* __restrict__ out,
                                  int64_t num_nodes, int C, ScStrides xs) {
  constexpr int K = @@K@@, F_OUT = @@F_OUT@@;
  const int64_t n = blockIdx.x;
  const int c = threadIdx.x;
  if (n >= num_nodes || c >= C) return;
  const scalar_t* xn = x + n * xs.node + c * xs.channel;
  const scalar_t* wz = weight + element[n] * (int64_t)K * C + c;
@@LOAD_X@@
@@LOAD_W@@
@@ACC_DECL@@
@@FORWARD@@
  scalar_t* o = out + n * F_OUT;
@@STORE@@
}

template <typename scalar_t>
__global__ void sc_backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                   const int64_t* __restrict__ element, const scalar_t* __restrict__ weight,
                                   scalar_t* __restrict__ grad_x, int64_t num_nodes, int C, ScStrides xs) {
  constexpr int K = @@K@@, F_OUT = @@F_OUT@@;
  const int64_t n = blockIdx.x;
  const int c = threadIdx.x;
  if (n >= num_nodes || c >= C) return;
  const scalar_t* xn = x + n * xs.node + c * xs.channel;
  const scalar_t* wz = weight + element[n] * (int64_t)K * C + c;
  const scalar_t* go = grad_out + n * F_OUT;
@@LOAD_X@@
@@LOAD_W@@
@@LOAD_G@@
@@GX_DECL@@
@@BACKWARD@@
  scalar_t* gx = grad_x + n * xs.node + c * xs.channel;
@@STORE_GX@@
}

int threads_for(int C) { return ((C + 31) / 32) * 32; }

}  // namespace

extern "C" ScDims sc_dims() { return ScDims{@@D@@, @@K@@, @@F_OUT@@}; }

#define MACE_FAST_SC_INSTANTIATE(T, SUFFIX)                                                                   \
  extern "C" cudaError_t sc_forward_##SUFFIX(const T* x, const int64_t* element, const T* weight, T* out,    \
                                             int64_t n, int C, ScStrides xs, cudaStream_t s) {               \
    if (n == 0) return cudaSuccess;                                                                          \
    sc_forward_kernel<T><<<n, threads_for(C), 0, s>>>(x, element, weight, out, n, C, xs);                    \
    return cudaGetLastError();                                                                               \
  }                                                                                                          \
  extern "C" cudaError_t sc_backward_##SUFFIX(const T* g, const T* x, const int64_t* element, const T* weight, \
                                              T* grad_x, int64_t n, int C, ScStrides xs, cudaStream_t s) {   \
    if (n == 0) return cudaSuccess;                                                                          \
    sc_backward_kernel<T><<<n, threads_for(C), 0, s>>>(g, x, element, weight, grad_x, n, C, xs);             \
    return cudaGetLastError();                                                                               \
  }

MACE_FAST_SC_INSTANTIATE(float, f32)
MACE_FAST_SC_INSTANTIATE(double, f64)
