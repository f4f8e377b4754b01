// Host interface of the generated channel-wise tensor-product kernels (one build per
// architecture; see channelwise_tp.cu). Pointers are device pointers to contiguous arrays.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

struct TpDims {
  int f_in;   // features per node going in  (sum over blocks of C * (2l+1))
  int s;      // spherical-harmonic components per edge
  int f_mid;  // aggregated message features per node
  int paths;  // number of coupling paths (weights per edge = paths * C)
};

// extern "C": the binding finds these by name in each architecture's shared library.
extern "C" {

TpDims tp_dims();

cudaError_t tp_forward_f32(const float* h, const float* sh, const float* w, const int64_t* sender,
                           const int64_t* edge_ptr, float* out, int64_t num_nodes, int C, cudaStream_t stream);
cudaError_t tp_forward_f64(const double* h, const double* sh, const double* w, const int64_t* sender,
                           const int64_t* edge_ptr, double* out, int64_t num_nodes, int C, cudaStream_t stream);
// symmetric: null, or a device int that is nonzero when every edge has its reverse (same
// nodes swapped, opposite vector); then the feature gradient comes from the receiver-major
// pass over each weight row that also gives the weights' gradient (channelwise_tp.cu).
cudaError_t tp_backward_f32(const float* grad_out, const float* h, const float* sh, const float* w,
                            const int64_t* sender, const int64_t* receiver, const int64_t* edge_ptr,
                            const int64_t* sender_perm, const int64_t* sender_ptr, const int* symmetric,
                            float* grad_h, float* grad_sh, float* grad_w, int64_t num_nodes, int C,
                            cudaStream_t stream);
cudaError_t tp_backward_f64(const double* grad_out, const double* h, const double* sh, const double* w,
                            const int64_t* sender, const int64_t* receiver, const int64_t* edge_ptr,
                            const int64_t* sender_perm, const int64_t* sender_ptr, const int* symmetric,
                            double* grad_h, double* grad_sh, double* grad_w, int64_t num_nodes, int C,
                            cudaStream_t stream);

}  // extern "C"
