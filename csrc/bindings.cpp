// The only file that includes pybind11. Functions take integers (data pointers, sizes) so the
// module needs neither torch nor numpy headers; the Python layer (perceptrons.ops,
// perceptrons.kernels) validates tensors and passes their pointers. The GIL is released around
// every kernel, and kernel status codes become Python exceptions.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/build_info.h"
#include "common/cpu_isa.h"
#include "common/cuda_device.h"
#include "encodings/encodings.h"
#include "kan/kan.h"
#include "mlp/mlp.h"
#include "mlp/mlp_cpu_layout.h"
#include "mlp/mlp_cuda_layout.h"
#include "routed/routed.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace perceptrons;

namespace {

void raise_on(Status s, const char* where) {
  if (s == Status::Ok) return;
  std::string msg = std::string(where) + ": " + status_message(s);
  if (s == Status::CudaError) throw std::runtime_error(msg + " (" + cuda_error_detail() + ")");
  if (s == Status::OutOfMemory) throw std::bad_alloc();
  if (s == Status::NotCompiled) throw std::runtime_error(msg);
  throw py::value_error(msg);
}

template <typename T>
const void* ptr(T v) {
  return reinterpret_cast<const void*>(static_cast<uintptr_t>(v));
}

// cuda: the configuration is for the CUDA backend (float16/bfloat16, its own limits).
mlp::MlpConfig make_config(int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act,
                           double out_p, bool cuda = false) {
  if (widths.size() < 2) throw py::value_error("widths: expected at least 2 entries (in, out)");
  if (widths.size() - 1 > size_t(mlp::kMaxLayers))
    throw py::value_error("widths: at most " + std::to_string(mlp::kMaxLayers) + " layers are supported, got " +
                          std::to_string(widths.size() - 1));
  mlp::MlpConfig c;
  c.n_layers = int(widths.size()) - 1;
  for (size_t i = 0; i < widths.size(); ++i) {
    if (widths[i] < 1 || widths[i] > INT32_MAX)
      throw py::value_error("widths[" + std::to_string(i) + "]: expected a positive width, got " + std::to_string(widths[i]));
    c.widths[i] = int(widths[i]);
  }
  if (!activation_valid(act)) throw py::value_error("activation: unknown code " + std::to_string(act));
  if (!activation_valid(out_act)) throw py::value_error("output_activation: unknown code " + std::to_string(out_act));
  if (!cuda && dtype != 0 && dtype != 1)
    throw py::value_error("dtype: expected 0 (float32) or 1 (float64), got " + std::to_string(dtype));
  if (cuda && dtype != 2 && dtype != 3)
    throw py::value_error("dtype: expected 2 (float16) or 3 (bfloat16), got " + std::to_string(dtype));
  c.activation = Activation(act);
  c.activation_param = act_p;
  c.output_activation = Activation(out_act);
  c.output_activation_param = out_p;
  c.dtype = mlp::DType(dtype);
  raise_on(cuda ? mlp::cuda_layout::cuda_supported(c) : mlp::validate_config(c), "mlp config");
  return c;
}

// An encoding as the flat list the Python layer builds (perceptrons.kernels.encodings.EncodingSpec.codes):
// [n_ones, then per part: kind, n_dims, n, scale, offset]. An empty list: no encoding.
enc::EncodingConfig encoding_from_codes(const std::vector<double>& codes) {
  enc::EncodingConfig c;
  if (codes.empty()) return c;
  if ((codes.size() - 1) % 5 != 0 || codes.size() < 6)
    throw py::value_error("encoding: expected [n_ones, (kind, n_dims, n, scale, offset) per part], got " +
                          std::to_string(codes.size()) + " numbers");
  const size_t parts = (codes.size() - 1) / 5;
  if (parts > size_t(enc::kMaxParts))
    throw py::value_error("encoding: at most " + std::to_string(enc::kMaxParts) + " parts, got " + std::to_string(parts));
  auto as_int = [](double v, const char* what) {
    if (!(v >= 0 && v <= 1048576.0) || v != double(int(v)))
      throw py::value_error(std::string("encoding: ") + what + " must be an integer in 0..2^20");
    return int(v);
  };
  c.n_ones = as_int(codes[0], "n_ones");
  c.n_parts = int(parts);
  for (size_t p = 0; p < parts; ++p) {
    const double* q = codes.data() + 1 + 5 * p;
    const int kind = as_int(q[0], "kind");
    if (kind > int(enc::Kind::OneBlob)) throw py::value_error("encoding: unknown kind " + std::to_string(kind));
    c.parts[p].kind = enc::Kind(kind);
    c.parts[p].n_dims = as_int(q[1], "n_dims");
    c.parts[p].n = as_int(q[2], "n");
    c.parts[p].scale = q[3];
    c.parts[p].offset = q[4];
  }
  raise_on(enc::validate_encoding(c), "encoding");
  return c;
}

// The standalone encoding kernels need at least one part.
enc::EncodingConfig nonempty_encoding(const std::vector<double>& codes) {
  const enc::EncodingConfig c = encoding_from_codes(codes);
  if (c.n_parts == 0) throw py::value_error("encoding: expected at least one part, got none");
  return c;
}

// Adds the encoding to an MLP config made by make_config and checks that the two fit together.
void set_encoding(mlp::MlpConfig& c, const std::vector<double>& codes) {
  c.encoding = encoding_from_codes(codes);
  if (mlp::has_encoding(c) && enc::n_outputs(c.encoding) != c.widths[0])
    throw py::value_error("encoding: produces " + std::to_string(enc::n_outputs(c.encoding)) +
                          " columns but widths[0] is " + std::to_string(c.widths[0]));
  raise_on(mlp::validate_config(c), "mlp config");
}

void fill_params(mlp::MlpParams& p, const mlp::MlpConfig& c, const std::vector<uint64_t>& weights,
                 const std::vector<uint64_t>& biases) {
  if (weights.size() != size_t(c.n_layers))
    throw py::value_error("weights: expected " + std::to_string(c.n_layers) + " pointers, got " + std::to_string(weights.size()));
  if (!biases.empty() && biases.size() != size_t(c.n_layers))
    throw py::value_error("biases: expected " + std::to_string(c.n_layers) + " pointers (0 for none) or an empty list, got " +
                          std::to_string(biases.size()));
  for (int l = 0; l < c.n_layers; ++l) {
    p.weights[l] = ptr(weights[l]);
    p.biases[l] = biases.empty() ? nullptr : ptr(biases[l]);
  }
}

// The argument blocks of the MLP entry points, shared by the CPU and CUDA bindings.
mlp::MlpForwardArgs forward_args(int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act,
                                 double out_p, int64_t batch, uint64_t x, const std::vector<uint64_t>& weights,
                                 const std::vector<uint64_t>& biases, uint64_t y, const std::vector<uint64_t>& saved,
                                 bool cuda) {
  mlp::MlpForwardArgs a;
  a.cfg = make_config(dtype, widths, act, act_p, out_act, out_p, cuda);
  fill_params(a.params, a.cfg, weights, biases);
  a.batch = batch;
  a.x = ptr(x);
  a.y = const_cast<void*>(ptr(y));
  a.training = !saved.empty();
  if (a.training && saved.size() != size_t(a.cfg.n_layers))
    throw py::value_error("saved: expected one pointer per layer (0 where a layer saves nothing) or an "
                          "empty list for inference, got " + std::to_string(saved.size()));
  for (size_t l = 0; l < saved.size(); ++l) a.saved[l] = const_cast<void*>(ptr(saved[l]));
  return a;
}

mlp::MlpBackwardArgs backward_args(int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act,
                                   double out_p, int64_t batch, uint64_t x, uint64_t y,
                                   const std::vector<uint64_t>& saved, uint64_t dy,
                                   const std::vector<uint64_t>& weights, const std::vector<uint64_t>& biases,
                                   uint64_t dx, const std::vector<uint64_t>& dweights,
                                   const std::vector<uint64_t>& dbiases, bool cuda) {
  mlp::MlpBackwardArgs a;
  a.cfg = make_config(dtype, widths, act, act_p, out_act, out_p, cuda);
  fill_params(a.params, a.cfg, weights, biases);
  if (dweights.size() != size_t(a.cfg.n_layers) || dbiases.size() != size_t(a.cfg.n_layers))
    throw py::value_error("dweights/dbiases: expected one pointer (0 for none) per layer");
  for (int l = 0; l < a.cfg.n_layers; ++l) {
    a.dweights[l] = const_cast<void*>(ptr(dweights[l]));
    a.dbiases[l] = const_cast<void*>(ptr(dbiases[l]));
  }
  if (saved.size() != size_t(a.cfg.n_layers))
    throw py::value_error("saved: expected one pointer per layer (0 where a layer saves nothing), got " +
                          std::to_string(saved.size()));
  for (size_t l = 0; l < saved.size(); ++l) a.saved[l] = ptr(saved[l]);
  a.batch = batch;
  a.x = ptr(x);
  a.y = ptr(y);
  a.dy = ptr(dy);
  a.dx = const_cast<void*>(ptr(dx));
  return a;
}

// The routing block of the routed entry points, from the tuple perceptrons.kernels.routed builds:
// (M, granularity, per_example, seed, step, batch_id, example_ids, sampler_kind, K, perms, cdf, Q, subperm).
routed::RoutingArgs routing_from(const py::tuple& t) {
  if (t.size() != 13) throw py::value_error("routing: expected a 13-tuple, got " + std::to_string(t.size()) + " entries");
  routed::RoutingArgs r;
  const int64_t M = t[0].cast<int64_t>(), g = t[1].cast<int64_t>(), kind = t[7].cast<int64_t>(), K = t[8].cast<int64_t>();
  if (M < 1 || M > routed::kMaxCopies)
    throw py::value_error("M: expected 1.." + std::to_string(routed::kMaxCopies) + " copies, got " + std::to_string(M));
  if (g < 0 || g > 2) throw py::value_error("granularity: expected 0 (layer), 1 (unit) or 2 (edge), got " + std::to_string(g));
  if (kind != 0 && kind != 1) throw py::value_error("sampler kind: expected 0 (table) or 1 (permanental), got " + std::to_string(kind));
  auto u32 = [&](size_t i, const char* name) {
    const int64_t v = t[i].cast<int64_t>();
    if (v < 0 || v > int64_t(UINT32_MAX)) throw py::value_error(std::string(name) + ": expected [0, 2**32), got " + std::to_string(v));
    return uint32_t(v);
  };
  r.M = int(M);
  r.granularity = routed::Granularity(g);
  r.per_example = t[2].cast<bool>();
  r.seed = u32(3, "seed");
  r.step = u32(4, "step");
  r.batch_id = u32(5, "batch_id");
  r.example_ids = static_cast<const int64_t*>(ptr(t[6].cast<uint64_t>()));
  r.sampler.kind = routed::SamplerKind(kind);
  r.sampler.M = int(M);
  r.sampler.K = int(K);
  r.sampler.perms = static_cast<const int32_t*>(ptr(t[9].cast<uint64_t>()));
  r.sampler.cdf = static_cast<const double*>(ptr(t[10].cast<uint64_t>()));
  r.sampler.Q = static_cast<const double*>(ptr(t[11].cast<uint64_t>()));
  r.sampler.subperm = static_cast<const double*>(ptr(t[12].cast<uint64_t>()));
  return r;
}

template <typename Args>
void fill_routed_params(Args& a, const std::vector<uint64_t>& weights, const std::vector<uint64_t>& biases) {
  mlp::MlpParams p;
  fill_params(p, a.cfg, weights, biases);
  for (int l = 0; l < a.cfg.n_layers; ++l) {
    a.weights[l] = p.weights[l];
    a.biases[l] = p.biases[l];
  }
}

py::dict probe_dict() {
  CudaDeviceProbe p;
  probe_cuda(&p);
  py::dict d;
  d["compiled"] = p.compiled;
  d["runtime_version"] = p.runtime_version;
  d["driver_version"] = p.driver_version;
  d["device_count"] = p.device_count;
  d["error"] = std::string(p.error);
  py::list devs;
  for (int i = 0; i < p.device_count && i < kMaxProbedDevices; ++i) {
    py::dict dev;
    dev["name"] = std::string(p.devices[i].name);
    dev["capability"] = py::make_tuple(p.devices[i].major, p.devices[i].minor);
    dev["multiprocessors"] = p.devices[i].multiprocessors;
    dev["total_memory"] = p.devices[i].total_memory;
    devs.append(dev);
  }
  d["devices"] = devs;
  return d;
}

CpuIsa isa_from(const std::string& name) {
  CpuIsa isa;
  if (!parse_cpu_isa(name.c_str(), &isa))
    throw py::value_error("isa: expected one of 'generic', 'avx2', 'avx512', got '" + name + "'");
  return isa;
}

kan::KanConfig make_kan_config(int dtype, int64_t in, int64_t out, int64_t grid_size, int64_t order, int mode) {
  auto positive = [](int64_t v, const char* name) {
    if (v < 1 || v > INT32_MAX) throw py::value_error(std::string(name) + ": expected a positive size, got " + std::to_string(v));
    return int(v);
  };
  kan::KanConfig c;
  c.in_features = positive(in, "in_features");
  c.out_features = positive(out, "out_features");
  c.grid_size = positive(grid_size, "grid_size");
  if (order < 1 || order > kMaxSplineOrder)
    throw py::value_error("spline_order: expected 1.." + std::to_string(kMaxSplineOrder) + ", got " + std::to_string(order));
  c.spline_order = int(order);
  if (mode != 0 && mode != 1) throw py::value_error("mode: expected 0 (extend) or 1 (clamp), got " + std::to_string(mode));
  c.mode = kan::OutOfRange(mode);
  if (dtype != 0 && dtype != 1) throw py::value_error("dtype: expected 0 (float32) or 1 (float64), got " + std::to_string(dtype));
  c.dtype = DType(dtype);
  return c;
}

kan::KanParams make_kan_params(uint64_t grid, uint64_t bw, uint64_t sw, uint64_t ss) {
  kan::KanParams p;
  p.grid = ptr(grid);
  p.base_weight = ptr(bw);
  p.spline_weight = ptr(sw);
  p.spline_scaler = ptr(ss);
  return p;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "perceptrons compiled kernels (CPU always; CUDA when built with nvcc)";

  m.def("build_info", [] {
    BuildInfo b = build_info();
    py::dict d;
    d["version"] = b.version;
    d["cxx_compiler"] = b.cxx_compiler;
    d["openmp"] = b.openmp;
    d["cuda"] = b.cuda;
    d["cuda_archs"] = b.cuda_archs;
    d["cuda_compiler"] = b.cuda_compiler;
    py::list isas;
    for (int i = 0; i < kNumCpuIsas; ++i)
      if (cpu_isa_compiled(CpuIsa(i))) isas.append(cpu_isa_name(CpuIsa(i)));
    d["cpu_isas_compiled"] = isas;
    return d;
  });
  m.def("cuda_probe", &probe_dict, "CUDA runtime/driver/device status; never raises");

  m.def("cpu_isa", [] { return std::string(cpu_isa_name(cpu_isa_active())); });
  m.def("cpu_isa_best", [] { return std::string(cpu_isa_name(cpu_isa_best())); });
  m.def("cpu_isa_supported", [](const std::string& n) { return cpu_isa_supported(isa_from(n)); });
  m.def("set_cpu_isa", [](const std::string& n) {
    CpuIsa isa = isa_from(n);
    if (!set_cpu_isa(isa))
      throw py::value_error("isa: '" + n + "' is not supported on this CPU or not compiled (best: " +
                            cpu_isa_name(cpu_isa_best()) + ")");
  });
  m.def("cpu_fma_peak_gflops", [](const std::string& n, double seconds) {
    CpuIsa isa = isa_from(n);
    py::gil_scoped_release nogil;
    return cpu_fma_peak_gflops(isa, seconds);
  }, py::arg("isa"), py::arg("seconds") = 0.3);

  m.def("openmp_max_threads", [] {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("n: expected a positive thread count, got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
  });

  m.attr("MLP_MAX_LAYERS") = mlp::kMaxLayers;
  m.attr("MLP_MAX_HIDDEN_WIDTH") = mlp::kMaxHiddenWidth;
  m.attr("MLP_SAVED_ALIGN") = mlp::kSavedAlign;

  m.def("mlp_saved_numels", [](const std::vector<int64_t>& widths, int64_t batch, int act, int out_act) {
    mlp::MlpConfig c = make_config(0, widths, act, 0.0, out_act, 0.0);
    if (batch < 0) throw py::value_error("batch: expected >= 0, got " + std::to_string(batch));
    std::vector<int64_t> n(c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) n[l] = mlp::saved_layer_numel(c, batch, l);
    return n;
  }, "Elements the training forward saves per layer (0 where a layer saves nothing).");

  m.def("mlp_forward_cpu",
        [](int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act, double out_p,
           int64_t batch, uint64_t x, const std::vector<uint64_t>& weights, const std::vector<uint64_t>& biases,
           uint64_t y, const std::vector<uint64_t>& saved, const std::vector<double>& encoding) {
          mlp::MlpForwardArgs a = forward_args(dtype, widths, act, act_p, out_act, out_p, batch, x, weights, biases,
                                               y, saved, false);
          set_encoding(a.cfg, encoding);
          Status s;
          {
            py::gil_scoped_release nogil;
            s = mlp::mlp_forward_cpu(a);
          }
          raise_on(s, "mlp_forward_cpu");
        },
        py::arg("dtype"), py::arg("widths"), py::arg("activation"), py::arg("activation_param"),
        py::arg("output_activation"), py::arg("output_activation_param"), py::arg("batch"), py::arg("x"),
        py::arg("weights"), py::arg("biases"), py::arg("y"), py::arg("saved"),
        py::arg("encoding") = std::vector<double>(),
        "Fused MLP forward. saved=[]: inference (only y is written); else the training forward, which "
        "fills saved[l] (mlp_saved_numels elements) for backward. encoding: an input encoding run in the "
        "input stage (x is then the raw inputs), [] for none.");

  m.def("mlp_backward_cpu",
        [](int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act, double out_p,
           int64_t batch, uint64_t x, uint64_t y, const std::vector<uint64_t>& saved, uint64_t dy, const std::vector<uint64_t>& weights,
           uint64_t dx, const std::vector<uint64_t>& dweights, const std::vector<uint64_t>& dbiases,
           const std::vector<double>& encoding) {
          mlp::MlpBackwardArgs a = backward_args(dtype, widths, act, act_p, out_act, out_p, batch, x, y, saved, dy,
                                                 weights, {}, dx, dweights, dbiases, false);
          set_encoding(a.cfg, encoding);
          Status s;
          {
            py::gil_scoped_release nogil;
            s = mlp::mlp_backward_cpu(a);
          }
          raise_on(s, "mlp_backward_cpu");
        },
        py::arg("dtype"), py::arg("widths"), py::arg("activation"), py::arg("activation_param"),
        py::arg("output_activation"), py::arg("output_activation_param"), py::arg("batch"), py::arg("x"),
        py::arg("y"), py::arg("saved"), py::arg("dy"), py::arg("weights"), py::arg("dx"), py::arg("dweights"),
        py::arg("dbiases"), py::arg("encoding") = std::vector<double>(),
        "Fused MLP backward: dx (0: not wanted), per-layer weight and bias gradients (0: not wanted).");

  // ---- input encodings, CPU --------------------------------------------------------------------
  m.attr("ENCODING_MAX_PARTS") = enc::kMaxParts;
  m.attr("ENCODING_MAX_FREQUENCIES") = enc::kMaxFrequencies;
  m.attr("ENCODING_MAX_SH_DEGREE") = enc::kMaxShDegree;
  m.attr("ENCODING_MAX_BINS") = enc::kMaxBins;
  m.attr("ENCODING_MAX_ONES") = enc::kMaxOnes;

  m.def("encoding_forward_cpu",
        [](const std::vector<double>& encoding, int dtype, int64_t batch, uint64_t x, uint64_t y) {
          const enc::EncodingConfig c = nonempty_encoding(encoding);
          Status s;
          {
            py::gil_scoped_release nogil;
            s = enc::encoding_forward_cpu(c, DType(dtype), batch, ptr(x), const_cast<void*>(ptr(y)));
          }
          raise_on(s, "encoding_forward_cpu");
        },
        py::arg("encoding"), py::arg("dtype"), py::arg("batch"), py::arg("x"), py::arg("y"),
        "Input encoding: y (batch, n_outputs) from x (batch, n_inputs), float32 (0) or float64 (1).");

  m.def("encoding_backward_cpu",
        [](const std::vector<double>& encoding, int dtype, int64_t batch, uint64_t x, uint64_t dy, uint64_t dx) {
          const enc::EncodingConfig c = nonempty_encoding(encoding);
          Status s;
          {
            py::gil_scoped_release nogil;
            s = enc::encoding_backward_cpu(c, DType(dtype), batch, ptr(x), ptr(dy), const_cast<void*>(ptr(dx)));
          }
          raise_on(s, "encoding_backward_cpu");
        },
        py::arg("encoding"), py::arg("dtype"), py::arg("batch"), py::arg("x"), py::arg("dy"), py::arg("dx"),
        "Input gradient of an encoding: dx = J(x)^T dy.");

  // ---- routed replicas (M-cover), CPU ----------------------------------------------------------
  m.attr("ROUTED_MAX_COPIES") = routed::kMaxCopies;
  m.attr("ROUTED_MAX_PERMANENTAL_COPIES") = routed::kMaxPermanentalCopies;
  m.def("routed_permutations_cpu",
        [](const py::tuple& routing, int64_t example, int64_t layer, int64_t n, uint64_t units, uint64_t weights,
           uint64_t out) {
          routed::RoutingArgs r = routing_from(routing);
          if (example < 0 || example > int64_t(UINT32_MAX) || layer < 0 || layer > 0xFFFF)
            throw py::value_error("example/layer: out of range");
          Status s = routed::routed_permutations_cpu(r, uint32_t(example), uint32_t(layer), n,
                                                     static_cast<const int64_t*>(ptr(units)),
                                                     static_cast<const int64_t*>(ptr(weights)),
                                                     static_cast<int32_t*>(const_cast<void*>(ptr(out))));
          raise_on(s, "routed_permutations_cpu");
        },
        "Permutations (n, M) int32 of n routed blocks (unit and weight indices given) for one example key.");

  m.def("routed_mlp_forward_cpu",
        [](const py::tuple& routing, int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act,
           double out_p, int64_t batch, uint64_t x, int64_t x_stream_stride, const std::vector<uint64_t>& weights,
           const std::vector<uint64_t>& biases, uint64_t y, const std::vector<uint64_t>& saved) {
          routed::RoutedMlpForwardArgs a;
          a.routing = routing_from(routing);
          a.cfg = make_config(dtype, widths, act, act_p, out_act, out_p);
          fill_routed_params(a, weights, biases);
          a.batch = batch;
          a.x = ptr(x);
          a.x_stream_stride = x_stream_stride;
          a.y = const_cast<void*>(ptr(y));
          a.training = !saved.empty();
          if (a.training && saved.size() != size_t(a.cfg.n_layers))
            throw py::value_error("saved: expected one pointer per layer or an empty list for inference");
          for (size_t l = 0; l < saved.size(); ++l) a.saved[l] = const_cast<void*>(ptr(saved[l]));
          Status s;
          {
            py::gil_scoped_release nogil;
            s = routed::routed_mlp_forward_cpu(a);
          }
          raise_on(s, "routed_mlp_forward_cpu");
        },
        "Routed MLP forward over M streams; saved=[] for inference.");

  m.def("routed_mlp_backward_cpu",
        [](const py::tuple& routing, int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act,
           double out_p, int64_t batch, uint64_t x, int64_t x_stream_stride, uint64_t y,
           const std::vector<uint64_t>& saved, uint64_t dy, const std::vector<uint64_t>& weights,
           const std::vector<uint64_t>& biases, uint64_t dx, const std::vector<uint64_t>& dweights,
           const std::vector<uint64_t>& dbiases) {
          routed::RoutedMlpBackwardArgs a;
          a.routing = routing_from(routing);
          a.cfg = make_config(dtype, widths, act, act_p, out_act, out_p);
          fill_routed_params(a, weights, biases);
          if (saved.size() != size_t(a.cfg.n_layers) || dweights.size() != size_t(a.cfg.n_layers) ||
              dbiases.size() != size_t(a.cfg.n_layers))
            throw py::value_error("saved/dweights/dbiases: expected one pointer (0 for none) per layer");
          for (int l = 0; l < a.cfg.n_layers; ++l) {
            a.saved[l] = ptr(saved[l]);
            a.dweights[l] = const_cast<void*>(ptr(dweights[l]));
            a.dbiases[l] = const_cast<void*>(ptr(dbiases[l]));
          }
          a.batch = batch;
          a.x = ptr(x);
          a.x_stream_stride = x_stream_stride;
          a.y = ptr(y);
          a.dy = ptr(dy);
          a.dx = const_cast<void*>(ptr(dx));
          Status s;
          {
            py::gil_scoped_release nogil;
            s = routed::routed_mlp_backward_cpu(a);
          }
          raise_on(s, "routed_mlp_backward_cpu");
        },
        "Routed MLP backward: dx per stream (0: not wanted) and the copies' weight and bias gradients.");

  m.def("routed_committee_epoch_cpu",
        [](const py::tuple& routing, int dtype, int64_t K, int64_t N, uint64_t H, int64_t n_patterns, uint64_t patterns,
           uint64_t labels, uint64_t order, int64_t n_order, double eta, double margin, double h_max) {
          routed::CommitteeEpochArgs a;
          a.routing = routing_from(routing);
          if (K < 1 || K > INT32_MAX || N < 1 || N > INT32_MAX) throw py::value_error("K, N: expected positive sizes");
          a.K = int(K);
          a.N = int(N);
          a.dtype = DType(dtype);
          a.H = const_cast<void*>(ptr(H));
          a.n_patterns = n_patterns;
          a.patterns = static_cast<const int8_t*>(ptr(patterns));
          a.labels = static_cast<const int8_t*>(ptr(labels));
          a.order = static_cast<const int64_t*>(ptr(order));
          a.n_order = n_order;
          a.eta = eta;
          a.margin = margin;
          a.h_max = h_max;
          int64_t updates = 0;
          a.n_updates = &updates;
          Status s;
          {
            py::gil_scoped_release nogil;
            s = routed::routed_committee_epoch_cpu(a);
          }
          raise_on(s, "routed_committee_epoch_cpu");
          return updates;
        },
        "One online epoch of the routed committee machine (K = 1: binary perceptron); returns the update count.");

  // ---- fused MLP, CUDA backend -----------------------------------------------------------------
  m.attr("MLP_CUDA_MAX_IO_WIDTH") = mlp::cuda_layout::kMaxIoWidth;
  m.def("mlp_cuda_unsupported", [](int dtype, const std::vector<int64_t>& widths) {
    mlp::MlpConfig c;
    c.n_layers = int(widths.size()) - 1;
    if (c.n_layers < 1 || c.n_layers > mlp::kMaxLayers) return std::string("number of layers");
    for (size_t i = 0; i < widths.size(); ++i) c.widths[i] = int(std::min<int64_t>(widths[i], INT32_MAX));
    c.dtype = DType(dtype);
    Status s = mlp::cuda_layout::cuda_supported(c);
    return s == Status::Ok ? std::string() : std::string(status_message(s));
  }, "Empty string when the CUDA kernels take this dtype code and these widths, else why not.");

  m.def("mlp_cuda_workspace_bytes", [](int dtype, const std::vector<int64_t>& widths, int64_t batch, bool backward) {
    mlp::MlpConfig c = make_config(dtype, widths, 0, 0.0, 0, 0.0, true);
    int64_t n;
    {
      py::gil_scoped_release nogil;
      n = mlp::mlp_cuda_workspace_bytes(c, batch, backward);
    }
    if (n < 0) throw std::runtime_error("mlp_cuda_workspace_bytes failed (" + std::string(cuda_error_detail()) + ")");
    return n;
  }, "Workspace bytes of a CUDA forward (backward=False) or backward call on the current device.");

  m.def("mlp_cuda_plan_backward",
        [](int dtype, const std::vector<int64_t>& widths, int act, int64_t batch, int sm_count, int smem_optin,
           bool x_prefetchable, bool dy_prefetchable) {
          mlp::MlpConfig c = make_config(dtype, widths, act, 0.0, 0, 0.0, true);
          mlp::MlpCudaBackwardPlan plan;
          const Status s = mlp::mlp_cuda_plan_backward(c, batch, sm_count, smem_optin, x_prefetchable, dy_prefetchable,
                                                       &plan);
          if (s == Status::Unsupported)  // make_config has accepted the configuration itself
            throw py::value_error("mlp_cuda_plan_backward: no launch plan fits " + std::to_string(smem_optin) +
                                  " bytes of shared memory per block for these input/output widths");
          raise_on(s, "mlp_cuda_plan_backward");
          py::dict d;
          d["warps"] = plan.warps;
          d["depth"] = plan.depth;
          d["grid"] = plan.grid;
          d["smem_bytes"] = plan.smem_bytes;
          d["acc_in_smem"] = plan.acc_in_smem;
          d["x_prefetched"] = plan.x_prefetched;
          d["dy_prefetched"] = plan.dy_prefetched;
          d["reduce_unit_tiles"] = plan.reduce_unit_tiles;
          return d;
        },
        py::arg("dtype"), py::arg("widths"), py::arg("activation"), py::arg("batch"), py::arg("sm_count"),
        py::arg("smem_optin"), py::arg("x_prefetchable"), py::arg("dy_prefetchable"),
        "How the CUDA backward would run on a device with these limits (no device needed): warps per "
        "block, prefetch depth, grid, shared memory, where the weight-gradient accumulators live, n-tiles "
        "per unit of the weight-gradient reduction.");

  m.def("mlp_forward_cuda",
        [](int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act, double out_p,
           int64_t batch, uint64_t x, const std::vector<uint64_t>& weights, const std::vector<uint64_t>& biases,
           uint64_t y, const std::vector<uint64_t>& saved, uint64_t workspace, int64_t workspace_bytes, uint64_t stream) {
          mlp::MlpForwardArgs a = forward_args(dtype, widths, act, act_p, out_act, out_p, batch, x, weights, biases,
                                               y, saved, true);
          a.stream = const_cast<void*>(ptr(stream));
          Status s;
          {
            py::gil_scoped_release nogil;
            s = mlp::mlp_forward_cuda(a, const_cast<void*>(ptr(workspace)), workspace_bytes);
          }
          raise_on(s, "mlp_forward_cuda");
        },
        py::arg("dtype"), py::arg("widths"), py::arg("activation"), py::arg("activation_param"),
        py::arg("output_activation"), py::arg("output_activation_param"), py::arg("batch"), py::arg("x"),
        py::arg("weights"), py::arg("biases"), py::arg("y"), py::arg("saved"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("stream"),
        "Fused MLP forward on CUDA (launched on `stream`, a cudaStream_t as an integer).");

  m.def("mlp_backward_cuda",
        [](int dtype, const std::vector<int64_t>& widths, int act, double act_p, int out_act, double out_p,
           int64_t batch, uint64_t x, const std::vector<uint64_t>& saved, uint64_t dy,
           const std::vector<uint64_t>& weights, const std::vector<uint64_t>& biases, uint64_t dx,
           const std::vector<uint64_t>& dweights, const std::vector<uint64_t>& dbiases, uint64_t workspace,
           int64_t workspace_bytes, uint64_t stream) {
          mlp::MlpBackwardArgs a = backward_args(dtype, widths, act, act_p, out_act, out_p, batch, x, 0, saved, dy,
                                                 weights, biases, dx, dweights, dbiases, true);
          a.stream = const_cast<void*>(ptr(stream));
          Status s;
          {
            py::gil_scoped_release nogil;
            s = mlp::mlp_backward_cuda(a, const_cast<void*>(ptr(workspace)), workspace_bytes);
          }
          raise_on(s, "mlp_backward_cuda");
        },
        py::arg("dtype"), py::arg("widths"), py::arg("activation"), py::arg("activation_param"),
        py::arg("output_activation"), py::arg("output_activation_param"), py::arg("batch"), py::arg("x"),
        py::arg("saved"), py::arg("dy"), py::arg("weights"), py::arg("biases"), py::arg("dx"), py::arg("dweights"),
        py::arg("dbiases"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
        "Fused MLP backward on CUDA: dx (0: not wanted), every weight gradient and the bias gradients "
        "(0: not wanted).");

  m.attr("KAN_MAX_SPLINE_ORDER") = kMaxSplineOrder;

  m.def("kan_forward_cpu",
        [](int dtype, int64_t in, int64_t out, int64_t grid_size, int64_t order, int mode, int64_t batch, uint64_t x,
           uint64_t grid, uint64_t base_weight, uint64_t spline_weight, uint64_t spline_scaler, uint64_t y) {
          kan::KanForwardArgs a;
          a.cfg = make_kan_config(dtype, in, out, grid_size, order, mode);
          a.params = make_kan_params(grid, base_weight, spline_weight, spline_scaler);
          a.batch = batch;
          a.x = ptr(x);
          a.y = const_cast<void*>(ptr(y));
          Status s;
          {
            py::gil_scoped_release nogil;
            s = kan::kan_forward_cpu(a);
          }
          raise_on(s, "kan_forward_cpu");
        },
        py::arg("dtype"), py::arg("in_features"), py::arg("out_features"), py::arg("grid_size"),
        py::arg("spline_order"), py::arg("mode"), py::arg("batch"), py::arg("x"), py::arg("grid"),
        py::arg("base_weight"), py::arg("spline_weight"), py::arg("spline_scaler"), py::arg("y"),
        "Spline-KAN layer forward (spline_scaler=0: none).");

  m.def("kan_backward_cpu",
        [](int dtype, int64_t in, int64_t out, int64_t grid_size, int64_t order, int mode, int64_t batch, uint64_t x,
           uint64_t grid, uint64_t base_weight, uint64_t spline_weight, uint64_t spline_scaler, uint64_t dy,
           uint64_t dx, uint64_t d_base_weight, uint64_t d_spline_weight, uint64_t d_spline_scaler) {
          kan::KanBackwardArgs a;
          a.cfg = make_kan_config(dtype, in, out, grid_size, order, mode);
          a.params = make_kan_params(grid, base_weight, spline_weight, spline_scaler);
          a.batch = batch;
          a.x = ptr(x);
          a.dy = ptr(dy);
          a.dx = const_cast<void*>(ptr(dx));
          a.d_base_weight = const_cast<void*>(ptr(d_base_weight));
          a.d_spline_weight = const_cast<void*>(ptr(d_spline_weight));
          a.d_spline_scaler = const_cast<void*>(ptr(d_spline_scaler));
          Status s;
          {
            py::gil_scoped_release nogil;
            s = kan::kan_backward_cpu(a);
          }
          raise_on(s, "kan_backward_cpu");
        },
        py::arg("dtype"), py::arg("in_features"), py::arg("out_features"), py::arg("grid_size"),
        py::arg("spline_order"), py::arg("mode"), py::arg("batch"), py::arg("x"), py::arg("grid"),
        py::arg("base_weight"), py::arg("spline_weight"), py::arg("spline_scaler"), py::arg("dy"), py::arg("dx"),
        py::arg("d_base_weight"), py::arg("d_spline_weight"), py::arg("d_spline_scaler"),
        "Spline-KAN layer backward; pointers of 0 mark gradients not wanted.");
}
