// Cubics of a radial table (mace_fast/ops/radial_spline.py) as kernels evaluate them: the
// spline kernels (radial_spline.cu) and the tensor-product kernels that evaluate an edge's
// weights where they use them (channelwise_tp.cu) share these, so both give the same numbers.
//
// The table is [intervals, P, 4]: interval k holds, for each of the P outputs, the
// coefficients (a, b, c, d) of f = a + b t + c t^2 + d t^3 in t = r * scale - k, side by side
// so that one 16-byte load (float32) reads all four.
#pragma once
#include <cstdint>

template <typename T>
struct alignas(4 * sizeof(T)) Cubic {
  T a, b, c, d;
};

// The cubics of the interval of x = r * scale ([P] of them), and the position t in it. A NaN
// x keeps t NaN (so that an invalid step shows), never a wrong index: the interval is
// clamped as a float, where fmax/fmin drop the NaN.
template <typename T>
__device__ __forceinline__ const Cubic<T>* spline_interval(const T* table, T x, int intervals, int P, T* t) {
  const T k = fmin(fmax(floor(x), T(0)), T(intervals - 1));
  *t = x - k;
  return reinterpret_cast<const Cubic<T>*>(table) + static_cast<int64_t>(k) * P;
}

template <typename T>
__device__ __forceinline__ T spline_value(const Cubic<T>& q, T t) {
  return q.a + t * (q.b + t * (q.c + t * q.d));
}

// df/dt (times scale: df/dr).
template <typename T>
__device__ __forceinline__ T spline_slope(const Cubic<T>& q, T t) {
  return q.b + t * (T(2) * q.c + T(3) * t * q.d);
}
