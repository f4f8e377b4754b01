// Host interface of the edge-embedding kernels (edge_embedding.cu, one build per lmax).
// Pointers are device pointers to contiguous arrays of the working precision.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

// extern "C": the ctypes op (mace_fast/ops/edge_embedding.py) finds these by name.
extern "C" {

// The lmax this library was generated for (sh has (lmax + 1)^2 components).
int edge_embedding_lmax();

// vectors [E, 3] -> sh [E, S], feats [E, num_basis], cutoff [E] (the envelope).
// bessel_weights [num_basis], prefactor [1]: the BesselBasis buffers. With apply_cutoff,
// feats are the Bessel functions times the envelope, otherwise the Bessel functions.
cudaError_t edge_embedding_forward_f32(const float* vectors, const float* bessel_weights, const float* prefactor,
                                       float* sh, float* feats, float* cutoff, int64_t num_edges, int num_basis,
                                       double r_max, int p, int apply_cutoff, cudaStream_t stream);
cudaError_t edge_embedding_forward_f64(const double* vectors, const double* bessel_weights, const double* prefactor,
                                       double* sh, double* feats, double* cutoff, int64_t num_edges, int num_basis,
                                       double r_max, int p, int apply_cutoff, cudaStream_t stream);

// grad_vectors [E, 3] from grad_sh [E, S], grad_feats [E, num_basis], grad_cutoff [E];
// a null gradient pointer stands for zeros.
cudaError_t edge_embedding_backward_f32(const float* vectors, const float* bessel_weights, const float* prefactor,
                                        const float* grad_sh, const float* grad_feats, const float* grad_cutoff,
                                        float* grad_vectors, int64_t num_edges, int num_basis, double r_max, int p,
                                        int apply_cutoff, cudaStream_t stream);
cudaError_t edge_embedding_backward_f64(const double* vectors, const double* bessel_weights, const double* prefactor,
                                        const double* grad_sh, const double* grad_feats, const double* grad_cutoff,
                                        double* grad_vectors, int64_t num_edges, int num_basis, double r_max, int p,
                                        int apply_cutoff, cudaStream_t stream);

}  // extern "C"
