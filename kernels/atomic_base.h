// Host interface of the atomic-base kernels (atomic_base.cu, one build per width and lmax).
// Pointers are device pointers to contiguous arrays; sender and edge_ptr are int64, slot int32.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

// extern "C": the ctypes op (mace_fast/ops/atomic_base.py) finds these by name.
extern "C" {

// The radial width K and the number of harmonics S this library was generated for.
int atomic_base_width();
int atomic_base_num_sh();

// radial [E, K], sh [E, S] -> base [S, N, num_slots * K]:
// base[s, i, q * K + k] = sum over edges e into i whose sender j has slot[j] == q of
// radial[e, k] * sh[e, s]. Edges are sorted by receiver; edge_ptr [N + 1] is the CSR pointer.
cudaError_t atomic_base_forward_f32(const float* radial, const float* sh, const int64_t* sender,
                                    const int64_t* edge_ptr, const int32_t* slot, float* base, int64_t num_nodes,
                                    int num_slots, cudaStream_t stream);
cudaError_t atomic_base_forward_f64(const double* radial, const double* sh, const int64_t* sender,
                                    const int64_t* edge_ptr, const int32_t* slot, double* base, int64_t num_nodes,
                                    int num_slots, cudaStream_t stream);

// grad_base [S, N, num_slots * K] -> grad_radial [E, K], grad_sh [E, S] (all E = num_edges
// rows written: zero for edges outside every receiver's range).
cudaError_t atomic_base_backward_f32(const float* grad_base, const float* radial, const float* sh,
                                     const int64_t* sender, const int64_t* edge_ptr, const int32_t* slot,
                                     float* grad_radial, float* grad_sh, int64_t num_nodes, int num_slots,
                                     int64_t num_edges, cudaStream_t stream);
cudaError_t atomic_base_backward_f64(const double* grad_base, const double* radial, const double* sh,
                                     const int64_t* sender, const int64_t* edge_ptr, const int32_t* slot,
                                     double* grad_radial, double* grad_sh, int64_t num_nodes, int num_slots,
                                     int64_t num_edges, cudaStream_t stream);

}  // extern "C"
