// float32 matrix products on the tensor cores at float32 accuracy ("3xTF32").
//
// A tf32 tensor-core product keeps 11 significant bits per operand. Splitting each float32
// operand into two tf32 terms, x = hi + lo (hi = x rounded to tf32, lo = the rest rounded
// again), and summing the three products that matter,
//     a b ~= a_lo b_hi + a_hi b_lo + a_hi b_hi        (a_lo b_lo ~ 2^-22 |a b| is dropped),
// gives ~2^-22 relative error per product, accumulated in float32: the accuracy of a
// float32 product, at the tensor cores' rate (tf32 runs at ~7x the float32 units, three
// products at ~2.5x).
//
// One warp computes D[16 x 8] += A[16 x 8] B[8 x 8] per mma.sync.m16n8k8 (PTX ISA). Lane =
// 4 g + t holds
//     A: (row g, slot t), (row g+8, slot t), (row g, slot t+4), (row g+8, slot t+4)
//     B: (slot t, col g), (slot t+4, col g)
//     D: (row g, col 2t), (row g, col 2t+1), (row g+8, col 2t), (row g+8, col 2t+1)
// where a "slot" is a position along k. The product sums over slots, so any one-to-one map
// of slots to k works if A and B agree; we map slot t -> k = 2t and slot t+4 -> k = 2t+1.
// Then a D tile read as an A operand is just a reordering of the lane's own four values
// (a layer's output feeds the next layer without leaving registers), and a row's two
// consecutive k values sit side by side in memory.
//
// B operands are prepared on the host (mace_fast/ops/tensor_cores.py, `fragments`): for a
// [K, N] matrix, one float4 per (k step s, column tile j, lane) holding
//     hi(B[8s+2t, 8j+g]), hi(B[8s+2t+1, 8j+g]), lo(B[8s+2t, 8j+g]), lo(B[8s+2t+1, 8j+g])
// so a warp loads its B operand of one tile pair as one 16-byte load per lane.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace tf32x3 {

// One A operand tile split into its two tf32 terms.
struct SplitA {
  uint32_t hi[4], lo[4];
};

__device__ __forceinline__ uint32_t round_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

__device__ __forceinline__ void split(float x, uint32_t& hi, uint32_t& lo) {
  hi = round_tf32(x);
  lo = round_tf32(x - __uint_as_float(hi));  // exact difference, then rounded
}

// The A operand from four values in D order (row g: k 2t, 2t+1; row g+8: k 2t, 2t+1).
__device__ __forceinline__ SplitA split_a(float r0k0, float r0k1, float r8k0, float r8k1) {
  SplitA a;
  split(r0k0, a.hi[0], a.lo[0]);  // (g, slot t)
  split(r8k0, a.hi[1], a.lo[1]);  // (g+8, slot t)
  split(r0k1, a.hi[2], a.lo[2]);  // (g, slot t+4)
  split(r8k1, a.hi[3], a.lo[3]);  // (g+8, slot t+4)
  return a;
}

__device__ __forceinline__ SplitA split_a(const float (&d)[4]) { return split_a(d[0], d[1], d[2], d[3]); }

__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], float b0, float b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
}

// d += A B at float32 accuracy; b is the prepared B operand (hi pair, lo pair).
// The tensor cores add into their accumulator with truncation (rounding toward zero), a
// bias that grows with the number of additions into one accumulator (measured: 9e-6
// relative over K = 1280, against 2e-7 for float32 FMA). So each call sums its three
// products into a fresh accumulator, small products first so they are not rounded away
// against the large one, and adds that into d with an ordinary, round-to-nearest add.
__device__ __forceinline__ void mma3(float (&d)[4], const SplitA& a, const float4& b) {
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  mma(c, a.lo, b.x, b.y);
  mma(c, a.hi, b.z, b.w);
  mma(c, a.hi, b.x, b.y);
#pragma unroll
  for (int i = 0; i < 4; ++i) d[i] += c[i];
}

// The prepared B operand of k step s and column tile j of a matrix with NT column tiles.
__device__ __forceinline__ float4 load_b(const float4* __restrict__ b, int s, int j, int nt, int lane) {
  return __ldg(b + (int64_t(s) * nt + j) * 32 + lane);
}

}  // namespace tf32x3
