// Radial weights from a table of cubics (mace_fast/ops/radial_spline.py), and their
// derivative with respect to the edge length.
//
// One warp per row; the lanes stride over the row's P outputs in packs of 16 bytes where P
// allows. Rows are visited in order of length (`order`), so the warps of a block, and
// blocks that run together, read the same interval's coefficients: from L1, not from the
// whole table in L2. Each output has one writer and the backward's sum over P is one
// warp's fixed-order reduction: bit-identical from run to run.
//
// A length that is NaN gives NaN (so that an invalid step shows), never a wrong index:
// the interval is clamped as a float, where fmax/fmin drop the NaN, and t keeps it.
#include <cstdint>
#include <cuda_runtime.h>

#include "radial_spline.h"

namespace {

constexpr int kWarps = 8;  // rows per block

template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
  T v[W];
};

// The interval of x = r * scale and the position t in it.
template <typename T>
__device__ __forceinline__ const T* interval(const T* table, T x, int intervals, int P, T* t) {
  const T k = fmin(fmax(floor(x), T(0)), T(intervals - 1));
  *t = x - k;
  return table + static_cast<int64_t>(k) * 4 * P;
}

template <typename T, int W>
__global__ void __launch_bounds__(32 * kWarps)
    forward_kernel(const T* __restrict__ r, const int32_t* __restrict__ order, const T* __restrict__ table,
                   T* __restrict__ out, int64_t num_rows, int P, int intervals, T r_max, T scale) {
  using V = Pack<T, W>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= num_rows) return;
  const int lane = threadIdx.x % 32, packs = P / W;
  const int64_t m = order != nullptr ? order[i] : i;
  const T rm = r[m];
  V* o = reinterpret_cast<V*>(out + m * P);
  if (rm >= r_max) {
    const V zero{};
    for (int p = lane; p < packs; p += 32) o[p] = zero;
    return;
  }
  T t;
  const V* c = reinterpret_cast<const V*>(interval(table, rm * scale, intervals, P, &t));
  for (int p = lane; p < packs; p += 32) {
    const V a = c[p], b = c[packs + p], q = c[2 * packs + p], d = c[3 * packs + p];
    V y;
#pragma unroll
    for (int u = 0; u < W; ++u) y.v[u] = a.v[u] + t * (b.v[u] + t * (q.v[u] + t * d.v[u]));
    o[p] = y;
  }
}

template <typename T, int W>
__global__ void __launch_bounds__(32 * kWarps)
    backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ r, const int32_t* __restrict__ order,
                    const T* __restrict__ table, T* __restrict__ grad_r, int64_t num_rows, int P, int intervals,
                    T r_max, T scale) {
  using V = Pack<T, W>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= num_rows) return;
  const int lane = threadIdx.x % 32, packs = P / W;
  const int64_t m = order != nullptr ? order[i] : i;
  const T rm = r[m];
  if (rm >= r_max) {
    if (lane == 0) grad_r[m] = T(0);
    return;
  }
  T t;
  const V* c = reinterpret_cast<const V*>(interval(table, rm * scale, intervals, P, &t));
  const V* g = reinterpret_cast<const V*>(grad_out + m * P);
  T sum = T(0);
  for (int p = lane; p < packs; p += 32) {
    const V gp = g[p], b = c[packs + p], q = c[2 * packs + p], d = c[3 * packs + p];
#pragma unroll
    for (int u = 0; u < W; ++u) sum += gp.v[u] * (b.v[u] + t * (T(2) * q.v[u] + T(3) * t * d.v[u]));
  }
#pragma unroll
  for (int s = 16; s > 0; s /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, s);
  if (lane == 0) grad_r[m] = sum * scale;
}

// 16-byte packs where every row starts on a pack (P a multiple of the pack), else scalars.
template <typename T>
constexpr int pack_of() {
  return 16 / sizeof(T);
}

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>((rows + kWarps - 1) / kWarps); }

}  // namespace

#define MACE_FAST_RADIAL_SPLINE(T, SUFFIX)                                                                      \
  extern "C" cudaError_t radial_spline_forward_##SUFFIX(const T* r, const int32_t* order, const T* table,       \
                                                        T* out, int64_t num_rows, int P, int intervals,         \
                                                        T r_max, T scale, cudaStream_t stream) {                \
    if (num_rows == 0) return cudaSuccess;                                                                      \
    if (P % pack_of<T>() == 0)                                                                                  \
      forward_kernel<T, pack_of<T>()><<<blocks_for(num_rows), 32 * kWarps, 0, stream>>>(                        \
          r, order, table, out, num_rows, P, intervals, r_max, scale);                                          \
    else                                                                                                        \
      forward_kernel<T, 1><<<blocks_for(num_rows), 32 * kWarps, 0, stream>>>(r, order, table, out, num_rows, P, \
                                                                             intervals, r_max, scale);         \
    return cudaGetLastError();                                                                                  \
  }                                                                                                             \
  extern "C" cudaError_t radial_spline_backward_##SUFFIX(const T* grad_out, const T* r, const int32_t* order,   \
                                                         const T* table, T* grad_r, int64_t num_rows, int P,    \
                                                         int intervals, T r_max, T scale,                       \
                                                         cudaStream_t stream) {                                 \
    if (num_rows == 0) return cudaSuccess;                                                                      \
    if (P % pack_of<T>() == 0)                                                                                  \
      backward_kernel<T, pack_of<T>()><<<blocks_for(num_rows), 32 * kWarps, 0, stream>>>(                       \
          grad_out, r, order, table, grad_r, num_rows, P, intervals, r_max, scale);                             \
    else                                                                                                        \
      backward_kernel<T, 1><<<blocks_for(num_rows), 32 * kWarps, 0, stream>>>(grad_out, r, order, table,       \
                                                                              grad_r, num_rows, P, intervals,  \
                                                                              r_max, scale);                    \
    return cudaGetLastError();                                                                                  \
  }

MACE_FAST_RADIAL_SPLINE(float, f32)
MACE_FAST_RADIAL_SPLINE(double, f64)
