// Radial weights from a table of cubics (mace_fast/ops/radial_spline.py), and their
// derivative with respect to the edge length.
//
// One warp per row; each lane reads an output's four coefficients at once (radial_table.cuh)
// and strides over the row's P outputs. Rows are visited in order of length (`order`), so the warps of a block, and
// blocks that run together, read the same interval's coefficients: from L1, not from the
// whole table in L2. Each output has one writer and the backward's sum over P is one
// warp's fixed-order reduction: bit-identical from run to run.
//
// A length that is NaN gives NaN (radial_table.cuh).
#include <cstdint>
#include <cuda_runtime.h>

#include "radial_spline.h"
#include "radial_table.cuh"

namespace {

constexpr int kWarps = 8;  // rows per block

template <typename T>
__global__ void __launch_bounds__(32 * kWarps)
    forward_kernel(const T* __restrict__ r, const int32_t* __restrict__ order, const T* __restrict__ table,
                   T* __restrict__ out, int64_t num_rows, int P, int intervals, T r_max, T scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= num_rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t m = order != nullptr ? order[i] : i;
  const T rm = r[m];
  T* o = out + m * P;
  if (rm >= r_max) {
    for (int p = lane; p < P; p += 32) o[p] = T(0);
    return;
  }
  T t;
  const Cubic<T>* q = spline_interval(table, rm * scale, intervals, P, &t);
  for (int p = lane; p < P; p += 32) o[p] = spline_value(q[p], t);
}

template <typename T>
__global__ void __launch_bounds__(32 * kWarps)
    backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ r, const int32_t* __restrict__ order,
                    const T* __restrict__ table, T* __restrict__ grad_r, int64_t num_rows, int P, int intervals,
                    T r_max, T scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= num_rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t m = order != nullptr ? order[i] : i;
  const T rm = r[m];
  if (rm >= r_max) {
    if (lane == 0) grad_r[m] = T(0);
    return;
  }
  T t;
  const Cubic<T>* q = spline_interval(table, rm * scale, intervals, P, &t);
  const T* g = grad_out + m * P;
  T sum = T(0);
  for (int p = lane; p < P; p += 32) sum += g[p] * spline_slope(q[p], t);
#pragma unroll
  for (int s = 16; s > 0; s /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, s);
  if (lane == 0) grad_r[m] = sum * scale;
}

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>((rows + kWarps - 1) / kWarps); }

}  // namespace

#define MACE_FAST_RADIAL_SPLINE(T, SUFFIX)                                                                            \
  extern "C" cudaError_t radial_spline_forward_##SUFFIX(const T* r, const int32_t* order, const T* table, T* out,     \
                                                        int64_t num_rows, int P, int intervals, T r_max, T scale,     \
                                                        cudaStream_t stream) {                                        \
    if (num_rows == 0) return cudaSuccess;                                                                            \
    forward_kernel<T><<<blocks_for(num_rows), 32 * kWarps, 0, stream>>>(r, order, table, out, num_rows, P, intervals, \
                                                                        r_max, scale);                                \
    return cudaGetLastError();                                                                                        \
  }                                                                                                                   \
  extern "C" cudaError_t radial_spline_backward_##SUFFIX(const T* grad_out, const T* r, const int32_t* order,         \
                                                         const T* table, T* grad_r, int64_t num_rows, int P,          \
                                                         int intervals, T r_max, T scale, cudaStream_t stream) {      \
    if (num_rows == 0) return cudaSuccess;                                                                            \
    backward_kernel<T><<<blocks_for(num_rows), 32 * kWarps, 0, stream>>>(grad_out, r, order, table, grad_r, num_rows, \
                                                                         P, intervals, r_max, scale);                 \
    return cudaGetLastError();                                                                                        \
  }

MACE_FAST_RADIAL_SPLINE(float, f32)
MACE_FAST_RADIAL_SPLINE(double, f64)
