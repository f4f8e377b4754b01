// torch binding of the generated kernels (channelwise_tp.cu, symmetric_contraction.cu).
// Compiled once; each architecture's kernels are a small shared library that
// load_*_library() opens, so a new architecture costs one nvcc run, not a torch build.
#include <dlfcn.h>

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <mutex>
#include <string>
#include <vector>

#include "channelwise_tp.h"
#include "symmetric_contraction.h"

namespace {

using Fwd32 = decltype(&tp_forward_f32);
using Fwd64 = decltype(&tp_forward_f64);
using Bwd32 = decltype(&tp_backward_f32);
using Bwd64 = decltype(&tp_backward_f64);

struct Library {
  TpDims dims;
  Fwd32 fwd32;
  Fwd64 fwd64;
  Bwd32 bwd32;
  Bwd64 bwd64;
};

std::mutex mutex;
std::vector<Library> libraries;

template <typename F>
F symbol(void* handle, const char* name, const std::string& path) {
  void* p = dlsym(handle, name);
  TORCH_CHECK(p != nullptr, "tp_aggregate: ", path, " has no symbol ", name);
  return reinterpret_cast<F>(p);
}

const Library& library(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex);
  TORCH_CHECK(id >= 0 && id < (int64_t)libraries.size(), "tp_aggregate: unknown kernel library ", id);
  return libraries[id];
}

void check(const torch::Tensor& t, const char* name, int dim, c10::ScalarType type) {
  TORCH_CHECK(t.is_cuda(), "mace_fast op: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), "mace_fast op: ", name, " must be contiguous");
  TORCH_CHECK(t.dim() == dim, "mace_fast op: ", name, " must have ", dim, " dimensions");
  TORCH_CHECK(t.scalar_type() == type, "mace_fast op: ", name, " has dtype ", t.scalar_type(), ", expected ", type);
}

void ok(cudaError_t err) { TORCH_CHECK(err == cudaSuccess, "mace_fast kernel failed: ", cudaGetErrorString(err)); }

}  // namespace

int64_t load_library(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  TORCH_CHECK(handle != nullptr, "tp_aggregate: cannot open ", path, ": ", dlerror());
  Library lib;
  lib.dims = symbol<TpDims (*)()>(handle, "tp_dims", path)();
  lib.fwd32 = symbol<Fwd32>(handle, "tp_forward_f32", path);
  lib.fwd64 = symbol<Fwd64>(handle, "tp_forward_f64", path);
  lib.bwd32 = symbol<Bwd32>(handle, "tp_backward_f32", path);
  lib.bwd64 = symbol<Bwd64>(handle, "tp_backward_f64", path);
  std::lock_guard<std::mutex> lock(mutex);
  libraries.push_back(lib);
  return (int64_t)libraries.size() - 1;
}

// rows: absent, or [E] int64 signed weight rows of edges that share weights with their
// reverse (w then has its own row count; see channelwise_tp.cu).
const int64_t* rows_of(const c10::optional<torch::Tensor>& rows, const torch::Tensor& sender, const torch::Tensor& w) {
  if (!rows.has_value() || !rows->defined()) {
    TORCH_CHECK(w.size(0) == sender.size(0), "tp_aggregate: edge counts differ");
    return nullptr;
  }
  check(*rows, "rows", 1, torch::kLong);
  TORCH_CHECK(rows->size(0) == sender.size(0) + 1, "tp_aggregate: rows must have one entry per edge and a count");
  TORCH_CHECK(w.size(0) >= 1, "tp_aggregate: shared weights need at least the zero row");
  return rows->data_ptr<int64_t>();
}

// The radial weights: w [rows, P*C]; or, with a table [n, P*C, 4] (radial_spline.py),
// w is the length of each row [rows] (then rows must be shared pair rows). Returns the
// table's data (null without one) and sets its interval count.
const void* table_of(const c10::optional<torch::Tensor>& table, const torch::Tensor& w, int64_t width,
                     const int64_t* rows, int* intervals) {
  *intervals = 0;
  if (!table.has_value() || !table->defined()) {
    check(w, "w", 2, w.scalar_type());
    TORCH_CHECK(w.size(1) == width, "tp_aggregate: weights do not match the compiled paths");
    return nullptr;
  }
  check(w, "lengths", 1, w.scalar_type());
  check(*table, "table", 3, w.scalar_type());
  TORCH_CHECK(table->size(0) >= 1 && table->size(1) == width && table->size(2) == 4,
              "tp_aggregate: the table must be [intervals, paths * channels, 4]");
  TORCH_CHECK(rows != nullptr, "tp_aggregate: a radial table needs weight rows shared by pairs");
  *intervals = (int)table->size(0);
  return table->data_ptr();
}

torch::Tensor forward(int64_t id, torch::Tensor h, torch::Tensor sh, torch::Tensor w, torch::Tensor sender,
                      torch::Tensor edge_ptr, int64_t C, c10::optional<torch::Tensor> rows,
                      c10::optional<torch::Tensor> table, double r_max) {
  const Library& lib = library(id);
  const TpDims d = lib.dims;
  const auto t = h.scalar_type();
  check(h, "h", 2, t); check(sh, "sh", 2, t);
  TORCH_CHECK(w.scalar_type() == t, "tp_aggregate: weights have dtype ", w.scalar_type(), ", expected ", t);
  check(sender, "sender", 1, torch::kLong); check(edge_ptr, "edge_ptr", 1, torch::kLong);
  TORCH_CHECK(h.size(1) == d.f_in && sh.size(1) == d.s, "tp_aggregate: shapes do not match the compiled paths");
  TORCH_CHECK(C > 0 && C <= 1024, "tp_aggregate: 1..1024 channels");
  TORCH_CHECK(edge_ptr.size(0) == h.size(0) + 1, "tp_aggregate: edge_ptr must have N+1 entries");
  TORCH_CHECK(sender.size(0) == sh.size(0), "tp_aggregate: edge counts differ");
  const int64_t* r = rows_of(rows, sender, w);
  int intervals;
  const void* coef = table_of(table, w, d.paths * C, r, &intervals);
  const c10::cuda::CUDAGuard guard(h.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto out = torch::empty({h.size(0), d.f_mid}, h.options());
  if (t == torch::kFloat) {
    ok(lib.fwd32(h.data_ptr<float>(), sh.data_ptr<float>(), w.data_ptr<float>(), static_cast<const float*>(coef),
                 intervals, r_max, sender.data_ptr<int64_t>(), edge_ptr.data_ptr<int64_t>(), r,
                 out.data_ptr<float>(), h.size(0), (int)C, stream));
  } else {
    TORCH_CHECK(t == torch::kDouble, "tp_aggregate: float32 or float64 only");
    ok(lib.fwd64(h.data_ptr<double>(), sh.data_ptr<double>(), w.data_ptr<double>(), static_cast<const double*>(coef),
                 intervals, r_max, sender.data_ptr<int64_t>(), edge_ptr.data_ptr<int64_t>(), r,
                 out.data_ptr<double>(), h.size(0), (int)C, stream));
  }
  return out;
}

std::vector<torch::Tensor> backward(int64_t id, torch::Tensor grad_out, torch::Tensor h, torch::Tensor sh,
                                    torch::Tensor w, torch::Tensor sender, torch::Tensor receiver,
                                    torch::Tensor edge_ptr, torch::Tensor sender_perm, torch::Tensor sender_ptr,
                                    int64_t C, bool grad_into_w, c10::optional<torch::Tensor> symmetric,
                                    c10::optional<torch::Tensor> rows, c10::optional<torch::Tensor> table,
                                    double r_max) {
  const Library& lib = library(id);
  const auto t = h.scalar_type();
  check(grad_out, "grad_out", 2, t); check(h, "h", 2, t); check(sh, "sh", 2, t);
  TORCH_CHECK(w.scalar_type() == t, "tp_aggregate: weights have dtype ", w.scalar_type(), ", expected ", t);
  check(receiver, "receiver", 1, torch::kLong); check(sender_perm, "sender_perm", 1, torch::kLong);
  check(sender_ptr, "sender_ptr", 1, torch::kLong);
  // symmetric: a device flag [1] int32, nonzero when every edge has its reverse (then one
  // receiver-major pass gives all gradients); computed on the device, read by the kernels.
  const int* sym = nullptr;
  if (symmetric.has_value() && symmetric->defined()) {
    check(*symmetric, "symmetric", 1, torch::kInt);
    TORCH_CHECK(symmetric->numel() == 1, "tp_aggregate backward: symmetric must be one flag");
    sym = symmetric->data_ptr<int>();
  }
  TORCH_CHECK(grad_out.size(1) == lib.dims.f_mid, "tp_aggregate backward: gradient has the wrong width");
  const int64_t* r = rows_of(rows, sender, w);
  TORCH_CHECK(r == nullptr || !grad_into_w, "tp_aggregate backward: shared weight rows cannot take their gradient");
  int intervals;
  const void* coef = table_of(table, w, lib.dims.paths * C, r, &intervals);
  const c10::cuda::CUDAGuard guard(h.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto grad_h = torch::empty_like(h);
  auto grad_sh = torch::empty_like(sh);
  // grad_into_w: the weights' gradient overwrites the weights (each edge's row is read
  // before it is written), saving a [E, P*C] buffer when nothing needs the weights after.
  // Shared rows: only the rows that an edge owns get a gradient; row 0 (the zero row of
  // edges beyond the cutoff) and spare rows get zeros. With a table: the lengths' gradient.
  auto grad_w = grad_into_w ? w : torch::empty_like(w);
  const int64_t num_edges = sender.size(0), num_rows = w.size(0);
  // Shared rows: scratch for the feature gradients that a pair's owner computes for the
  // other end of the pair (one row per pair; channelwise_tp.cu, tp_backward_pairs_kernel).
  auto pair_gh = r != nullptr ? torch::empty({num_rows, (int64_t)lib.dims.f_in}, h.options()) : torch::Tensor();
  const int64_t n = h.size(0);
  if (t == torch::kFloat) {
    ok(lib.bwd32(grad_out.data_ptr<float>(), h.data_ptr<float>(), sh.data_ptr<float>(), w.data_ptr<float>(),
                 static_cast<const float*>(coef), intervals, r_max, sender.data_ptr<int64_t>(),
                 receiver.data_ptr<int64_t>(), edge_ptr.data_ptr<int64_t>(), sender_perm.data_ptr<int64_t>(),
                 sender_ptr.data_ptr<int64_t>(), sym, r, num_edges, num_rows,
                 grad_h.data_ptr<float>(), grad_sh.data_ptr<float>(), grad_w.data_ptr<float>(),
                 r != nullptr ? pair_gh.data_ptr<float>() : nullptr, n, (int)C, stream));
  } else {
    ok(lib.bwd64(grad_out.data_ptr<double>(), h.data_ptr<double>(), sh.data_ptr<double>(), w.data_ptr<double>(),
                 static_cast<const double*>(coef), intervals, r_max, sender.data_ptr<int64_t>(),
                 receiver.data_ptr<int64_t>(), edge_ptr.data_ptr<int64_t>(), sender_perm.data_ptr<int64_t>(),
                 sender_ptr.data_ptr<int64_t>(), sym, r, num_edges, num_rows,
                 grad_h.data_ptr<double>(), grad_sh.data_ptr<double>(), grad_w.data_ptr<double>(),
                 r != nullptr ? pair_gh.data_ptr<double>() : nullptr, n, (int)C, stream));
  }
  return {grad_h, grad_sh, grad_w};
}

// ---- symmetric contraction ------------------------------------------------------------

namespace {

struct ScLibrary {
  ScDims dims;
  decltype(&sc_forward_f32) fwd32;
  decltype(&sc_forward_f64) fwd64;
  decltype(&sc_backward_f32) bwd32;
  decltype(&sc_backward_f64) bwd64;
};

std::vector<ScLibrary> sc_libraries;

const ScLibrary& sc_library(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex);
  TORCH_CHECK(id >= 0 && id < (int64_t)sc_libraries.size(), "symmetric_contraction: unknown kernel library ", id);
  return sc_libraries[id];
}

// x [N, C, D]: contiguous, or a permuted view of a contiguous [D, N, C] (component-major).
ScStrides sc_strides(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 3, "symmetric_contraction: ", name, " must be a 3-d CUDA tensor");
  const bool component_major = x.permute({2, 0, 1}).is_contiguous();
  TORCH_CHECK(x.is_contiguous() || component_major,
              "symmetric_contraction: ", name, " must be contiguous [N, C, D] or a view of a contiguous [D, N, C]");
  return ScStrides{x.stride(0), x.stride(1), x.stride(2)};
}

}  // namespace

int64_t load_sc_library(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  TORCH_CHECK(handle != nullptr, "symmetric_contraction: cannot open ", path, ": ", dlerror());
  ScLibrary lib;
  lib.dims = symbol<ScDims (*)()>(handle, "sc_dims", path)();
  lib.fwd32 = symbol<decltype(&sc_forward_f32)>(handle, "sc_forward_f32", path);
  lib.fwd64 = symbol<decltype(&sc_forward_f64)>(handle, "sc_forward_f64", path);
  lib.bwd32 = symbol<decltype(&sc_backward_f32)>(handle, "sc_backward_f32", path);
  lib.bwd64 = symbol<decltype(&sc_backward_f64)>(handle, "sc_backward_f64", path);
  std::lock_guard<std::mutex> lock(mutex);
  sc_libraries.push_back(lib);
  return (int64_t)sc_libraries.size() - 1;
}

torch::Tensor sc_forward(int64_t id, torch::Tensor x, torch::Tensor element, torch::Tensor weight) {
  const ScLibrary& lib = sc_library(id);
  const auto t = x.scalar_type();
  const ScStrides xs = sc_strides(x, "x");
  check(element, "element", 1, torch::kLong); check(weight, "weight", 3, t);
  const int64_t n = x.size(0), C = x.size(1);
  TORCH_CHECK(x.size(2) == lib.dims.d && weight.size(1) == lib.dims.k && weight.size(2) == C,
              "symmetric_contraction: shapes do not match the compiled basis");
  TORCH_CHECK(C <= 1024 && element.size(0) == n, "symmetric_contraction: bad channel count or element vector");
  const c10::cuda::CUDAGuard guard(x.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto out = torch::empty({n, lib.dims.f_out}, x.options());
  if (t == torch::kFloat) {
    ok(lib.fwd32(x.data_ptr<float>(), element.data_ptr<int64_t>(), weight.data_ptr<float>(), out.data_ptr<float>(),
                 n, (int)C, xs, stream));
  } else {
    TORCH_CHECK(t == torch::kDouble, "symmetric_contraction: float32 or float64 only");
    ok(lib.fwd64(x.data_ptr<double>(), element.data_ptr<int64_t>(), weight.data_ptr<double>(),
                 out.data_ptr<double>(), n, (int)C, xs, stream));
  }
  return out;
}

torch::Tensor sc_backward(int64_t id, torch::Tensor grad_out, torch::Tensor x, torch::Tensor element,
                          torch::Tensor weight) {
  const ScLibrary& lib = sc_library(id);
  const auto t = x.scalar_type();
  check(grad_out, "grad_out", 2, t); check(weight, "weight", 3, t);
  const ScStrides xs = sc_strides(x, "x");
  TORCH_CHECK(grad_out.size(1) == lib.dims.f_out, "symmetric_contraction backward: gradient has the wrong width");
  const c10::cuda::CUDAGuard guard(x.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t n = x.size(0), C = x.size(1), D = x.size(2);
  // grad_x in the layout of x: the kernel indexes both with the strides of x.
  auto grad_x = x.is_contiguous() ? torch::empty({n, C, D}, x.options())
                                  : torch::empty({D, n, C}, x.options()).permute({1, 2, 0});
  if (t == torch::kFloat) {
    ok(lib.bwd32(grad_out.data_ptr<float>(), x.data_ptr<float>(), element.data_ptr<int64_t>(),
                 weight.data_ptr<float>(), grad_x.data_ptr<float>(), n, (int)C, xs, stream));
  } else {
    ok(lib.bwd64(grad_out.data_ptr<double>(), x.data_ptr<double>(), element.data_ptr<int64_t>(),
                 weight.data_ptr<double>(), grad_x.data_ptr<double>(), n, (int)C, xs, stream));
  }
  return grad_x;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("load_library", &load_library, "open one architecture's kernel library; returns its id");
  m.def("forward", &forward, "channel-wise tensor product + receiver aggregation");
  m.def("backward", &backward, "gradients of the channel-wise tensor product");
  m.def("load_sc_library", &load_sc_library, "open one architecture's symmetric-contraction library");
  m.def("sc_forward", &sc_forward, "symmetric contraction");
  m.def("sc_backward", &sc_backward, "gradient of the symmetric contraction with respect to its input");
}
