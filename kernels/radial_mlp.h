// Host interface of the generated radial-MLP trunk kernels (one build per set of widths;
// see radial_mlp.cu). Pointers are device pointers to contiguous row-major arrays:
//   x        [E, n0]          radial features
//   w0 .. w3 [fan_in, fan_out] the raw hidden-layer weights (not divided by sqrt(fan_in));
//                              unused layers may be null; 16-byte aligned
//   out      [E, hL]          trunk output (after the last hidden activation)
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

struct TrunkDims {
  int layers;    // hidden layers in the trunk (1..4)
  int width[5];  // n0, h1, ..., hL (zeros past the last)
};

// extern "C": called through ctypes (mace_fast/ops/radial_mlp.py).
extern "C" {

TrunkDims radial_trunk_dims();

cudaError_t radial_trunk_forward_f32(const float* x, const float* w0, const float* w1, const float* w2,
                                     const float* w3, float* out, int64_t num_edges, double act_scale,
                                     cudaStream_t stream);
cudaError_t radial_trunk_forward_f64(const double* x, const double* w0, const double* w1, const double* w2,
                                     const double* w3, double* out, int64_t num_edges, double act_scale,
                                     cudaStream_t stream);
// The float32 trunk output as three bfloat16 terms, out [E, 6 * hL] bfloat16 in the row
// layout [hi, hi, mid, hi, lo, mid] (for the split last layer, see radial_mlp.cu).
cudaError_t radial_trunk_forward_split_f32(const float* x, const float* w0, const float* w1, const float* w2,
                                           const float* w3, void* out, int64_t num_edges, double act_scale,
                                           cudaStream_t stream);
// grad_x = d(trunk)/dx^T grad_out; the forward is recomputed inside (nothing is stored).
cudaError_t radial_trunk_backward_f32(const float* grad_out, const float* x, const float* w0, const float* w1,
                                      const float* w2, const float* w3, float* grad_x, int64_t num_edges,
                                      double act_scale, cudaStream_t stream);
cudaError_t radial_trunk_backward_f64(const double* grad_out, const double* x, const double* w0,
                                      const double* w1, const double* w2, const double* w3, double* grad_x,
                                      int64_t num_edges, double act_scale, cudaStream_t stream);

}  // extern "C"
