// Atomic base of the first interaction: per receiver i, per sender element slot q,
//     base[s, i, q K + k] = sum_{e = (j -> i), slot[j] = q} radial[e, k] * sh[e, s],
// and its backward (gradients of radial and sh).
//
// In the first interaction every sender's features depend only on its element, so the
// message sum_j TP(h_z(j), Y_ij, W^T radial_ij) is linear in this base: the model contracts
// it with a small per-element table on cuBLAS (mace_fast/ops/atomic_base.py). Per edge that
// is K * S multiply-adds here instead of the radial MLP's last layer and the tensor product.
//
// This file is a template: the op fills K (radial width) and S (number of harmonics).
// One warp per receiver; lane l holds the radial channels k = l, l + 32, ... and all S
// harmonics. Edges are read in CSR order and every output belongs to one warp: no
// atomics, bit-identical from run to run.

#include <cstdint>
#include <cuda_runtime.h>

#include "atomic_base.h"

namespace {

constexpr int K = @@WIDTH@@;
constexpr int S = @@NUM_SH@@;
constexpr int KJ = (K + 31) / 32;  // radial channels per lane
constexpr int kWarps = 4;          // receivers per block

template <typename T>
__global__ void __launch_bounds__(32 * kWarps) forward_kernel(const T* __restrict__ radial, const T* __restrict__ sh,
                                                              const int64_t* __restrict__ sender,
                                                              const int64_t* __restrict__ edge_ptr,
                                                              const int32_t* __restrict__ slot, T* __restrict__ base,
                                                              int64_t num_nodes, int num_slots) {
  const int64_t node = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (node >= num_nodes) return;
  const int64_t begin = edge_ptr[node], end = edge_ptr[node + 1];
  const int64_t row = int64_t(num_slots) * K;  // base row length
  for (int q = 0; q < num_slots; ++q) {
    T acc[S][KJ];
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int j = 0; j < KJ; ++j) acc[s][j] = T(0);
    for (int64_t e = begin; e < end; ++e) {
      if (num_slots > 1 && slot[sender[e]] != q) continue;
      T r[KJ];
#pragma unroll
      for (int j = 0; j < KJ; ++j) {
        const int k = lane + 32 * j;
        r[j] = k < K ? radial[e * K + k] : T(0);
      }
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const T y = sh[e * S + s];
#pragma unroll
        for (int j = 0; j < KJ; ++j) acc[s][j] += y * r[j];
      }
    }
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int j = 0; j < KJ; ++j) {
        const int k = lane + 32 * j;
        if (k < K) base[(s * num_nodes + node) * row + q * K + k] = acc[s][j];
      }
  }
}

template <typename T>
__global__ void __launch_bounds__(32 * kWarps) backward_kernel(const T* __restrict__ grad_base,
                                                               const T* __restrict__ radial, const T* __restrict__ sh,
                                                               const int64_t* __restrict__ sender,
                                                               const int64_t* __restrict__ edge_ptr,
                                                               const int32_t* __restrict__ slot,
                                                               T* __restrict__ grad_radial, T* __restrict__ grad_sh,
                                                               int64_t num_nodes, int num_slots) {
  const int64_t node = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (node >= num_nodes) return;
  const int64_t begin = edge_ptr[node], end = edge_ptr[node + 1];
  const int64_t row = int64_t(num_slots) * K;
  for (int q = 0; q < num_slots; ++q) {
    T g[S][KJ];  // this slot's gradient block, held for all its edges
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int j = 0; j < KJ; ++j) {
        const int k = lane + 32 * j;
        g[s][j] = k < K ? grad_base[(s * num_nodes + node) * row + q * K + k] : T(0);
      }
    for (int64_t e = begin; e < end; ++e) {
      if (num_slots > 1 && slot[sender[e]] != q) continue;
      T r[KJ], gr[KJ];
#pragma unroll
      for (int j = 0; j < KJ; ++j) {
        const int k = lane + 32 * j;
        r[j] = k < K ? radial[e * K + k] : T(0);
        gr[j] = T(0);
      }
      T mine = T(0);  // lane s < S ends with grad_sh[e, s]
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const T y = sh[e * S + s];
        T part = T(0);
#pragma unroll
        for (int j = 0; j < KJ; ++j) {
          gr[j] += g[s][j] * y;
          part += g[s][j] * r[j];
        }
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) part += __shfl_xor_sync(0xffffffffu, part, offset);
        if (lane == s) mine = part;
      }
#pragma unroll
      for (int j = 0; j < KJ; ++j) {
        const int k = lane + 32 * j;
        if (k < K) grad_radial[e * K + k] = gr[j];
      }
      if (lane < S) grad_sh[e * S + lane] = mine;
    }
  }
}

unsigned blocks_for(int64_t num_nodes) { return unsigned((num_nodes + kWarps - 1) / kWarps); }

// [S, N, C] <-> [N, C, S] (the product's layout <-> the per-channel layout), one block per
// atom through a shared-memory tile, so that both sides are read and written in contiguous
// rows (a strided torch copy of the [N, C, S] side costs several times more).
constexpr int kTransposeThreads = 256;

template <typename T, bool TO_CHANNELS>
__global__ void __launch_bounds__(kTransposeThreads)
    transpose_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t num_nodes, int C) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tile = reinterpret_cast<T*>(smem);  // [S][C + 1]
  const int64_t n = blockIdx.x;
  const int ld = C + 1, size = S * C;
  if (TO_CHANNELS) {
    for (int i = threadIdx.x; i < size; i += blockDim.x) {  // rows s of src, C contiguous values each
      const int s = i / C, c = i % C;
      tile[s * ld + c] = src[(int64_t(s) * num_nodes + n) * C + c];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < size; i += blockDim.x) {  // dst row n: [C][S] contiguous
      const int c = i / S, s = i % S;
      dst[n * size + i] = tile[s * ld + c];
    }
  } else {
    for (int i = threadIdx.x; i < size; i += blockDim.x) {
      const int c = i / S, s = i % S;
      tile[s * ld + c] = src[n * size + i];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < size; i += blockDim.x) {
      const int s = i / C, c = i % C;
      dst[(int64_t(s) * num_nodes + n) * C + c] = tile[s * ld + c];
    }
  }
}

template <typename T, bool TO_CHANNELS>
cudaError_t transpose(const T* src, T* dst, int64_t num_nodes, int C, cudaStream_t stream) {
  if (num_nodes <= 0 || C <= 0) return cudaSuccess;
  const size_t smem = sizeof(T) * S * (C + 1);
  auto kernel = transpose_kernel<T, TO_CHANNELS>;
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<unsigned(num_nodes), kTransposeThreads, smem, stream>>>(src, dst, num_nodes, C);
  return cudaGetLastError();
}

}  // namespace

extern "C" int atomic_base_width() { return K; }
extern "C" int atomic_base_num_sh() { return S; }

#define MACE_FAST_ATOMIC_BASE(T, SUFFIX)                                                                        \
  extern "C" cudaError_t atomic_base_forward_##SUFFIX(const T* radial, const T* sh, const int64_t* sender,       \
                                                      const int64_t* edge_ptr, const int32_t* slot, T* base,      \
                                                      int64_t num_nodes, int num_slots, cudaStream_t stream) {    \
    if (num_nodes > 0)                                                                                          \
      forward_kernel<T><<<blocks_for(num_nodes), 32 * kWarps, 0, stream>>>(radial, sh, sender, edge_ptr, slot,  \
                                                                           base, num_nodes, num_slots);         \
    return cudaGetLastError();                                                                                  \
  }                                                                                                             \
  extern "C" cudaError_t atomic_base_backward_##SUFFIX(                                                         \
      const T* grad_base, const T* radial, const T* sh, const int64_t* sender, const int64_t* edge_ptr,         \
      const int32_t* slot, T* grad_radial, T* grad_sh, int64_t num_nodes, int num_slots, cudaStream_t stream) { \
    if (num_nodes > 0)                                                                                          \
      backward_kernel<T><<<blocks_for(num_nodes), 32 * kWarps, 0, stream>>>(                                    \
          grad_base, radial, sh, sender, edge_ptr, slot, grad_radial, grad_sh, num_nodes, num_slots);           \
    return cudaGetLastError();                                                                                  \
  }                                                                                                             \
  extern "C" cudaError_t atomic_base_to_channels_##SUFFIX(const T* src, T* dst, int64_t num_nodes, int C,       \
                                                          cudaStream_t stream) {                                \
    return transpose<T, true>(src, dst, num_nodes, C, stream);                                                  \
  }                                                                                                             \
  extern "C" cudaError_t atomic_base_from_channels_##SUFFIX(const T* src, T* dst, int64_t num_nodes, int C,     \
                                                            cudaStream_t stream) {                              \
    return transpose<T, false>(src, dst, num_nodes, C, stream);                                                 \
  }

MACE_FAST_ATOMIC_BASE(float, f32)
MACE_FAST_ATOMIC_BASE(double, f64)
