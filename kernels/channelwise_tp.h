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

// rows: null (weight row e for edge e), or the signed weight row of each edge when an edge
// and its reverse share one (see channelwise_tp.cu and mace_fast/ops/edge_pairs.py).
// coef: null (w holds the weights), or a radial table [intervals, P*C, 4] on [0, r_max]
// (mace_fast/ops/radial_spline.py); then w is each weight row's length [M], the kernels
// evaluate the weights from the table, and rows must be set.
cudaError_t tp_forward_f32(const float* h, const float* sh, const float* w, const float* coef, int intervals,
                           double r_max, const int64_t* sender, const int64_t* edge_ptr, const int64_t* rows,
                           float* out, int64_t num_nodes, int C, cudaStream_t stream);
cudaError_t tp_forward_f64(const double* h, const double* sh, const double* w, const double* coef, int intervals,
                           double r_max, const int64_t* sender, const int64_t* edge_ptr, const int64_t* rows,
                           double* out, int64_t num_nodes, int C, cudaStream_t stream);
// symmetric: null, or a device int that is nonzero when every edge has its reverse (same
// nodes swapped, opposite vector); then the feature gradient comes from the receiver-major
// pass over each weight row that also gives the weights' gradient (channelwise_tp.cu).
// rows: as for the forward ([num_edges + 1]: the last entry is the number of rows in use);
// when set the graph must be symmetric (symmetric is not read), grad_w ([num_rows, P*C],
// not w itself) receives one gradient row per pair, zeros in the rows no edge owns, and
// pair_gh ([num_rows, f_in], scratch) carries the feature gradients between the pair
// backward's two kernels. Without rows, pair_gh is unused (may be null).
// coef: as for the forward; then grad_w is the gradient of the rows' lengths [M].
cudaError_t tp_backward_f32(const float* grad_out, const float* h, const float* sh, const float* w,
                            const float* coef, int intervals, double r_max, const int64_t* sender, const int64_t* receiver,
                            const int64_t* edge_ptr, const int64_t* sender_perm, const int64_t* sender_ptr, const int* symmetric,
                            const int64_t* rows, int64_t num_edges, int64_t num_rows, float* grad_h, float* grad_sh,
                            float* grad_w, float* pair_gh, int64_t num_nodes, int C,
                            cudaStream_t stream);
cudaError_t tp_backward_f64(const double* grad_out, const double* h, const double* sh, const double* w,
                            const double* coef, int intervals, double r_max, const int64_t* sender, const int64_t* receiver,
                            const int64_t* edge_ptr, const int64_t* sender_perm, const int64_t* sender_ptr, const int* symmetric,
                            const int64_t* rows, int64_t num_edges, int64_t num_rows, double* grad_h, double* grad_sh,
                            double* grad_w, double* pair_gh, int64_t num_nodes, int C,
                            cudaStream_t stream);

}  // extern "C"
