// The signed row index of per-pair tables (mace_fast/ops/edge_pairs.py), as kernels read it.
//
// rows [E + 1]: +r for the edge of a pair that owns row r, -r for its reverse, 0 for edges at
// or beyond the cutoff (row 0 is all zeros); then the number of rows in use, 1..rows[E]. Rows
// past that, and row 0, belong to no edge ("spare"): a backward writes zeros there.
#pragma once
#include <cstdint>

// The row of a signed row index.
__device__ __forceinline__ int64_t pair_row(int64_t signed_row) { return signed_row < 0 ? -signed_row : signed_row; }

// The row edge e reads: e itself when rows is null (one row per edge), else its pair's row.
__device__ __forceinline__ int64_t edge_row(const int64_t* __restrict__ rows, int64_t e) {
  return rows == nullptr ? e : pair_row(rows[e]);
}

// The t-th spare row, t in [0, num_rows - used): row 0, then the rows past the used ones, so
// that a loop over spare rows never visits a row in use.
__device__ __forceinline__ int64_t spare_row(int64_t used, int64_t t) { return t == 0 ? 0 : used + t; }
