// Channel-wise tensor product of sender features with edge spherical harmonics, aggregated
// onto receivers by a segment reduction over receiver-sorted edges (CSR), and its backward.
//
// This file is a template: mace_fast/ops/codegen.py fills its marker lines with the
// fully unrolled, sparse Clebsch-Gordan products of one architecture's paths (so every
// accumulator lives in a register) and compiles it once per architecture.
//
// Layouts (all row-major, "mul_ir" feature blocks, see mace_fast/irreps.py):
//   h    [N, F_in]      sender features, block b = [C, 2 l_b + 1]
//   sh   [E, S]         spherical harmonics of the edge vector
//   w    [E, P * C]     per-edge, per-path, per-channel weights (radial MLP output); or,
//                       with `rows`, [M, P * C] shared by an edge and its reverse; or,
//                       with a table (`Radial::coef`), the length of each row [M], whose
//                       weights the kernels evaluate from the table's cubics (RowWeights)
//   rows [E+1] or null  the weight row of each edge, signed: +r for the edge of a pair that
//                       owns row r (writes its gradient), -r for its reverse, 0 for edges
//                       at or beyond the cutoff (row 0 is all zeros); then the number of
//                       rows in use, 1..rows[E] (ops/edge_pairs.py).
//   out  [N, F_mid]     aggregated messages, path p = [C, 2 l3_p + 1]; or, where generated
//                       so, in the grouped layout of mace_fast/nn/grouped_layout.py
//                       (the generated column expressions say which)
// One thread block per node, one thread per channel; threads >= C only help reduce.
// Every sum runs in a fixed order: results are bit-identical from run to run.

// Plain CUDA: no torch headers here, so nvcc alone can compile it (the CPU CI does);
// the torch binding is kernels/binding.cpp.
#include <cstdint>
#include <cuda_runtime.h>

#include "channelwise_tp.h"
#include "pair_rows.cuh"
#include "radial_table.cuh"

namespace {

constexpr int kMaxWarps = 32;
// Edges whose harmonic gradients are summed over the block's warps at one barrier (the
// backward's receiver-major pass); a barrier per edge kept a block from overlapping one
// edge's loads with the previous edge's reduction.
// (H100, Si 16^3, float32: 9.81 ms at 4, 9.78 at 8; 16 overflows the static shared memory.)
constexpr int kEdgeBatch = 4;

// Where the radial weights come from: rows of w, or, with coef, the cubics of a table
// [intervals, P*C, 4] (mace_fast/ops/radial_spline.py) at each row's length w[row].
template <typename T>
struct Radial {
  const T* w;
  const T* coef;  // null: w holds the weights
  int intervals;
  T r_max, scale;  // scale = intervals / r_max
};

// One channel's weights of one row, read from w [M, P*C]: value(i) is column c + i of the
// row; gradient(i, ...) writes that column of grad_w's row (not used by the forward).
template <typename T, bool TABLE>
struct RowWeights {
  const T* p;
  T* g;
  __device__ __forceinline__ RowWeights(const Radial<T>& rad, T* grad_w, int64_t row, int width, int c)
      : p(rad.w + row * width + c), g(grad_w == nullptr ? nullptr : grad_w + row * width + c) {}
  __device__ __forceinline__ T value(int i) const { return p[i]; }
  __device__ __forceinline__ T value(int i, T& slope) const {
    slope = T(0);
    return p[i];
  }
  __device__ __forceinline__ void gradient(int i, T, T grad) { g[i] = grad; }
  // Bring row `row` into L1 (prefetch_l1, below).
  static __device__ __forceinline__ const T* lines(const Radial<T>& rad, int64_t row, int width, int64_t* size) {
    *size = int64_t(width) * sizeof(T);
    return rad.w + row * width;
  }
};

// With a table: the weights are cubics of the row's length r, evaluated where they are used,
// so the [M, P*C] weights and their gradient never go through device memory. Each weight
// reads its four coefficients in one load (from L2: the table is a few tens of MB);
// gradient() sums dL/dw * dw/dt over the thread's weights, the row's dL/dr being that sum
// over the channels times scale. Zero at and beyond r_max; a NaN length gives NaN weights.
template <typename T>
struct RowWeights<T, true> {
  const Cubic<T>* p;
  T t, dr;
  bool live;
  __device__ __forceinline__ RowWeights(const Radial<T>& rad, T*, int64_t row, int width, int c) : dr(0) {
    const T r = rad.w[row];
    live = !(r >= rad.r_max);
    p = spline_interval(rad.coef, r * rad.scale, rad.intervals, width, &t) + c;
  }
  __device__ __forceinline__ T value(int i) const { return live ? spline_value(p[i], t) : T(0); }
  __device__ __forceinline__ T value(int i, T& slope) const {
    const Cubic<T> q = p[i];
    slope = live ? spline_slope(q, t) : T(0);
    return live ? spline_value(q, t) : T(0);
  }
  __device__ __forceinline__ void gradient(int, T slope, T grad) { dr += grad * slope; }
  static __device__ __forceinline__ const T* lines(const Radial<T>& rad, int64_t row, int width, int64_t* size) {
    T t;
    *size = 4 * int64_t(width) * sizeof(T);
    return reinterpret_cast<const T*>(spline_interval(rad.coef, rad.w[row] * rad.scale, rad.intervals, width, &t));
  }
};

__host__ __device__ constexpr int pow2_at_least(int s) { return s <= 1 ? 1 : 2 * pow2_at_least((s + 1) / 2); }

// Sum x[0..WIDTH) over the warp's lanes by halving: at each exchange a lane keeps the half of
// its values picked by lane bit OFF and adds its partner's copy of that half, so 16 values
// take 8 + 4 + 2 + 1 + 1 = 16 shuffles instead of 5 * 16. Afterwards lane holds in x[0] the
// total of value lane / (32 / WIDTH) (WIDTH, a power of two, <= 32).
template <int OFF, int WIDTH, typename scalar_t>
__device__ __forceinline__ void warp_sum_halving(scalar_t* x, int lane) {
  if constexpr (OFF > 0) {
    if constexpr (WIDTH > 1) {
      constexpr int H = WIDTH / 2;
      const bool upper = (lane & OFF) != 0;
#pragma unroll
      for (int i = 0; i < H; ++i) {
        const scalar_t give = upper ? x[i] : x[i + H];
        const scalar_t keep = upper ? x[i + H] : x[i];
        x[i] = keep + __shfl_xor_sync(0xffffffff, give, OFF);
      }
      warp_sum_halving<OFF / 2, H>(x, lane);
    } else {
      x[0] += __shfl_xor_sync(0xffffffff, x[0], OFF);
      warp_sum_halving<OFF / 2, 1>(x, lane);
    }
  }
}

template <typename scalar_t, bool TABLE>
__global__ void tp_forward_kernel(
    const scalar_t* __restrict__ h, const scalar_t* __restrict__ sh, const Radial<scalar_t> rad,
    const int64_t* __restrict__ sender, const int64_t* __restrict__ edge_ptr, const int64_t* __restrict__ rows,
    scalar_t* __restrict__ out, int64_t num_nodes, int C) {
  const int64_t n = blockIdx.x;
  const int c = threadIdx.x;
  if (n >= num_nodes || c >= C) return;
  constexpr int F_IN = @@F_IN@@, S = @@S@@, F_MID = @@F_MID@@, P = @@P@@;
@@ACC_DECL@@
  const int64_t begin = edge_ptr[n], end = edge_ptr[n + 1];
  // Unrolled so that the next edge's loads are issued before this edge's products: the
  // loop is bound by load latency (sender index, then its features), not by arithmetic.
#pragma unroll 4
  for (int64_t e = begin; e < end; ++e) {
    const scalar_t* hs = h + sender[e] * F_IN;
    const scalar_t* ye = sh + e * S;
    const RowWeights<scalar_t, TABLE> W(rad, nullptr, edge_row(rows, e), P * C, c);
@@LOAD_X@@
@@LOAD_Y@@
@@LOAD_W_ROW@@
@@FORWARD_ACC@@
  }
  scalar_t* o = out + n * F_MID;
@@STORE_ACC@@
}

// Threads per block of the edges kernel: the channel count of this architecture rounded up to
// a warp. In float32 the kernel asks the compiler to keep about 12 warps per multiprocessor
// (3 blocks of 128 threads: at most 168 registers): left free, it chose 128 registers for 4
// blocks and ran 11 % slower (H100, Si 16^3: 9.60 ms against 8.62 with 168; with the cap, 7.51).
constexpr int kEdgesThreads = ((@@CHANNELS@@ + 31) / 32) * 32;
template <typename scalar_t>
__host__ __device__ constexpr int edges_min_blocks() {
  return sizeof(scalar_t) == 4 && kEdgesThreads <= 384 ? 384 / kEdgesThreads : 1;
}

// Receiver-major backward: gradient of the per-edge weights and of the spherical harmonics.
// grad_w may be w itself (no __restrict__ on either): each thread loads its weights of an
// edge before it writes their gradient, and the sender-major kernel has run before.
//
// REVERSE: also the gradient of the receiver's own features, on a symmetric graph. Every
// edge j -> n has a reverse n -> j with the opposite vector, hence the same radial weights
// and harmonics Y(-r) = (-1)^l Y(r); so n's feature gradient, a sum over its outgoing
// edges, is also a sum over its incoming ones, each weight row read once for both
// gradients. `symmetric` (a device flag, see ops/channelwise_tp.py) says whether the graph
// is; if not, the nodes kernel computes the feature gradient and this kernel skips it.
// Without REVERSE, `symmetric` and `grad_h` are unused (may be null).
template <typename scalar_t, bool REVERSE>
__global__ void __launch_bounds__(kEdgesThreads, edges_min_blocks<scalar_t>()) tp_backward_edges_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ h, const scalar_t* __restrict__ sh,
    const scalar_t* w, const int64_t* __restrict__ sender, const int64_t* __restrict__ edge_ptr,
    const int* __restrict__ symmetric, scalar_t* grad_w, scalar_t* __restrict__ grad_sh,
    scalar_t* __restrict__ grad_h, int64_t num_nodes, int C) {
  constexpr int F_IN = @@F_IN@@, S = @@S@@, F_MID = @@F_MID@@, P = @@P@@;
  constexpr int SP = pow2_at_least(S);  // harmonics padded to a power of two for the halving sum
  static_assert(SP <= 32, "at most 32 harmonics");
  // Per warp, per edge of a batch: the warp's sum of the harmonic gradients; two batches.
  __shared__ scalar_t partial[2][kEdgeBatch][kMaxWarps][S];
  const int64_t n = blockIdx.x;
  if (n >= num_nodes) return;
  const bool nodes = REVERSE && *symmetric != 0;
  // Threads past the last channel mirror channel 0 (never written) so that every thread
  // takes part in the reductions below.
  const bool active = threadIdx.x < C;
  const int c = active ? threadIdx.x : 0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, num_warps = (blockDim.x + 31) / 32;
  const scalar_t* go = grad_out + n * F_MID;
@@LOAD_G@@
@@GX_DECL@@
  const int64_t begin = edge_ptr[n], end = edge_ptr[n + 1];
  for (int64_t e = begin; e < end; ++e) {
    const int batch_pos = int((e - begin) % kEdgeBatch);
    const int buf = int((e - begin) / kEdgeBatch) & 1;
    const int64_t j = sender[e];
    const scalar_t* hs = h + j * F_IN;
    const scalar_t* ye = sh + e * S;
    const scalar_t* we = w + e * (int64_t)(P * C) + c;
    scalar_t* gwe = grad_w + e * (int64_t)(P * C) + c;
@@LOAD_X@@
@@LOAD_Y@@
@@LOAD_W@@
    scalar_t gy[S] = {0};
@@BACKWARD_EDGE@@
    if (nodes) {  // the reverse edge n -> j: weights w, harmonics of -r, gradient row of j
      const scalar_t* gj = grad_out + j * F_MID;
@@LOAD_GJ@@
@@BACKWARD_NODE_REV@@
    }
    // Sum the spherical-harmonic gradient over channels: within the warp at once, over the
    // warps (in order) when a batch of edges is complete.
    scalar_t v[SP];
#pragma unroll
    for (int i = 0; i < SP; ++i) v[i] = active && i < S ? gy[i] : scalar_t(0);
    warp_sum_halving<16, SP>(v, lane);
    const int held = lane / (32 / SP);  // the harmonic whose warp sum this lane holds
    if (lane % (32 / SP) == 0 && held < S) partial[buf][batch_pos][warp][held] = v[0];
    if (batch_pos == kEdgeBatch - 1 || e + 1 == end) {  // the same for the whole block
      // Two buffers: the next batch writes the other one, and its barrier comes before
      // this one is written again.
      __syncthreads();
      const int64_t first = e - batch_pos;
      for (int i = threadIdx.x; i < (batch_pos + 1) * S; i += blockDim.x) {
        scalar_t total = 0;
        for (int k = 0; k < num_warps; ++k) total += partial[buf][i / S][k][i % S];
        grad_sh[(first + i / S) * S + i % S] = total;
      }
    }
  }
  if (nodes && active) {
    scalar_t* gh = grad_h + n * F_IN;
@@STORE_GX@@
  }
}

// Ask for the 128-byte lines of bytes [begin, begin + size) in L1, one line per thread in
// turn; the load that uses them later then waits for L1 instead of L2 or DRAM.
__device__ __forceinline__ void prefetch_l1(const void* begin, int64_t size) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(begin) & ~uintptr_t(127);
  const uintptr_t end = reinterpret_cast<uintptr_t>(begin) + size;
  for (uintptr_t line = first + 128 * uintptr_t(threadIdx.x); line < end; line += 128 * uintptr_t(blockDim.x))
    asm volatile("prefetch.global.L1 [%0];" ::"l"(line));
}

// Pair backward, for weight rows shared by an edge and its reverse (`rows`, a symmetric
// graph): one block per node n, one thread per channel, over the pairs n owns, its edges
// e = j -> n with rows[e] > 0 (the reverse n -> j is sender_perm[e]). Holding both ends'
// gradient rows (g_n in registers, g_j loaded) and features, the owner computes every
// gradient of the pair from one read of its weight row:
//   the row's weight gradient, from both messages;
//   the harmonic gradients of both edges (the reverse's harmonics are Y(-r) = (-1)^l Y(r));
//   n's feature gradient through n -> j, summed over n's pairs in registers, and j's
//   through j -> n, written to row r of pair_gh [M, F_IN]; tp_pair_gather_kernel then adds
//   those rows to j's gradient, in edge order.
// Edges that n does not own are skipped (their owner does their work), so each weight row
// and each pair's two gradient rows are read once, where a pass over every edge reads them
// twice. Edges beyond the cutoff (row 0: zero weights) only get a zero harmonic gradient.
//
// TABLE: the weights come from the table's cubics (RowWeights), and grad_w is the gradient
// of the rows' lengths [M], each row's sum over channels reduced with the harmonics'.
template <typename scalar_t, bool TABLE>
__global__ void __launch_bounds__(kEdgesThreads, edges_min_blocks<scalar_t>()) tp_backward_pairs_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ h, const scalar_t* __restrict__ sh,
    const Radial<scalar_t> rad, const int64_t* __restrict__ sender, const int64_t* __restrict__ sender_perm,
    const int64_t* __restrict__ edge_ptr, const int64_t* __restrict__ rows, scalar_t* __restrict__ grad_w,
    scalar_t* __restrict__ grad_sh, scalar_t* __restrict__ grad_h, scalar_t* __restrict__ pair_gh,
    int64_t num_nodes, int C) {
  constexpr int F_IN = @@F_IN@@, S = @@S@@, F_MID = @@F_MID@@, P = @@P@@;
  constexpr int S2 = pow2_at_least(2 * S);  // both edges' harmonics, padded for the halving sum
  static_assert(S2 <= 32, "at most 16 harmonics");
  constexpr int kWarps = kEdgesThreads / 32;
  // Per warp, per pair of a batch: the warp's sums of both harmonic gradients; two batches,
  // with the two edges each pair's sums belong to.
  __shared__ scalar_t partial[2][kEdgeBatch][kWarps][2 * S];
  __shared__ int64_t target[2][kEdgeBatch][2];
  __shared__ scalar_t partial_dr[2][kEdgeBatch][kWarps];  // TABLE: the warps' sums of dL/dr
  __shared__ int64_t target_row[2][kEdgeBatch];
  const int64_t n = blockIdx.x;
  if (n >= num_nodes) return;
  const bool active = threadIdx.x < C;  // others mirror channel 0, as in the edges kernel
  const int c = active ? threadIdx.x : 0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const scalar_t* go = grad_out + n * F_MID;
@@LOAD_G@@
@@GX_DECL@@
  const scalar_t* hn = h + n * F_IN;
@@LOAD_XN@@
  // Sum a batch's harmonic gradients over the warps (in order) and write them.
  auto flush = [&](int buf, int count) {
    __syncthreads();  // the same for the whole block: all threads see the same edges
    for (int i = threadIdx.x; i < count * 2 * S; i += blockDim.x) {
      const int pair = i / (2 * S), k = i % (2 * S);
      scalar_t total = 0;
      for (int q = 0; q < kWarps; ++q) total += partial[buf][pair][q][k];
      grad_sh[target[buf][pair][k / S] * S + k % S] = total;
    }
    if constexpr (TABLE) {
      for (int pair = threadIdx.x; pair < count; pair += blockDim.x) {
        scalar_t total = 0;
        for (int q = 0; q < kWarps; ++q) total += partial_dr[buf][pair][q];
        grad_w[target_row[buf][pair]] = total * rad.scale;
      }
    }
  };
  const int64_t begin = edge_ptr[n], end = edge_ptr[n + 1];
  int done = 0;  // pairs of this node so far
  for (int64_t e = begin; e < end; ++e) {
    const int64_t code = rows[e];
    if (code < 0) continue;  // another node owns this pair
    if (code == 0) {
      for (int i = threadIdx.x; i < S; i += blockDim.x) grad_sh[e * S + i] = scalar_t(0);
      continue;
    }
    const int pos = done % kEdgeBatch, buf = (done / kEdgeBatch) & 1;
    ++done;
    const int64_t j = sender[e];
    const scalar_t* hs = h + j * F_IN;
    const scalar_t* ye = sh + e * S;
    RowWeights<scalar_t, TABLE> W(rad, grad_w, code, P * C, c);
    const scalar_t* gj = grad_out + j * F_MID;
@@LOAD_X@@
@@LOAD_Y@@
@@LOAD_W_PAIR@@
@@LOAD_GJ@@
    // While this pair is computed, bring the next pair's rows into L1: the kernel spends a
    // third of its stalls waiting for loads, with only 12 warps per multiprocessor to hide them.
    int64_t next = e + 1;
    while (next < end && rows[next] <= 0) ++next;
    if (next < end) {
      const int64_t jn = sender[next];
      prefetch_l1(grad_out + jn * F_MID, F_MID * sizeof(scalar_t));
      int64_t size;
      const scalar_t* lines = RowWeights<scalar_t, TABLE>::lines(rad, rows[next], P * C, &size);
      prefetch_l1(lines, size);
      prefetch_l1(h + jn * F_IN, F_IN * sizeof(scalar_t));
      prefetch_l1(sh + next * S, S * sizeof(scalar_t));
    }
    scalar_t gy[2 * S] = {0};  // this edge's harmonic gradient, then its reverse's
@@GXJ_DECL@@
@@PAIR_BACKWARD@@
    if (active) {
      scalar_t* pg = pair_gh + code * F_IN;
@@STORE_GXJ@@
    }
    scalar_t v[S2];
#pragma unroll
    for (int i = 0; i < S2; ++i) v[i] = active && i < 2 * S ? gy[i] : scalar_t(0);
    warp_sum_halving<16, S2>(v, lane);
    const int held = lane / (32 / S2);
    if (lane % (32 / S2) == 0 && held < 2 * S) partial[buf][pos][warp][held] = v[0];
    if (threadIdx.x == 0) {
      target[buf][pos][0] = e;
      target[buf][pos][1] = sender_perm[e];
    }
    if constexpr (TABLE) {
      scalar_t dr = W.dr;  // 0 on threads past the last channel (gradient() is not called there)
#pragma unroll
      for (int off = 16; off > 0; off /= 2) dr += __shfl_xor_sync(0xffffffff, dr, off);
      if (lane == 0) partial_dr[buf][pos][warp] = dr;
      if (threadIdx.x == 0) target_row[buf][pos] = code;
    }
    if (pos == kEdgeBatch - 1) flush(buf, kEdgeBatch);
  }
  if (done % kEdgeBatch != 0) flush((done / kEdgeBatch) & 1, done % kEdgeBatch);
  if (active) {
    scalar_t* gh = grad_h + n * F_IN;
@@STORE_GX@@
  }
}

// Adds to each node's feature gradient the rows of pair_gh that the pair backward wrote for
// it: one per edge it does not own (rows[e] < 0), in edge order.
constexpr int kGatherThreads = 256;
template <typename scalar_t>
__global__ void __launch_bounds__(kGatherThreads) tp_pair_gather_kernel(
    const int64_t* __restrict__ rows, const int64_t* __restrict__ edge_ptr, const scalar_t* __restrict__ pair_gh,
    scalar_t* __restrict__ grad_h, int64_t num_nodes) {
  constexpr int F_IN = @@F_IN@@, COLS = (F_IN + kGatherThreads - 1) / kGatherThreads;
  const int64_t n = blockIdx.x;
  if (n >= num_nodes) return;
  scalar_t acc[COLS];
#pragma unroll
  for (int k = 0; k < COLS; ++k) {
    const int i = threadIdx.x + k * kGatherThreads;
    acc[k] = i < F_IN ? grad_h[n * F_IN + i] : scalar_t(0);
  }
#pragma unroll 4
  for (int64_t e = edge_ptr[n]; e < edge_ptr[n + 1]; ++e) {
    const int64_t code = rows[e];
    if (code >= 0) continue;
    const scalar_t* row = pair_gh + (-code) * F_IN;
#pragma unroll
    for (int k = 0; k < COLS; ++k) {
      const int i = threadIdx.x + k * kGatherThreads;
      if (i < F_IN) acc[k] += row[i];
    }
  }
#pragma unroll
  for (int k = 0; k < COLS; ++k) {
    const int i = threadIdx.x + k * kGatherThreads;
    if (i < F_IN) grad_h[n * F_IN + i] = acc[k];
  }
}

// Sender-major backward: gradient of the sender features, summed over each sender's edges.
// `skip` (may be null): a device flag; when set, the edges kernel (REVERSE) computes this instead.
template <typename scalar_t>
__global__ void tp_backward_nodes_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ sh, const scalar_t* __restrict__ w,
    const int64_t* __restrict__ receiver, const int64_t* __restrict__ sender_perm,
    const int64_t* __restrict__ sender_ptr, const int* __restrict__ skip, scalar_t* __restrict__ grad_h,
    int64_t num_nodes, int C) {
  constexpr int F_IN = @@F_IN@@, S = @@S@@, F_MID = @@F_MID@@, P = @@P@@;
  const int64_t s = blockIdx.x;
  const int c = threadIdx.x;
  if (s >= num_nodes || c >= C || (skip != nullptr && *skip != 0)) return;
@@GX_DECL@@
#pragma unroll 4  // as in the forward: several edges' loads in flight
  for (int64_t j = sender_ptr[s]; j < sender_ptr[s + 1]; ++j) {
    const int64_t e = sender_perm[j];
    const scalar_t* go = grad_out + receiver[e] * F_MID;
    const scalar_t* ye = sh + e * S;
    const scalar_t* we = w + e * (int64_t)(P * C) + c;
@@LOAD_G_RECEIVER@@
@@LOAD_Y@@
@@LOAD_W@@
@@BACKWARD_NODE@@
  }
  scalar_t* gh = grad_h + s * F_IN;
@@STORE_GX@@
}

int threads_for(int C) { return ((C + 31) / 32) * 32; }

// Shared weight rows: zero the gradient rows no edge owns (pair_rows.cuh's spare rows), so
// that the op returns no uninitialised memory.
template <typename scalar_t>
__global__ void zero_spare_rows_kernel(scalar_t* __restrict__ grad_w, const int64_t* __restrict__ in_use,
                                       int64_t num_rows, int64_t width) {
  const int64_t used = *in_use;
  for (int64_t t = blockIdx.x; t < num_rows - used; t += gridDim.x) {
    const int64_t r = spare_row(used, t);
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) grad_w[r * width + i] = scalar_t(0);
  }
}

// r_max and the scale rounded from double, as the spline op rounds them (ops/radial_spline.py).
template <typename scalar_t>
Radial<scalar_t> radial(const scalar_t* w, const scalar_t* coef, int intervals, double r_max) {
  return Radial<scalar_t>{w, coef, intervals, scalar_t(r_max), coef != nullptr ? scalar_t(intervals / r_max) : 0};
}

template <typename scalar_t>
cudaError_t forward_impl(const scalar_t* h, const scalar_t* sh, const Radial<scalar_t>& rad, const int64_t* sender,
                         const int64_t* edge_ptr, const int64_t* rows, scalar_t* out, int64_t num_nodes, int C,
                         cudaStream_t stream) {
  if (rad.coef != nullptr && rows == nullptr) return cudaErrorInvalidValue;  // tables are per pair row
  if (num_nodes == 0) return cudaSuccess;
  if (rad.coef != nullptr)
    tp_forward_kernel<scalar_t, true><<<num_nodes, threads_for(C), 0, stream>>>(h, sh, rad, sender, edge_ptr, rows,
                                                                               out, num_nodes, C);
  else
    tp_forward_kernel<scalar_t, false><<<num_nodes, threads_for(C), 0, stream>>>(h, sh, rad, sender, edge_ptr, rows,
                                                                                out, num_nodes, C);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t backward_impl(const scalar_t* grad_out, const scalar_t* h, const scalar_t* sh, const Radial<scalar_t>& rad,
                          const int64_t* sender, const int64_t* receiver, const int64_t* edge_ptr,
                          const int64_t* sender_perm, const int64_t* sender_ptr, const int* symmetric,
                          const int64_t* rows, int64_t num_edges, int64_t num_rows, scalar_t* grad_h,
                          scalar_t* grad_sh, scalar_t* grad_w, scalar_t* pair_gh, int64_t num_nodes, int C,
                          cudaStream_t stream) {
  if (threads_for(C) > kEdgesThreads) return cudaErrorInvalidValue;  // generated for @@CHANNELS@@ channels
  const bool table = rad.coef != nullptr;
  if (table && rows == nullptr) return cudaErrorInvalidValue;  // tables are per pair row
  if (rows != nullptr) {  // shared weight rows: a symmetric graph, one pass over the pairs
    // With a table, grad_w is the gradient of the rows' lengths: one number per row.
    zero_spare_rows_kernel<scalar_t><<<1024, 128, 0, stream>>>(grad_w, rows + num_edges, num_rows,
                                                               table ? 1 : int64_t(@@P@@) * C);
    if (num_nodes == 0) return cudaGetLastError();
    if (table)
      tp_backward_pairs_kernel<scalar_t, true><<<num_nodes, threads_for(C), 0, stream>>>(
          grad_out, h, sh, rad, sender, sender_perm, edge_ptr, rows, grad_w, grad_sh, grad_h, pair_gh, num_nodes, C);
    else
      tp_backward_pairs_kernel<scalar_t, false><<<num_nodes, threads_for(C), 0, stream>>>(
          grad_out, h, sh, rad, sender, sender_perm, edge_ptr, rows, grad_w, grad_sh, grad_h, pair_gh, num_nodes, C);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    tp_pair_gather_kernel<scalar_t><<<num_nodes, kGatherThreads, 0, stream>>>(rows, edge_ptr, pair_gh, grad_h,
                                                                              num_nodes);
    return cudaGetLastError();
  }
  if (num_nodes == 0) return cudaSuccess;
  const scalar_t* w = rad.w;
  // Senders first: it reads w, which the edges kernel may overwrite with its gradient. With
  // a symmetric flag it returns at once when the flag is set (the edges kernel does its work).
  tp_backward_nodes_kernel<scalar_t><<<num_nodes, threads_for(C), 0, stream>>>(
      grad_out, sh, w, receiver, sender_perm, sender_ptr, symmetric, grad_h, num_nodes, C);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (symmetric != nullptr) {
    tp_backward_edges_kernel<scalar_t, true><<<num_nodes, threads_for(C), 0, stream>>>(
        grad_out, h, sh, w, sender, edge_ptr, symmetric, grad_w, grad_sh, grad_h, num_nodes, C);
  } else {
    tp_backward_edges_kernel<scalar_t, false><<<num_nodes, threads_for(C), 0, stream>>>(
        grad_out, h, sh, w, sender, edge_ptr, nullptr, grad_w, grad_sh, nullptr, num_nodes, C);
  }
  return cudaGetLastError();
}

}  // namespace

extern "C" TpDims tp_dims() { return TpDims{@@F_IN@@, @@S@@, @@F_MID@@, @@P@@}; }

#define MACE_FAST_TP_INSTANTIATE(T, SUFFIX)                                                                           \
  extern "C" cudaError_t tp_forward_##SUFFIX(const T* h, const T* sh, const T* w, const T* coef, int intervals,       \
                                             double r_max, const int64_t* sender, const int64_t* edge_ptr,            \
                                             const int64_t* rows, T* out, int64_t n, int C, cudaStream_t s) {         \
    return forward_impl<T>(h, sh, radial(w, coef, intervals, r_max), sender, edge_ptr, rows, out, n, C, s);           \
  }                                                                                                                   \
  extern "C" cudaError_t tp_backward_##SUFFIX(const T* g, const T* h, const T* sh, const T* w, const T* coef,         \
                                              int intervals, double r_max, const int64_t* sender,                     \
                                              const int64_t* receiver, const int64_t* edge_ptr, const int64_t* perm,  \
                                              const int64_t* sptr, const int* sym, const int64_t* rows,               \
                                              int64_t num_edges, int64_t num_rows, T* gh, T* gsh, T* gw, T* pair_gh,  \
                                              int64_t n, int C, cudaStream_t s) {                                     \
    return backward_impl<T>(g, h, sh, radial(w, coef, intervals, r_max), sender, receiver, edge_ptr, perm, sptr, sym, \
                            rows, num_edges, num_rows, gh, gsh, gw, pair_gh, n, C, s);                                \
  }

MACE_FAST_TP_INSTANTIATE(float, f32)
MACE_FAST_TP_INSTANTIATE(double, f64)
