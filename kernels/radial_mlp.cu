// The hidden layers ("trunk") of MACE's radial MLP, forward and backward, fused:
//
//   y_0 = x,   y_l = s * silu(c_l * (y_{l-1} @ W_l)),   l = 1..L,   c_l = 1 / sqrt(fan_in_l)
//
// replacing per edge a chain of small GEMMs and elementwise kernels (the last, large linear
// layer of the MLP stays on cuBLAS). The backward gives grad_x only (forces and stress need
// no weight gradients) and recomputes the forward in the same kernel instead of storing it.
//
// This file is a template: mace_fast/ops/radial_mlp.py fills its markers with the widths,
// so every loop bound below is a constant, and with the tiling it picked to fit the
// device's shared memory.
//
// Layout of the work: a block of 128 threads takes a tile of TILE edges at a time (a
// persistent grid walks over all tiles). The tile's activations live in shared memory,
// row-major [TILE][LD]; each layer is a small GEMM in which a thread keeps a 4-edge x R-column
// block of accumulators in registers and reads its operands as 16-byte vectors (the row
// stride LD is an odd number of 16-byte units, so the 8 rows of a quarter-warp hit distinct
// banks). The weights are either copied to shared memory once per block ("resident") or,
// where that would cost occupancy, read through the L1 cache (radial_mlp.py decides). Global memory is read and written in
// coalesced row copies of the whole tile. Every sum runs in a fixed order and there are
// no atomics: results are bit-identical from run to run.
//
// Plain CUDA: no torch headers, so nvcc alone compiles it (the CPU CI does).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "radial_mlp.h"

namespace {

constexpr int kLayers = @@NUM_LAYERS@@;                            // hidden layers (1..4)
constexpr int kWidth[kLayers + 1] = {@@WIDTHS@@};                  // n0, h1, ..., hL
constexpr double kInvSqrtFanIn[kLayers] = {@@INV_SQRT_FAN_IN@@};  // c_l

// Rows of edges per tile, and whether the weights are copied to shared memory.
struct Plan {
  int tile;
  bool resident;
};
constexpr Plan kForwardF32 = {@@PLAN_FORWARD_F32@@};
constexpr Plan kBackwardF32 = {@@PLAN_BACKWARD_F32@@};
constexpr Plan kForwardF64 = {@@PLAN_FORWARD_F64@@};
constexpr Plan kBackwardF64 = {@@PLAN_BACKWARD_F64@@};

constexpr int kThreads = 128;
constexpr int kRowsPerThread = 4;
constexpr int kMaxDevices = 64;

__host__ __device__ constexpr int round_up(int a, int b) { return (a + b - 1) / b * b; }

__host__ __device__ constexpr int max_width() {
  int m = 0;
  for (int l = 0; l <= kLayers; ++l) m = kWidth[l] > m ? kWidth[l] : m;
  return m;
}

// Offset of layer l's weights [fan_in, fan_out] in the concatenation of all layers.
__host__ __device__ constexpr int weight_offset(int l) {
  int n = 0;
  for (int i = 0; i < l; ++i) n += kWidth[i] * kWidth[i + 1];
  return n;
}

template <typename T>
struct Shape {
  static constexpr int kVec = 16 / sizeof(T);                 // elements per 16-byte access
  static constexpr int kLd = round_up(max_width(), 8) + kVec;  // odd number of 16-byte units
};

// Thread t owns rows rg + i * kRowGroups (i < 4) and columns cg * cols(n) + r of a tile.
template <int TILE>
struct Tiling {
  static constexpr int kRowGroups = TILE / kRowsPerThread;
  static constexpr int kColGroups = kThreads / kRowGroups;
  __host__ __device__ static constexpr int cols(int n) { return (n + kColGroups - 1) / kColGroups; }
  // Every thread's columns lie inside the n columns (no bounds checks needed).
  __host__ __device__ static constexpr bool full(int n) { return n % kColGroups == 0; }
  static_assert(TILE % kRowsPerThread == 0 && kThreads % kRowGroups == 0, "bad tile");
};

template <typename T>
struct Weights {
  const T* w[4];
};

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// N contiguous elements in the widest accesses their alignment allows: the callers' offsets
// are multiples of the access width (row strides are multiples of 8 elements).
template <int N>
__host__ __device__ constexpr int pack_width(int vec) {
  return N % vec == 0 ? vec : (N % 2 == 0 ? 2 : 1);
}

template <int N, typename T>
__device__ __forceinline__ void load_row(T (&dst)[N], const T* src) {
  constexpr int P = pack_width<N>(Shape<T>::kVec);
#pragma unroll
  for (int c = 0; c < N / P; ++c) {
    const Pack<T, P> p = reinterpret_cast<const Pack<T, P>*>(src)[c];
#pragma unroll
    for (int i = 0; i < P; ++i) dst[c * P + i] = p.v[i];
  }
}

template <int N, typename T>
__device__ __forceinline__ void store_row(T* dst, const T (&src)[N]) {
  constexpr int P = pack_width<N>(Shape<T>::kVec);
#pragma unroll
  for (int c = 0; c < N / P; ++c) {
    Pack<T, P> p;
#pragma unroll
    for (int i = 0; i < P; ++i) p.v[i] = src[c * P + i];
    reinterpret_cast<Pack<T, P>*>(dst)[c] = p;
  }
}

// A thread's R columns of one row; `left` = columns of the row from the thread's first on.
template <bool FULL, int R, typename T>
__device__ __forceinline__ void load_cols(T (&dst)[R], const T* src, int left) {
  if constexpr (FULL) {
    load_row(dst, src);
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r) dst[r] = r < left ? src[r] : T(0);
  }
}

template <bool FULL, int R, typename T>
__device__ __forceinline__ void store_cols(T* dst, const T (&src)[R], int left) {
  if constexpr (FULL) {
    store_row(dst, src);
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r < left) dst[r] = src[r];
  }
}

__device__ __forceinline__ float exp_(float z) { return expf(z); }
__device__ __forceinline__ double exp_(double z) { return exp(z); }

// silu as z * sigmoid(z), without dividing z: see radial_trunk_tc.cu (the division's slow
// path for the exact zeros of edges beyond the cutoff). Within an ulp of torch's z / (1 + e).
template <typename T>
__device__ __forceinline__ T sigmoid(T z) {
  return T(1) / (T(1) + exp_(-z));
}

template <typename T>
__device__ __forceinline__ T silu(T z) {
  return z * sigmoid(z);
}

template <typename T>
__device__ __forceinline__ T silu_grad(T z) {
  const T s = sigmoid(z);
  return s * (T(1) + z * (T(1) - s));
}

template <int I, int END, typename F>
__device__ __forceinline__ void static_for(F&& f) {
  if constexpr (I < END) {
    f(std::integral_constant<int, I>{});
    static_for<I + 1, END>(f);
  }
}

// acc[i][r] = sum_k a[row_i][k] * w[k][col_r]: a is the tile [TILE][LD] (zero past column
// K up to the next multiple of the vector width), w is [K][N].
template <typename T, int TILE, int K, int N>
__device__ __forceinline__ void matmul(const T* __restrict__ a, const T* __restrict__ w,
                                       T (&acc)[kRowsPerThread][Tiling<TILE>::cols(N)], int rg, int cg) {
  using Tl = Tiling<TILE>;
  constexpr int V = Shape<T>::kVec, LD = Shape<T>::kLd, R = Tl::cols(N);
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[i][r] = T(0);
  const T* wc = w + cg * R;
#pragma unroll 2
  for (int k = 0; k < round_up(K, V); k += V) {
    T x[kRowsPerThread][V];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) load_row(x[i], a + (rg + i * Tl::kRowGroups) * LD + k);
#pragma unroll
    for (int q = 0; q < V; ++q) {
      if (K % V != 0 && k + q >= K) break;  // only the first layer has a ragged K
      T b[R];
      load_cols<Tl::full(N)>(b, wc + (k + q) * N, N - cg * R);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
        for (int r = 0; r < R; ++r) acc[i][r] = fma(x[i][q], b[r], acc[i][r]);
    }
  }
}

// acc[i][r] = sum_j g[row_i][j] * w[col_r][j]: the transposed product of the backward; the
// outputs are the K rows of w [K][N].
template <typename T, int TILE, int K, int N>
__device__ __forceinline__ void matmul_t(const T* __restrict__ g, const T* __restrict__ w,
                                         T (&acc)[kRowsPerThread][Tiling<TILE>::cols(K)], int rg, int cg) {
  using Tl = Tiling<TILE>;
  constexpr int V = Shape<T>::kVec, LD = Shape<T>::kLd, R = Tl::cols(K);
  static_assert(N % V == 0, "hidden widths are multiples of 8");
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[i][r] = T(0);
#pragma unroll 2
  for (int j = 0; j < N; j += V) {
    T x[kRowsPerThread][V];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) load_row(x[i], g + (rg + i * Tl::kRowGroups) * LD + j);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int col = cg * R + r;
      if (!Tl::full(K) && col >= K) break;
      T b[V];
      load_row(b, w + col * N + j);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
        for (int q = 0; q < V; ++q) acc[i][r] = fma(x[i][q], b[q], acc[i][r]);
    }
  }
}

// Rows [0, rows) of a [*, COLS] array into the tile, zero-filled to PCOLS columns and TILE rows.
template <typename T, int TILE, int COLS, int PCOLS>
__device__ __forceinline__ void load_tile(const T* __restrict__ src, int rows, T* tile) {
  for (int idx = threadIdx.x; idx < TILE * PCOLS; idx += kThreads) {
    const int row = idx / PCOLS, col = idx % PCOLS;
    tile[row * Shape<T>::kLd + col] = (row < rows && col < COLS) ? src[int64_t(row) * COLS + col] : T(0);
  }
}

template <typename T, int COLS>
__device__ __forceinline__ void store_tile(const T* tile, int rows, T* __restrict__ dst) {
  for (int idx = threadIdx.x; idx < rows * COLS; idx += kThreads) {
    dst[idx] = tile[(idx / COLS) * Shape<T>::kLd + idx % COLS];
  }
}

// The tile as three bfloat16 terms per value, v = hi + mid + lo to ~2^-24 relative, in the
// layout of the split last layer (ops/radial_mlp.py): row [hi, hi, mid, hi, lo, mid], so that
// one bfloat16 GEMM against [W_hi; W_mid; W_hi; W_lo; W_hi; W_mid] sums the six products
// that carry float32 precision (hi W_hi, hi W_mid, mid W_hi, hi W_lo, lo W_hi, mid W_mid).
template <int COLS>
__device__ __forceinline__ void store_split_tile(const float* tile, int rows, __nv_bfloat16* __restrict__ dst) {
  for (int idx = threadIdx.x; idx < rows * COLS; idx += kThreads) {
    const int row = idx / COLS, col = idx % COLS;
    const float v = tile[row * Shape<float>::kLd + col];
    const __nv_bfloat16 hi = __float2bfloat16_rn(v);
    const float r = v - __bfloat162float(hi);
    const __nv_bfloat16 mid = __float2bfloat16_rn(r);
    const __nv_bfloat16 lo = __float2bfloat16_rn(r - __bfloat162float(mid));
    __nv_bfloat16* out = dst + int64_t(row) * 6 * COLS + col;
    out[0] = hi;
    out[COLS] = hi;
    out[2 * COLS] = mid;
    out[3 * COLS] = hi;
    out[4 * COLS] = lo;
    out[5 * COLS] = mid;
  }
}

// The persistent grid's loop: for each of this block's tiles, the tile's rows of x are loaded
// into act, then body(first edge, rows) runs; a barrier follows before the next tile.
template <typename T, int TILE, typename Body>
__device__ __forceinline__ void for_each_tile(const T* __restrict__ x, int64_t num_edges, T* act, Body&& body) {
  constexpr int N0 = kWidth[0];
  const int64_t num_tiles = (num_edges + TILE - 1) / TILE;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    const int64_t e0 = tile * TILE;
    const int rows = int(num_edges - e0 < TILE ? num_edges - e0 : TILE);
    load_tile<T, TILE, N0, round_up(N0, Shape<T>::kVec)>(x + e0 * N0, rows, act);
    __syncthreads();
    body(e0, rows);
    __syncthreads();  // before the next tile overwrites act
  }
}

// The layers' weights: copied into shared memory (resident) or left in global memory.
template <typename T, bool RESIDENT>
__device__ __forceinline__ void stage_weights(const Weights<T>& global, T* shared, const T* (&w)[kLayers]) {
  static_for<0, kLayers>([&](auto L) {
    constexpr int l = decltype(L)::value;
    if constexpr (RESIDENT) {
      constexpr int size = kWidth[l] * kWidth[l + 1];
      T* dst = shared + weight_offset(l);
      for (int i = threadIdx.x; i < size; i += kThreads) dst[i] = global.w[l][i];
      w[l] = dst;
    } else {
      w[l] = global.w[l];
    }
  });
}

// SPLIT (float only): out is [E, 6 * hL] bfloat16 in the split layout (store_split_tile).
template <typename T, int TILE, bool RESIDENT, bool SPLIT = false>
__global__ void __launch_bounds__(kThreads)
    trunk_forward_kernel(const T* __restrict__ x, Weights<T> weights, void* __restrict__ out, int64_t num_edges,
                         T act_scale) {
  using Tl = Tiling<TILE>;
  constexpr int LD = Shape<T>::kLd, OUT = kWidth[kLayers];
  extern __shared__ __align__(16) unsigned char smem[];
  T* act = reinterpret_cast<T*>(smem);  // [TILE][LD]
  const T* w[kLayers];
  stage_weights<T, RESIDENT>(weights, act + TILE * LD, w);  // visible after the first barrier below
  const int rg = threadIdx.x % Tl::kRowGroups, cg = threadIdx.x / Tl::kRowGroups;
  for_each_tile<T, TILE>(x, num_edges, act, [&](int64_t e0, int rows) {
    static_for<0, kLayers>([&](auto L) {
      constexpr int l = decltype(L)::value, K = kWidth[l], N = kWidth[l + 1], R = Tl::cols(N);
      const T c = T(kInvSqrtFanIn[l]);
      T acc[kRowsPerThread][R];
      matmul<T, TILE, K, N>(act, w[l], acc, rg, cg);
      __syncthreads();  // everyone has read the layer's input: overwrite it in place
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        T y[R];
#pragma unroll
        for (int r = 0; r < R; ++r) y[r] = act_scale * silu(c * acc[i][r]);
        store_cols<Tl::full(N)>(act + (rg + i * Tl::kRowGroups) * LD + cg * R, y, N - cg * R);
      }
      __syncthreads();
    });
    if constexpr (SPLIT) {
      store_split_tile<OUT>(act, rows, static_cast<__nv_bfloat16*>(out) + e0 * 6 * OUT);
    } else {
      store_tile<T, OUT>(act, rows, static_cast<T*>(out) + e0 * OUT);
    }
  });
}

template <typename T, int TILE, bool RESIDENT>
__global__ void __launch_bounds__(kThreads)
    trunk_backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ x, Weights<T> weights,
                          T* __restrict__ grad_x, int64_t num_edges, T act_scale) {
  using Tl = Tiling<TILE>;
  constexpr int LD = Shape<T>::kLd, N0 = kWidth[0], OUT = kWidth[kLayers];
  extern __shared__ __align__(16) unsigned char smem[];
  // act [TILE][LD]: the activations going forward, then the gradient going back;
  // deriv[l] [TILE][LD]: s * silu'(z_l) of the hidden layers but the last (l < L - 1).
  T* act = reinterpret_cast<T*>(smem);
  T* deriv = act + TILE * LD;
  const T* w[kLayers];
  stage_weights<T, RESIDENT>(weights, act + kLayers * TILE * LD, w);
  const int rg = threadIdx.x % Tl::kRowGroups, cg = threadIdx.x / Tl::kRowGroups;
  for_each_tile<T, TILE>(x, num_edges, act, [&](int64_t e0, int rows) {
    // Forward again, keeping only the activation derivatives.
    static_for<0, kLayers>([&](auto L) {
      constexpr int l = decltype(L)::value, K = kWidth[l], N = kWidth[l + 1], R = Tl::cols(N);
      const T c = T(kInvSqrtFanIn[l]);
      T acc[kRowsPerThread][R];
      matmul<T, TILE, K, N>(act, w[l], acc, rg, cg);
      __syncthreads();
      if constexpr (l + 1 < kLayers) {
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          T y[R], d[R];
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const T z = c * acc[i][r];
            y[r] = act_scale * silu(z);
            d[r] = act_scale * silu_grad(z);
          }
          const int offset = (rg + i * Tl::kRowGroups) * LD + cg * R;
          store_cols<Tl::full(N)>(act + offset, y, N - cg * R);
          store_cols<Tl::full(N)>(deriv + l * TILE * LD + offset, d, N - cg * R);
        }
      } else {
        // The last layer's derivative meets the upstream gradient at once: no need to store it.
        load_tile<T, TILE, OUT, OUT>(grad_out + e0 * OUT, rows, act);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          T g[R];
          T* row = act + (rg + i * Tl::kRowGroups) * LD + cg * R;
          load_cols<Tl::full(N)>(g, row, N - cg * R);
#pragma unroll
          for (int r = 0; r < R; ++r) g[r] *= act_scale * silu_grad(c * acc[i][r]);
          store_cols<Tl::full(N)>(row, g, N - cg * R);
        }
      }
      __syncthreads();
    });
    // Back through the layers: grad_{l-1} = c_l * (grad_l @ W_l^T) * deriv_{l-1}.
    static_for<0, kLayers>([&](auto M) {
      constexpr int l = kLayers - 1 - decltype(M)::value, K = kWidth[l], N = kWidth[l + 1], R = Tl::cols(K);
      const T c = T(kInvSqrtFanIn[l]);
      T acc[kRowsPerThread][R];
      matmul_t<T, TILE, K, N>(act, w[l], acc, rg, cg);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int offset = (rg + i * Tl::kRowGroups) * LD + cg * R;
        T g[R];
#pragma unroll
        for (int r = 0; r < R; ++r) g[r] = c * acc[i][r];
        if constexpr (l > 0) {
          T d[R];
          load_cols<Tl::full(K)>(d, deriv + (l - 1) * TILE * LD + offset, K - cg * R);
#pragma unroll
          for (int r = 0; r < R; ++r) g[r] *= d[r];
        }
        store_cols<Tl::full(K)>(act + offset, g, K - cg * R);
      }
      __syncthreads();
    });
    store_tile<T, N0>(act, rows, grad_x + e0 * N0);
  });
}

constexpr size_t weight_bytes(size_t itemsize) { return itemsize * weight_offset(kLayers); }

template <typename T>
constexpr size_t smem_bytes(Plan plan, int buffers) {
  return sizeof(T) * size_t(buffers) * plan.tile * Shape<T>::kLd + (plan.resident ? weight_bytes(sizeof(T)) : 0);
}

// Blocks of `kernel` that run at once on the current device (the persistent grid). Cached per
// device: the attribute calls are host round trips, and later calls may be graph captures.
template <typename T, bool BACKWARD, bool SPLIT = false>  // one cache per kernel
cudaError_t grid_limit(const void* kernel, size_t smem, int64_t* blocks) {
  static std::atomic<int64_t> cache[kMaxDevices];
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  if (device < kMaxDevices && cache[device].load() > 0) {
    *blocks = cache[device].load();
    return cudaSuccess;
  }
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  int sms = 0, per_sm = 0;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (err != cudaSuccess) return err;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  *blocks = int64_t(sms) * per_sm;
  if (device < kMaxDevices) cache[device].store(*blocks);
  return cudaSuccess;
}

template <typename T, int TILE, bool RESIDENT, bool SPLIT = false>
cudaError_t forward_impl(const T* x, Weights<T> w, void* out, int64_t num_edges, double act_scale,
                         cudaStream_t stream) {
  if (num_edges <= 0) return cudaSuccess;
  auto kernel = trunk_forward_kernel<T, TILE, RESIDENT, SPLIT>;
  constexpr size_t smem = smem_bytes<T>(Plan{TILE, RESIDENT}, 1);
  int64_t blocks = 0;
  cudaError_t err = grid_limit<T, false, SPLIT>(reinterpret_cast<const void*>(kernel), smem, &blocks);
  if (err != cudaSuccess) return err;
  const int64_t grid = std::min((num_edges + TILE - 1) / TILE, blocks);
  kernel<<<unsigned(grid), kThreads, smem, stream>>>(x, w, out, num_edges, T(act_scale));
  return cudaGetLastError();
}

template <typename T, int TILE, bool RESIDENT>
cudaError_t backward_impl(const T* grad_out, const T* x, Weights<T> w, T* grad_x, int64_t num_edges,
                          double act_scale, cudaStream_t stream) {
  if (num_edges <= 0) return cudaSuccess;
  auto kernel = trunk_backward_kernel<T, TILE, RESIDENT>;
  constexpr size_t smem = smem_bytes<T>(Plan{TILE, RESIDENT}, kLayers);
  int64_t blocks = 0;
  cudaError_t err = grid_limit<T, true>(reinterpret_cast<const void*>(kernel), smem, &blocks);
  if (err != cudaSuccess) return err;
  const int64_t grid = std::min((num_edges + TILE - 1) / TILE, blocks);
  kernel<<<unsigned(grid), kThreads, smem, stream>>>(grad_out, x, w, grad_x, num_edges, T(act_scale));
  return cudaGetLastError();
}

}  // namespace

extern "C" TrunkDims radial_trunk_dims() {
  TrunkDims dims{kLayers, {0, 0, 0, 0, 0}};
  for (int l = 0; l <= kLayers; ++l) dims.width[l] = kWidth[l];
  return dims;
}

#define MACE_FAST_TRUNK_INSTANTIATE(T, SUFFIX, FORWARD, BACKWARD)                                        \
  extern "C" cudaError_t radial_trunk_forward_##SUFFIX(const T* x, const T* w0, const T* w1, const T* w2, \
                                                       const T* w3, T* out, int64_t num_edges,            \
                                                       double act_scale, cudaStream_t stream) {           \
    return forward_impl<T, FORWARD.tile, FORWARD.resident>(x, Weights<T>{{w0, w1, w2, w3}}, out,          \
                                                           num_edges, act_scale, stream);                \
  }                                                                                                      \
  extern "C" cudaError_t radial_trunk_backward_##SUFFIX(const T* grad_out, const T* x, const T* w0,       \
                                                        const T* w1, const T* w2, const T* w3, T* grad_x, \
                                                        int64_t num_edges, double act_scale,              \
                                                        cudaStream_t stream) {                            \
    return backward_impl<T, BACKWARD.tile, BACKWARD.resident>(grad_out, x, Weights<T>{{w0, w1, w2, w3}},  \
                                                              grad_x, num_edges, act_scale, stream);      \
  }

MACE_FAST_TRUNK_INSTANTIATE(float, f32, kForwardF32, kBackwardF32)
extern "C" cudaError_t radial_trunk_forward_split_f32(const float* x, const float* w0, const float* w1,
                                                      const float* w2, const float* w3, void* out,
                                                      int64_t num_edges, double act_scale, cudaStream_t stream) {
  return forward_impl<float, kForwardF32.tile, kForwardF32.resident, true>(x, Weights<float>{{w0, w1, w2, w3}}, out,
                                                                           num_edges, act_scale, stream);
}
MACE_FAST_TRUNK_INSTANTIATE(double, f64, kForwardF64, kBackwardF64)
