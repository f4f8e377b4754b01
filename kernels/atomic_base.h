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
// rows (null, or [E + 1] signed rows of mace_fast/ops/edge_pairs.py): edge e reads radial
// row |rows[e]| of a per-pair radial [M, K] instead of row e.
cudaError_t atomic_base_forward_f32(const float* radial, const float* sh, const int64_t* sender,
                                    const int64_t* edge_ptr, const int32_t* slot, const int64_t* rows, float* base,
                                    int64_t num_nodes, int num_slots, cudaStream_t stream);
cudaError_t atomic_base_forward_f64(const double* radial, const double* sh, const int64_t* sender,
                                    const int64_t* edge_ptr, const int32_t* slot, const int64_t* rows, double* base,
                                    int64_t num_nodes, int num_slots, cudaStream_t stream);

// grad_base [S, N, num_slots * K] -> grad_radial [E, K], grad_sh [E, S] (all E = num_edges
// rows written: zero for edges outside every receiver's range). With rows: grad_radial is
// [2, M, K] (M = num_rows), half 0 the owners' gradients, half 1 the reverse edges'; rows
// that no edge owns are zero in both halves.
cudaError_t atomic_base_backward_f32(const float* grad_base, const float* radial, const float* sh,
                                     const int64_t* sender, const int64_t* edge_ptr, const int32_t* slot,
                                     const int64_t* rows, float* grad_radial, float* grad_sh, int64_t num_nodes,
                                     int num_slots, int64_t num_edges, int64_t num_rows, cudaStream_t stream);
cudaError_t atomic_base_backward_f64(const double* grad_base, const double* radial, const double* sh,
                                     const int64_t* sender, const int64_t* edge_ptr, const int32_t* slot,
                                     const int64_t* rows, double* grad_radial, double* grad_sh, int64_t num_nodes,
                                     int num_slots, int64_t num_edges, int64_t num_rows, cudaStream_t stream);

}  // extern "C"
