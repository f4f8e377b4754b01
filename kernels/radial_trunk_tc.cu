// The float32 radial-MLP trunk (radial_mlp.cu has the definition) on the tensor cores at
// float32 accuracy (3xTF32, tf32x3.cuh), forward and backward:
//
//   y_0 = x,   y_l = s * silu(c_l * (y_{l-1} @ W_l)),   l = 1..L,   c_l = 1 / sqrt(fan_in_l)
//
// Each warp takes 16 * kM edges at a time and keeps their activations in registers, in the
// tensor cores' accumulator layout, from the input to the output: a layer's output tiles are
// the next layer's input operand without any shuffle or shared-memory round trip. The
// weights come as prepared operands (ops/tensor_cores.py) read through L1, shared by all
// warps. The backward recomputes the forward, keeping each hidden layer's activation
// derivative in the warp's slice of shared memory, then multiplies back through the
// transposed weights. No block-level barrier anywhere: warps run independently. Every sum
// has a fixed order: bit-identical from run to run.
//
// This file is a template: mace_fast/ops/tensor_cores.py fills the markers with the widths.
// Plain CUDA: no torch headers, so nvcc alone compiles it (the CPU CI does).
#include <cstdint>
#include <type_traits>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "radial_trunk_tc.h"
#include "tf32x3.cuh"

namespace {

constexpr int kLayers = @@NUM_LAYERS@@;                            // hidden layers (1..4)
constexpr int kWidth[kLayers + 1] = {@@WIDTHS@@};                  // n0, h1, ..., hL
constexpr double kInvSqrtFanIn[kLayers] = {@@INV_SQRT_FAN_IN@@};  // c_l

__host__ __device__ constexpr int tiles(int n) { return (n + 7) / 8; }

__host__ __device__ constexpr int max_tiles() {
  int m = 0;
  for (int l = 0; l <= kLayers; ++l) m = tiles(kWidth[l]) > m ? tiles(kWidth[l]) : m;
  return m;
}

constexpr int kT = max_tiles();  // column tiles of the widest activation
// Row tiles (16 edges each) per warp. Two halve the weight loads but cost occupancy: on an
// H100 ([1.46M, 10] -> 64 -> 64 -> 64) one tile took 0.90 ms forward, two 1.52 ms.
constexpr int kM = 1;
constexpr int kWarps = 2;  // per block of the backward; its derivative store stays <= 48 KiB
constexpr int kDerivs = kLayers > 1 ? kLayers - 1 : 1;

// Offset (in float4) of layer l's prepared operand in the concatenation of all layers; the
// forward ([K_l, N_l]) and the transposed ([N_l, K_l]) operands have the same sizes.
__host__ __device__ constexpr int operand_offset(int l) {
  int n = 0;
  for (int i = 0; i < l; ++i) n += tiles(kWidth[i]) * tiles(kWidth[i + 1]) * 32;
  return n;
}

// Activations of a warp's rows in accumulator layout: [row tile][column tile][4].
using Tiles = float[kM][kT][4];

template <int I, int END, typename F>
__device__ __forceinline__ void static_for(F&& f) {
  if constexpr (I < END) {
    f(std::integral_constant<int, I>{});
    static_for<I + 1, END>(f);
  }
}

// silu(z) = z * sigmoid(z), not z / (1 + exp(-z)): the IEEE division takes its slow path
// (a call, divergent in the warp) for a zero numerator, and edges beyond the cutoff (Verlet
// skin, CUDA-graph replays with moved atoms) carry exact zeros through every layer. The
// reciprocal of 1 + exp(-z) stays on its fast path down to z = -87. (H100, [1.46M, 10] -> 64
// -> 64 -> 64, forward + backward with a fifth of the rows zero: 3.56 ms with the division,
// 2.61 ms without; 2.45 / 2.54 ms on rows with no zeros.)
__device__ __forceinline__ float sigmoid(float z) { return 1.f / (1.f + expf(-z)); }

__device__ __forceinline__ float silu(float z) { return z * sigmoid(z); }

__device__ __forceinline__ float silu_grad(float z) {
  const float s = sigmoid(z);
  return s * (1.f + z * (1.f - s));
}

// out[:, :NT] = in[:, :KT] @ B for a prepared B of KT x NT tiles.
template <int KT, int NT>
__device__ __forceinline__ void product(const float4* __restrict__ b, const Tiles& in, Tiles& out, int lane) {
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) out[m][j][i] = 0.f;
#pragma unroll
  for (int s = 0; s < KT; ++s) {
    tf32x3::SplitA a[kM];
#pragma unroll
    for (int m = 0; m < kM; ++m) a[m] = tf32x3::split_a(in[m][s]);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const float4 w = tf32x3::load_b(b, s, j, NT, lane);
#pragma unroll
      for (int m = 0; m < kM; ++m) tf32x3::mma3(out[m][j], a[m], w);
    }
  }
}

// Element i of tile (m, j) sits at row 16 m + g + 8 (i / 2), column 8 j + 2 t + i % 2.
__device__ __forceinline__ int row_of(int m, int i, int g) { return 16 * m + g + 8 * (i / 2); }
__device__ __forceinline__ int col_of(int j, int i, int t) { return 8 * j + 2 * t + i % 2; }

// f(value of tile element, its offset in a [E, COLS] array) for every element of the
// warp's rows [e0, e0 + 16 kM) that lies inside the array (rows < E, columns < COLS).
template <int COLS, typename F>
__device__ __forceinline__ void for_each_in_rows(int64_t e0, int64_t num_edges, Tiles& v, int g, int t, F&& f) {
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int j = 0; j < tiles(COLS); ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t e = e0 + row_of(m, i, g);
        const int c = col_of(j, i, t);
        if (e < num_edges && c < COLS) f(v[m][j][i], e * COLS + c);
      }
}

// Rows [e0, e0 + 16 kM) of a [E, COLS] array (zero past its end and past COLS).
template <int COLS>
__device__ __forceinline__ void load_rows(const float* __restrict__ src, int64_t e0, int64_t num_edges,
                                          Tiles& v, int g, int t) {
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int j = 0; j < kT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) v[m][j][i] = 0.f;
  for_each_in_rows<COLS>(e0, num_edges, v, g, t, [&](float& x, int64_t k) { x = src[k]; });
}

// The output rows of a warp go through its slice of shared memory, so that global memory
// is written in whole, contiguous 16-byte pieces: written straight from the accumulator
// layout, each store would cover 8 rows x 16 bytes (measured: the split output took 2.2 ms
// that way at 1.46M edges, against 0.9 ms for the whole float32 forward).
// A row of the staging area is padded by 16 bytes so that the 8 rows a store touches fall
// on different banks.
template <int BYTES>
struct Staging {
  static constexpr int kStride = BYTES + 16;          // bytes per staged row
  static constexpr int kBytes = 16 * kM * kStride;    // per warp
};

// Copy `rows` staged rows of BYTES each to dst (contiguous rows) in 16-byte pieces.
template <int BYTES>
__device__ __forceinline__ void flush_rows(const unsigned char* stage, unsigned char* __restrict__ dst, int rows,
                                           int lane) {
  static_assert(BYTES % 16 == 0, "rows are whole 16-byte pieces");
  constexpr int kPieces = BYTES / 16;
  __syncwarp();
  for (int i = lane; i < rows * kPieces; i += 32) {
    const int r = i / kPieces, p = i % kPieces;
    reinterpret_cast<uint4*>(dst)[i] = *reinterpret_cast<const uint4*>(stage + r * Staging<BYTES>::kStride + 16 * p);
  }
}

template <int COLS>
__device__ __forceinline__ void store_rows(float* __restrict__ dst, int64_t e0, int64_t num_edges, const Tiles& v,
                                           unsigned char* stage, int lane) {
  constexpr int BYTES = COLS * 4, STRIDE = Staging<BYTES>::kStride;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int j = 0; j < COLS / 8; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<float2*>(stage + row_of(m, 2 * h, g) * STRIDE + 4 * col_of(j, 0, t)) =
            make_float2(v[m][j][2 * h], v[m][j][2 * h + 1]);
  const int rows = int(num_edges - e0 < 16 * kM ? num_edges - e0 : 16 * kM);
  flush_rows<BYTES>(stage, reinterpret_cast<unsigned char*>(dst + e0 * COLS), rows, lane);
}

// Three bfloat16 terms per value in the split last layer's row layout [hi, hi, mid, hi, lo,
// mid] (radial_mlp.cu, store_split_tile: the same numbers).
template <int COLS>
__device__ __forceinline__ void store_split_rows(__nv_bfloat16* __restrict__ dst, int64_t e0, int64_t num_edges,
                                                 const Tiles& v, unsigned char* stage, int lane) {
  constexpr int BYTES = 6 * COLS * 2, STRIDE = Staging<BYTES>::kStride;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int j = 0; j < COLS / 8; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float* pair = &v[m][j][2 * h];
        const __nv_bfloat162 hi = __floats2bfloat162_rn(pair[0], pair[1]);
        const float r0 = pair[0] - __low2float(hi), r1 = pair[1] - __high2float(hi);
        const __nv_bfloat162 mid = __floats2bfloat162_rn(r0, r1);
        const __nv_bfloat162 lo = __floats2bfloat162_rn(r0 - __low2float(mid), r1 - __high2float(mid));
        auto* out = reinterpret_cast<__nv_bfloat16*>(stage + row_of(m, 2 * h, g) * STRIDE) + col_of(j, 0, t);
        *reinterpret_cast<__nv_bfloat162*>(out) = hi;
        *reinterpret_cast<__nv_bfloat162*>(out + COLS) = hi;
        *reinterpret_cast<__nv_bfloat162*>(out + 2 * COLS) = mid;
        *reinterpret_cast<__nv_bfloat162*>(out + 3 * COLS) = hi;
        *reinterpret_cast<__nv_bfloat162*>(out + 4 * COLS) = lo;
        *reinterpret_cast<__nv_bfloat162*>(out + 5 * COLS) = mid;
      }
  const int rows = int(num_edges - e0 < 16 * kM ? num_edges - e0 : 16 * kM);
  flush_rows<BYTES>(stage, reinterpret_cast<unsigned char*>(dst + e0 * 6 * COLS), rows, lane);
}

// Warps per block of the forward kernels: their staging areas stay <= 48 KiB.
constexpr int kForwardWarps = 2 * Staging<12 * kWidth[kLayers]>::kBytes <= 48 * 1024 ? 2 : 1;

// Layer l forward: z = c_l * (act @ W_l) into z (columns N_l).
template <int l>
__device__ __forceinline__ void layer(const float4* __restrict__ w, const Tiles& act, Tiles& z, int lane) {
  constexpr int KT = tiles(kWidth[l]), NT = kWidth[l + 1] / 8;
  product<KT, NT>(w + operand_offset(l), act, z, lane);
  const float c = float(kInvSqrtFanIn[l]);
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) z[m][j][i] *= c;
}

// SPLIT: out is [E, 6 hL] bfloat16 (store_split_rows), else [E, hL] float32.
template <bool SPLIT>
__global__ void __launch_bounds__(kForwardWarps * 32)
    trunk_forward_kernel(const float* __restrict__ x, const float4* __restrict__ w, void* __restrict__ out,
                         int64_t num_edges, float act_scale) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t e0 = (int64_t(blockIdx.x) * kForwardWarps + threadIdx.x / 32) * 16 * kM;
  if (e0 >= num_edges) return;
  Tiles act, z;
  load_rows<kWidth[0]>(x, e0, num_edges, act, g, t);
  static_for<0, kLayers>([&](auto L) {
    constexpr int l = decltype(L)::value, NT = kWidth[l + 1] / 8;
    layer<l>(w, act, z, lane);
#pragma unroll
    for (int m = 0; m < kM; ++m)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) act[m][j][i] = act_scale * silu(z[m][j][i]);
  });
  constexpr int OUT = kWidth[kLayers];
  constexpr int BYTES = SPLIT ? 6 * OUT * 2 : OUT * 4;
  __shared__ __align__(16) unsigned char stage[kForwardWarps][Staging<BYTES>::kBytes];
  if constexpr (SPLIT) {
    store_split_rows<OUT>(static_cast<__nv_bfloat16*>(out), e0, num_edges, act, stage[threadIdx.x / 32], lane);
  } else {
    store_rows<OUT>(static_cast<float*>(out), e0, num_edges, act, stage[threadIdx.x / 32], lane);
  }
}

// Blocks per multiprocessor the backward asks the compiler to fit (96 registers): for widths
// up to 64 its occupancy, not its few spills, is the limit (H100, [1.46M, 10] -> 64 -> 64 ->
// 64: 1.53 ms at 10 blocks, 1.71 at 8, 1.95 without the bound, 2.59 at 12). The forward
// gained nothing from it.
constexpr int kBackwardMinBlocks = kT <= 8 ? 10 : 1;

__global__ void __launch_bounds__(kWarps * 32, kBackwardMinBlocks)
    trunk_backward_kernel(const float* __restrict__ grad_out, const float* __restrict__ x,
                          const float4* __restrict__ w, const float4* __restrict__ wt, float* __restrict__ grad_x,
                          int64_t num_edges, float act_scale) {
  // This warp's derivative store: [hidden layer < L-1][row tile][column tile][lane] float4.
  __shared__ float4 deriv_store[kWarps][kDerivs * kM * kT * 32];
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  float4* deriv = deriv_store[threadIdx.x / 32];
  const int64_t e0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * 16 * kM;
  if (e0 >= num_edges) return;
  Tiles act, z;
  load_rows<kWidth[0]>(x, e0, num_edges, act, g, t);
  // Forward again, keeping s * silu'(z_l) of every hidden layer but the last.
  static_for<0, kLayers>([&](auto L) {
    constexpr int l = decltype(L)::value, NT = kWidth[l + 1] / 8;
    layer<l>(w, act, z, lane);
    if constexpr (l + 1 < kLayers) {
#pragma unroll
      for (int m = 0; m < kM; ++m)
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          float d[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            act[m][j][i] = act_scale * silu(z[m][j][i]);
            d[i] = act_scale * silu_grad(z[m][j][i]);
          }
          deriv[((l * kM + m) * kT + j) * 32 + lane] = make_float4(d[0], d[1], d[2], d[3]);
        }
    } else {
      // The last layer's derivative meets the upstream gradient at once.
      load_rows<kWidth[kLayers]>(grad_out, e0, num_edges, act, g, t);
#pragma unroll
      for (int m = 0; m < kM; ++m)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) act[m][j][i] *= act_scale * silu_grad(z[m][j][i]);
    }
  });
  // Back through the layers: grad_{l-1} = c_l (grad_l @ W_l^T) * deriv_{l-1}.
  static_for<0, kLayers>([&](auto M) {
    constexpr int l = kLayers - 1 - decltype(M)::value, KT = kWidth[l + 1] / 8, NT = tiles(kWidth[l]);
    product<KT, NT>(wt + operand_offset(l), act, z, lane);
    const float c = float(kInvSqrtFanIn[l]);
#pragma unroll
    for (int m = 0; m < kM; ++m)
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        float4 d = make_float4(1.f, 1.f, 1.f, 1.f);
        if constexpr (l > 0) d = deriv[(((l - 1) * kM + m) * kT + j) * 32 + lane];
        act[m][j][0] = c * z[m][j][0] * d.x;
        act[m][j][1] = c * z[m][j][1] * d.y;
        act[m][j][2] = c * z[m][j][2] * d.z;
        act[m][j][3] = c * z[m][j][3] * d.w;
      }
  });
  // grad_x [E, n0] is narrow (n0 need not fill 16-byte pieces): stored element by element.
  for_each_in_rows<kWidth[0]>(e0, num_edges, act, g, t, [&](float& x, int64_t k) { grad_x[k] = x; });
}

int64_t blocks_for(int64_t num_edges, int warps) {
  const int64_t per_block = int64_t(16) * kM * warps;
  return (num_edges + per_block - 1) / per_block;
}

}  // namespace

extern "C" TrunkDims radial_trunk_tc_dims() {
  TrunkDims dims{kLayers, {0, 0, 0, 0, 0}};
  for (int l = 0; l <= kLayers; ++l) dims.width[l] = kWidth[l];
  return dims;
}

extern "C" cudaError_t radial_trunk_tc_forward_f32(const float* x, const float* w, void* out, int split,
                                                   int64_t num_edges, double act_scale, cudaStream_t stream) {
  if (num_edges <= 0) return cudaSuccess;
  const auto operand = reinterpret_cast<const float4*>(w);
  const unsigned blocks = unsigned(blocks_for(num_edges, kForwardWarps));
  if (split) {
    trunk_forward_kernel<true><<<blocks, kForwardWarps * 32, 0, stream>>>(x, operand, out, num_edges, float(act_scale));
  } else {
    trunk_forward_kernel<false><<<blocks, kForwardWarps * 32, 0, stream>>>(x, operand, out, num_edges, float(act_scale));
  }
  return cudaGetLastError();
}

extern "C" cudaError_t radial_trunk_tc_backward_f32(const float* grad_out, const float* x, const float* w,
                                                    const float* wt, float* grad_x, int64_t num_edges,
                                                    double act_scale, cudaStream_t stream) {
  if (num_edges <= 0) return cudaSuccess;
  trunk_backward_kernel<<<unsigned(blocks_for(num_edges, kWarps)), kWarps * 32, 0, stream>>>(
      grad_out, x, reinterpret_cast<const float4*>(w), reinterpret_cast<const float4*>(wt), grad_x, num_edges,
      float(act_scale));
  return cudaGetLastError();
}
