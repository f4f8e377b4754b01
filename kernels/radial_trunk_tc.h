// Host interface of the float32 tensor-core radial trunk (radial_trunk_tc.cu; one build per
// set of widths). Device pointers, contiguous, 16-byte aligned:
//   x       [E, n0]   radial features
//   w       the hidden layers' prepared operands (tf32x3.cuh) of W_l [fan_in, fan_out], raw
//           (not divided by sqrt(fan_in)), concatenated over l
//   wt      the same for W_l^T [fan_out, fan_in]
//   out     [E, hL] float32, or with split != 0 [E, 6 hL] bfloat16 in the split last layer's
//           row layout [hi, hi, mid, hi, lo, mid] (radial_mlp.h)
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

#include "radial_mlp.h"  // TrunkDims

// extern "C": called through ctypes (mace_fast/ops/tensor_cores.py).
extern "C" {

TrunkDims radial_trunk_tc_dims();
cudaError_t radial_trunk_tc_forward_f32(const float* x, const float* w, void* out, int split, int64_t num_edges,
                                        double act_scale, cudaStream_t stream);
// grad_x = d(trunk)/dx^T grad_out; the forward is recomputed inside (nothing is stored).
cudaError_t radial_trunk_tc_backward_f32(const float* grad_out, const float* x, const float* w, const float* wt,
                                         float* grad_x, int64_t num_edges, double act_scale, cudaStream_t stream);

}  // extern "C"
