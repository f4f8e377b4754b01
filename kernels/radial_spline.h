// Host interface of the radial-spline kernels (radial_spline.cu). Pointers are device
// pointers to contiguous arrays; order is int32 (or null: rows in index order).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

// extern "C": the ctypes op (mace_fast/ops/radial_spline.py) finds these by name.
extern "C" {

// r [M] -> out [M, P]: out[m, p] = a + t (b + t (c + t d)) with (a, b, c, d) = table[k, p],
// x = r[m] * scale (scale = intervals / r_max), k = floor(x) clamped to [0, intervals - 1],
// t = x - k; zero where r[m] >= r_max. Rows are visited in the order `order` gives.
cudaError_t radial_spline_forward_f32(const float* r, const int32_t* order, const float* table, float* out,
                                      int64_t num_rows, int P, int intervals, float r_max, float scale,
                                      cudaStream_t stream);
cudaError_t radial_spline_forward_f64(const double* r, const int32_t* order, const double* table, double* out,
                                      int64_t num_rows, int P, int intervals, double r_max, double scale,
                                      cudaStream_t stream);

// grad_out [M, P] -> grad_r [M]: grad_r[m] = scale * sum_p grad_out[m, p] (b + t (2 c + 3 t d))_p,
// zero where r[m] >= r_max.
cudaError_t radial_spline_backward_f32(const float* grad_out, const float* r, const int32_t* order,
                                       const float* table, float* grad_r, int64_t num_rows, int P, int intervals,
                                       float r_max, float scale, cudaStream_t stream);
cudaError_t radial_spline_backward_f64(const double* grad_out, const double* r, const int32_t* order,
                                       const double* table, double* grad_r, int64_t num_rows, int P, int intervals,
                                       double r_max, double scale, cudaStream_t stream);

}  // extern "C"
