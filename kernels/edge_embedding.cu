// Edge embedding: spherical harmonics, Bessel radial basis and polynomial envelope of every
// edge vector in one pass, and the gradient with respect to the vectors in one pass.
//
// This file is a template: mace_fast/ops/edge_embedding.py fills its markers (lmax and the
// harmonics' body: the straight-line homogeneous recurrences of nn/spherical_harmonics.py,
// same operations, same order, same constants) and compiles it once per lmax.
// The harmonics are written once, for a generic number type N: plain scalars in the forward,
// dual numbers (value and gradient with respect to the unit vector) in the backward, so
// both passes come from the same code and nothing is saved between them.
//
// Layouts (row-major): vectors [E, 3]; sh [E, S], S = (lmax + 1)^2; feats [E, nb];
// cutoff [E]; bessel_weights [nb] and prefactor [1] are device arrays (read on the device:
// the launch needs no host synchronisation and can be captured in a CUDA graph).
// One thread per edge, kRows edges per block; rows of sh, feats and their gradients go
// through shared memory so that the block's global accesses are contiguous. Every output
// belongs to one edge: no atomics, results are bit-identical from run to run.

// Plain CUDA: no torch headers here, so nvcc alone can compile it.
#include <cstdint>
#include <cuda_runtime.h>

#include "edge_embedding.h"

namespace {

constexpr int kLmax = @@LMAX@@;
constexpr int S = (kLmax + 1) * (kLmax + 1);
constexpr int kRows = 128;  // edges (threads) per block

// A number with its gradient with respect to the three components of the unit vector.
template <typename T>
struct Dual {
  T v, d0, d1, d2;
  Dual() = default;
  __device__ explicit Dual(T c) : v(c), d0(0), d1(0), d2(0) {}
  __device__ Dual(T v_, T d0_, T d1_, T d2_) : v(v_), d0(d0_), d1(d1_), d2(d2_) {}
};

template <typename T>
__device__ __forceinline__ Dual<T> operator+(const Dual<T>& a, const Dual<T>& b) {
  return Dual<T>(a.v + b.v, a.d0 + b.d0, a.d1 + b.d1, a.d2 + b.d2);
}
template <typename T>
__device__ __forceinline__ Dual<T> operator-(const Dual<T>& a, const Dual<T>& b) {
  return Dual<T>(a.v - b.v, a.d0 - b.d0, a.d1 - b.d1, a.d2 - b.d2);
}
template <typename T>
__device__ __forceinline__ Dual<T> operator*(const Dual<T>& a, const Dual<T>& b) {
  return Dual<T>(a.v * b.v, a.d0 * b.v + a.v * b.d0, a.d1 * b.v + a.v * b.d1, a.d2 * b.v + a.v * b.d2);
}
template <typename T>
__device__ __forceinline__ Dual<T> operator*(T c, const Dual<T>& a) {
  return Dual<T>(c * a.v, c * a.d0, c * a.d1, c * a.d2);
}
template <typename T>
__device__ __forceinline__ Dual<T> operator/(const Dual<T>& a, T c) {
  return Dual<T>(a.v / c, a.d0 / c, a.d1 / c, a.d2 / c);
}

// e3nn's harmonics (component normalisation) of a unit vector given in textbook
// coordinates (x, y, z) = (u_z, u_x, u_y); Y has S entries, blocks l = 0..kLmax.
template <typename scalar_t, typename N>
__device__ __forceinline__ void spherical_harmonics(const N x, const N y, const N z, N* Y) {
@@SH_BODY@@
}

__device__ __forceinline__ void sin_cos(float a, float* s, float* c) { sincosf(a, s, c); }
__device__ __forceinline__ void sin_cos(double a, double* s, double* c) { sincos(a, s, c); }

// The polynomial envelope of r (see polynomial_envelope in mace_fast/nn/radial.py) and its
// derivative. Zero at and beyond r_max; the select (not a product with the mask, as in the
// reference) also keeps the far padding edges of a CUDA-graph step finite.
template <typename T>
__device__ __forceinline__ void envelope(T r, T r_max, int p, T& env, T& denv) {
  const T x = r / r_max;
  const T a = T((p + 1.0) * (p + 2.0) / 2.0), b = T(p * (p + 2.0)), c = T(p * (p + 1.0) / 2.0);
  const T xp = pow(x, T(p)), xp1 = pow(x, T(p + 1)), xp2 = pow(x, T(p + 2));
  const bool inside = r < r_max;
  env = inside ? T(1) - a * xp + b * xp1 - c * xp2 : T(0);
  const T dx = -(a * (T(p) * pow(x, T(p - 1)))) + b * (T(p + 1) * xp) - c * (T(p + 2) * xp1);
  denv = inside ? dx / r_max : T(0);
}

// Shared-memory rows have an odd stride: a warp's accesses to one column hit distinct banks.
__host__ __device__ constexpr int padded(int width) { return width | 1; }

// Move rows [row0, row0 + rows) of a global [*, width] array to or from the shared tile;
// consecutive threads touch consecutive global addresses.
template <typename T>
__device__ void store_rows(const T* tile, T* __restrict__ out, int64_t row0, int rows, int width) {
  const int stride = padded(width);
  T* dst = out + row0 * width;
  for (int i = threadIdx.x; i < rows * width; i += kRows) dst[i] = tile[(i / width) * stride + i % width];
}

template <typename T>
__device__ void load_rows(T* tile, const T* __restrict__ in, int64_t row0, int rows, int width) {
  const int stride = padded(width);
  const T* src = in + row0 * width;
  for (int i = threadIdx.x; i < rows * width; i += kRows) tile[(i / width) * stride + i % width] = src[i];
}

// The block's rows [row0, row0 + rows) of edges; thread t takes edge e = row0 + t if valid.
struct BlockRows {
  int64_t row0;
  int rows, t;
  bool valid;
  int64_t e;
};

__device__ __forceinline__ BlockRows block_rows(int64_t num_edges) {
  const int64_t row0 = int64_t(blockIdx.x) * kRows;
  const int rows = int(num_edges - row0 < kRows ? num_edges - row0 : kRows);
  const int t = threadIdx.x;
  return BlockRows{row0, rows, t, t < rows, row0 + t};
}

// The edge's vector, its length and its direction as F.normalize gives it (eps = 1e-12).
template <typename T>
struct Edge {
  T v[3], r, d, u[3];
  __device__ Edge(const T* __restrict__ vectors, int64_t e, bool valid) {
    for (int i = 0; i < 3; ++i) v[i] = valid ? vectors[3 * e + i] : T(1);
    r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    d = r < T(1e-12) ? T(1e-12) : r;
    for (int i = 0; i < 3; ++i) u[i] = v[i] / d;
  }
};

template <typename T>
__global__ void __launch_bounds__(kRows) edge_forward_kernel(
    const T* __restrict__ vectors, const T* __restrict__ bessel_weights, const T* __restrict__ prefactor,
    T* __restrict__ sh, T* __restrict__ feats, T* __restrict__ cutoff, int64_t num_edges, int nb, T r_max,
    int p, bool apply_cutoff) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tile = reinterpret_cast<T*>(smem);
  const auto [row0, rows, t, valid, e] = block_rows(num_edges);
  const Edge<T> edge(vectors, e, valid);

  T Y[S];
  spherical_harmonics<T, T>(edge.u[2], edge.u[0], edge.u[1], Y);
#pragma unroll
  for (int k = 0; k < S; ++k) tile[t * padded(S) + k] = Y[k];
  __syncthreads();
  store_rows(tile, sh, row0, rows, S);
  __syncthreads();  // the tile is reused for the radial features

  T env, denv;
  envelope(edge.r, r_max, p, env, denv);
  if (valid) cutoff[e] = env;
  const T pref = prefactor[0];
  for (int n = 0; n < nb; ++n) {
    const T bessel = pref * (sin(bessel_weights[n] * edge.r) / edge.r);
    tile[t * padded(nb) + n] = apply_cutoff ? bessel * env : bessel;
  }
  __syncthreads();
  store_rows(tile, feats, row0, rows, nb);
}

template <typename T>
__global__ void __launch_bounds__(kRows) edge_backward_kernel(
    const T* __restrict__ vectors, const T* __restrict__ bessel_weights, const T* __restrict__ prefactor,
    const T* __restrict__ grad_sh, const T* __restrict__ grad_feats, const T* __restrict__ grad_cutoff,
    T* __restrict__ grad_vectors, int64_t num_edges, int nb, T r_max, int p, bool apply_cutoff) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tile = reinterpret_cast<T*>(smem);
  const auto [row0, rows, t, valid, e] = block_rows(num_edges);
  const Edge<T> edge(vectors, e, valid);
  T g[3] = {0, 0, 0};

  // Harmonics: gradient with respect to the unit vector, then through the normalisation.
  // (The null checks are uniform over the block, so the barriers inside are safe.)
  if (grad_sh != nullptr) {
    load_rows(tile, grad_sh, row0, rows, S);
    __syncthreads();
    Dual<T> Y[S];
    spherical_harmonics<T, Dual<T>>(Dual<T>(edge.u[2], 0, 0, 1), Dual<T>(edge.u[0], 1, 0, 0),
                                    Dual<T>(edge.u[1], 0, 1, 0), Y);
    T gu[3] = {0, 0, 0};
#pragma unroll
    for (int k = 0; k < S; ++k) {
      const T gy = tile[t * padded(S) + k];
      gu[0] += gy * Y[k].d0;
      gu[1] += gy * Y[k].d1;
      gu[2] += gy * Y[k].d2;
    }
    if (edge.r >= T(1e-12)) {  // u = v / |v|: drop the radial component
      const T along = gu[0] * edge.u[0] + gu[1] * edge.u[1] + gu[2] * edge.u[2];
      for (int i = 0; i < 3; ++i) g[i] = (gu[i] - along * edge.u[i]) / edge.d;
    } else {  // u = v / eps (F.normalize's clamp): no radial term
      for (int i = 0; i < 3; ++i) g[i] = gu[i] / edge.d;
    }
    __syncthreads();  // the tile is reused for the radial gradient
  }

  // Radial part: d/dr of the features and of the envelope.
  T env, denv;
  envelope(edge.r, r_max, p, env, denv);
  T sum_b = 0, sum_db = 0;  // sum_n grad_feats_n * bessel_n and * d bessel_n / dr
  if (grad_feats != nullptr) {
    load_rows(tile, grad_feats, row0, rows, nb);
    __syncthreads();
    const T pref = prefactor[0], r = edge.r;
    for (int n = 0; n < nb; ++n) {
      const T w = bessel_weights[n];
      T s, c;
      sin_cos(w * r, &s, &c);
      const T gf = tile[t * padded(nb) + n];
      sum_b += gf * (pref * (s / r));
      sum_db += gf * (pref * (w * c / r - (s / r) / r));
    }
  }
  const T gc = (grad_cutoff != nullptr && valid) ? grad_cutoff[e] : T(0);
  const T gr = apply_cutoff ? env * sum_db + denv * (sum_b + gc) : sum_db + denv * gc;
  if (edge.r > T(0)) {  // d|v|/dv = v / |v| (torch gives 0 for a zero vector)
    // gr * (1 / r), not gr / r: gr is exactly 0 beyond the cutoff, a zero numerator sends the
    // IEEE division down its slow path.
    const T along = gr * (T(1) / edge.r);
    for (int i = 0; i < 3; ++i) g[i] += edge.v[i] * along;
  }
  if (valid) {
    for (int i = 0; i < 3; ++i) grad_vectors[3 * e + i] = g[i];
  }
}

template <typename T>
size_t tile_bytes(int nb) {
  return sizeof(T) * kRows * padded(S > nb ? S : nb);
}

int64_t blocks_for(int64_t num_edges) { return (num_edges + kRows - 1) / kRows; }

template <typename T>
cudaError_t forward_impl(const T* vectors, const T* bessel_weights, const T* prefactor, T* sh, T* feats,
                         T* cutoff, int64_t num_edges, int nb, double r_max, int p, int apply_cutoff,
                         cudaStream_t stream) {
  if (num_edges == 0) return cudaSuccess;
  edge_forward_kernel<T><<<blocks_for(num_edges), kRows, tile_bytes<T>(nb), stream>>>(
      vectors, bessel_weights, prefactor, sh, feats, cutoff, num_edges, nb, T(r_max), p, apply_cutoff != 0);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_impl(const T* vectors, const T* bessel_weights, const T* prefactor, const T* grad_sh,
                          const T* grad_feats, const T* grad_cutoff, T* grad_vectors, int64_t num_edges, int nb,
                          double r_max, int p, int apply_cutoff, cudaStream_t stream) {
  if (num_edges == 0) return cudaSuccess;
  edge_backward_kernel<T><<<blocks_for(num_edges), kRows, tile_bytes<T>(nb), stream>>>(
      vectors, bessel_weights, prefactor, grad_sh, grad_feats, grad_cutoff, grad_vectors, num_edges, nb,
      T(r_max), p, apply_cutoff != 0);
  return cudaGetLastError();
}

}  // namespace

extern "C" int edge_embedding_lmax() { return kLmax; }

#define MACE_FAST_EDGE_INSTANTIATE(T, SUFFIX)                                                                  \
  extern "C" cudaError_t edge_embedding_forward_##SUFFIX(const T* v, const T* bw, const T* pref, T* sh,        \
                                                          T* feats, T* cutoff, int64_t E, int nb,              \
                                                          double r_max, int p, int apply_cutoff,               \
                                                          cudaStream_t s) {                                    \
    return forward_impl<T>(v, bw, pref, sh, feats, cutoff, E, nb, r_max, p, apply_cutoff, s);                  \
  }                                                                                                            \
  extern "C" cudaError_t edge_embedding_backward_##SUFFIX(const T* v, const T* bw, const T* pref,             \
                                                           const T* gsh, const T* gfeats, const T* gcut,       \
                                                           T* gv, int64_t E, int nb, double r_max, int p,      \
                                                           int apply_cutoff, cudaStream_t s) {                 \
    return backward_impl<T>(v, bw, pref, gsh, gfeats, gcut, gv, E, nb, r_max, p, apply_cutoff, s);             \
  }

MACE_FAST_EDGE_INSTANTIATE(float, f32)
MACE_FAST_EDGE_INSTANTIATE(double, f64)
