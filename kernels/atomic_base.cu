// Atomic base of the first interaction: per receiver i, per sender element slot q,
//     base[s, i, q K + k] = sum_{e = (j -> i), slot[j] = q} radial[e, k] * sh[e, s],
// and its backward (gradients of radial and sh).
//
// With shared radial rows (`rows` not null, mace_fast/ops/edge_pairs.py): radial is
// [M, K], one row per pair of edges, and edge e reads row |rows[e]|. The backward then
// writes grad_radial [2, M, K]: the owner edge of a row (rows[e] > 0) its half 0, the
// reverse edge (rows[e] < 0) its half 1; the op adds the halves. Each half-row has one
// writer, so there are still no atomics.
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
#include "pair_rows.cuh"

namespace {

constexpr int K = @@WIDTH@@;
constexpr int S = @@NUM_SH@@;
constexpr int KJ = (K + 31) / 32;  // radial channels per lane
constexpr int kWarps = 4;          // receivers per block

template <typename T>
__global__ void __launch_bounds__(32 * kWarps) forward_kernel(const T* __restrict__ radial, const T* __restrict__ sh,
                                                              const int64_t* __restrict__ sender,
                                                              const int64_t* __restrict__ edge_ptr,
                                                              const int32_t* __restrict__ slot,
                                                              const int64_t* __restrict__ rows, T* __restrict__ base,
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
      const int64_t re = edge_row(rows, e);
      T r[KJ];
#pragma unroll
      for (int j = 0; j < KJ; ++j) {
        const int k = lane + 32 * j;
        r[j] = k < K ? radial[re * K + k] : T(0);
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
                                                               const int64_t* __restrict__ rows,
                                                               T* __restrict__ grad_radial, T* __restrict__ grad_sh,
                                                               int64_t num_nodes, int num_slots, int64_t num_edges,
                                                               int64_t num_rows) {
  const int64_t node = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (rows != nullptr) {
    // Rows no edge writes (pair_rows.cuh's spare rows) get zeros. Warps take them in turn.
    const int64_t used = rows[num_edges], spare = num_rows - used;
    for (int64_t t = node; t < spare; t += int64_t(gridDim.x) * kWarps) {
      const int64_t r = spare_row(used, t);
      for (int k = lane; k < K; k += 32) {
        grad_radial[r * K + k] = T(0);
        grad_radial[(num_rows + r) * K + k] = T(0);
      }
    }
  }
  if (node >= num_nodes) return;
  const int64_t begin = edge_ptr[node], end = edge_ptr[node + 1];
  // Edges before the first receiver's range or after the last one's (none in a valid CSR)
  // get zero gradients here, so that the outputs need no zero fill.
  for (int side = 0; side < 2; ++side) {
    if (node != (side == 0 ? 0 : num_nodes - 1)) continue;
    const int64_t lo = side == 0 ? 0 : end, hi = side == 0 ? begin : num_edges;
    for (int64_t e = lo; e < hi; ++e) {
      if (rows == nullptr)
        for (int k = lane; k < K; k += 32) grad_radial[e * K + k] = T(0);
      if (lane < S) grad_sh[e * S + lane] = T(0);
    }
  }
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
      // Where this edge's radial row is, and where its gradient goes (-1: nowhere, the
      // shared zero row of edges beyond the cutoff).
      int64_t re = e, out = e;
      if (rows != nullptr) {
        const int64_t signed_row = rows[e];
        re = pair_row(signed_row);
        out = signed_row == 0 ? -1 : (signed_row < 0 ? num_rows : 0) + re;
      }
      T r[KJ], gr[KJ];
#pragma unroll
      for (int j = 0; j < KJ; ++j) {
        const int k = lane + 32 * j;
        r[j] = k < K ? radial[re * K + k] : T(0);
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
        if (k < K && out >= 0) grad_radial[out * K + k] = gr[j];
      }
      if (lane < S) grad_sh[e * S + lane] = mine;
    }
  }
}

unsigned blocks_for(int64_t num_nodes) { return unsigned((num_nodes + kWarps - 1) / kWarps); }

}  // namespace

extern "C" int atomic_base_width() { return K; }
extern "C" int atomic_base_num_sh() { return S; }

#define MACE_FAST_ATOMIC_BASE(T, SUFFIX)                                                                        \
  extern "C" cudaError_t atomic_base_forward_##SUFFIX(const T* radial, const T* sh, const int64_t* sender,       \
                                                      const int64_t* edge_ptr, const int32_t* slot,               \
                                                      const int64_t* rows, T* base, int64_t num_nodes,            \
                                                      int num_slots, cudaStream_t stream) {                       \
    if (num_nodes > 0)                                                                                          \
      forward_kernel<T><<<blocks_for(num_nodes), 32 * kWarps, 0, stream>>>(radial, sh, sender, edge_ptr, slot,  \
                                                                           rows, base, num_nodes, num_slots);   \
    return cudaGetLastError();                                                                                  \
  }                                                                                                             \
  extern "C" cudaError_t atomic_base_backward_##SUFFIX(                                                         \
      const T* grad_base, const T* radial, const T* sh, const int64_t* sender, const int64_t* edge_ptr,         \
      const int32_t* slot, const int64_t* rows, T* grad_radial, T* grad_sh, int64_t num_nodes, int num_slots,   \
      int64_t num_edges, int64_t num_rows, cudaStream_t stream) {                                               \
    /* with rows and no receivers, one block still zeroes the rows */                                          \
    const int64_t blocks = num_nodes > 0 ? blocks_for(num_nodes) : (rows != nullptr ? 1 : 0);                   \
    if (blocks > 0)                                                                                             \
      backward_kernel<T><<<unsigned(blocks), 32 * kWarps, 0, stream>>>(grad_base, radial, sh, sender, edge_ptr,  \
                                                                     slot, rows, grad_radial, grad_sh,          \
                                                                     num_nodes, num_slots, num_edges, num_rows); \
    return cudaGetLastError();                                                                                  \
  }

MACE_FAST_ATOMIC_BASE(float, f32)
MACE_FAST_ATOMIC_BASE(double, f64)
