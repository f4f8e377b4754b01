// Host interface of the generated symmetric-contraction kernels (symmetric_contraction.cu).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

struct ScDims {
  int d;      // components per channel going in (sum over l of 2l+1)
  int k;      // weights per element and channel (all output blocks and degrees)
  int f_out;  // output features per node
};

// Element strides of x [N, C, D] (and of grad_x, laid out the same way).
struct ScStrides {
  int64_t node, channel, component;
};

extern "C" {

ScDims sc_dims();
cudaError_t sc_forward_f32(const float* x, const int64_t* element, const float* weight, float* out,
                           int64_t num_nodes, int C, ScStrides xs, cudaStream_t stream);
cudaError_t sc_forward_f64(const double* x, const int64_t* element, const double* weight, double* out,
                           int64_t num_nodes, int C, ScStrides xs, cudaStream_t stream);
cudaError_t sc_backward_f32(const float* grad_out, const float* x, const int64_t* element, const float* weight,
                            float* grad_x, int64_t num_nodes, int C, ScStrides xs, cudaStream_t stream);
cudaError_t sc_backward_f64(const double* grad_out, const double* x, const int64_t* element, const double* weight,
                            double* grad_x, int64_t num_nodes, int C, ScStrides xs, cudaStream_t stream);

}  // extern "C"
