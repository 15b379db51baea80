// C++ API of the input encodings (tiny-cuda-nn's Identity, Frequency, SphericalHarmonics, OneBlob and
// their Composite): plain structs, no torch, no Python. An encoding maps a row of n_inputs raw
// features to n_outputs encoded ones: the parts one after the other, each reading its own n_dims
// consecutive inputs, then n_ones columns of 1 (tcnn's padding to the network's alignment, which
// acts as a first-layer bias). The formulas are in encodings_math.h; their float64 numpy reference is
// python/perceptrons/reference/encodings.py.
//
// The fused MLP takes an EncodingConfig in its config (csrc/mlp/mlp.h) and runs it in its input stage,
// per tile: the encoded rows never go to memory, in the forward nor in the backward.
#pragma once
#include <cstdint>

#include "common/dtype.h"
#include "common/status.h"

namespace perceptrons {
namespace enc {

constexpr int kMaxParts = 8;
constexpr int kMaxFrequencies = 32;   // 2^31 pi x: past this, float32 inputs carry no phase at all
constexpr int kMaxShDegree = 4;
constexpr int kMaxBins = 4096;
constexpr int kMaxOnes = 4096;

// The numbering is part of the binding ABI (python/perceptrons/kernels/encodings.py).
enum class Kind : int { Identity = 0, Frequency = 1, SphericalHarmonics = 2, OneBlob = 3 };

struct Part {
  Kind kind = Kind::Identity;
  int n_dims = 0;       // raw inputs this part reads (3 for spherical harmonics)
  int n = 0;            // n_frequencies / degree / n_bins; unused by Identity
  double scale = 1.0;   // Identity only: y = x * scale + offset
  double offset = 0.0;
};

struct EncodingConfig {
  int n_parts = 0;      // 0: no encoding (the MLP reads x as it is)
  Part parts[kMaxParts];
  int n_ones = 0;       // trailing columns of 1
};

inline int part_width(const Part& p) {
  switch (p.kind) {
    case Kind::Identity: return p.n_dims;
    case Kind::Frequency: return p.n_dims * 2 * p.n;
    case Kind::SphericalHarmonics: return p.n * p.n;
    case Kind::OneBlob: return p.n_dims * p.n;
  }
  return 0;
}
inline int n_inputs(const EncodingConfig& c) {
  int n = 0;
  for (int i = 0; i < c.n_parts; ++i) n += c.parts[i].n_dims;
  return n;
}
inline int n_outputs(const EncodingConfig& c) {
  int n = c.n_ones;
  for (int i = 0; i < c.n_parts; ++i) n += part_width(c.parts[i]);
  return n;
}

// Ok for a usable config with at least one part (the Python layer has said what is wrong already).
Status validate_encoding(const EncodingConfig& c);

// Standalone kernels (encodings_cpu.cpp), row-major contiguous x (batch, n_inputs), y (batch,
// n_outputs); float32 or float64. backward writes dx = J(x)^T dy.
Status encoding_forward_cpu(const EncodingConfig& c, DType dtype, int64_t batch, const void* x, void* y);
Status encoding_backward_cpu(const EncodingConfig& c, DType dtype, int64_t batch, const void* x, const void* dy,
                             void* dx);

}  // namespace enc
}  // namespace perceptrons
