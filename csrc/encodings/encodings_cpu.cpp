// Standalone CPU kernels of the input encodings: rows in parallel, the per-row math of
// encodings_math.h. (Inside a FusedMLP the same math runs in the MLP's input stage instead.)
#include <cmath>

#include "encodings/encodings.h"
#include "encodings/encodings_math.h"

namespace perceptrons {
namespace enc {

Status validate_encoding(const EncodingConfig& c) {
  if (c.n_parts < 1 || c.n_parts > kMaxParts) return Status::BadShape;
  if (c.n_ones < 0 || c.n_ones > kMaxOnes) return Status::BadShape;
  for (int p = 0; p < c.n_parts; ++p) {
    const Part& q = c.parts[p];
    if (q.n_dims < 1) return Status::BadShape;
    switch (q.kind) {
      case Kind::Identity:
        if (!std::isfinite(q.scale) || !std::isfinite(q.offset)) return Status::BadShape;
        break;
      case Kind::Frequency:
        if (q.n < 1 || q.n > kMaxFrequencies) return Status::BadShape;
        break;
      case Kind::SphericalHarmonics:
        if (q.n_dims != 3 || q.n < 1 || q.n > kMaxShDegree) return Status::BadShape;
        break;
      case Kind::OneBlob:
        if (q.n < 1 || q.n > kMaxBins) return Status::BadShape;
        break;
      default: return Status::Unsupported;
    }
  }
  return Status::Ok;
}

namespace {

// Calls f(first row, rows) on blocks of kRowsPerTask rows, in parallel (the row math vectorises
// across a block).
constexpr int64_t kRowsPerTask = 256;

template <typename F>
void for_each_block(int64_t batch, F&& f) {
  const int64_t tasks = (batch + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = t * kRowsPerTask;
    f(r0, int(batch - r0 < kRowsPerTask ? batch - r0 : kRowsPerTask));
  }
}

template <typename T>
void forward_rows(const EncodingConfig& c, int64_t batch, const T* x, T* y) {
  const int ni = n_inputs(c), no = n_outputs(c);
  for_each_block(batch, [&](int64_t r0, int rows) { encode_rows(c, x + r0 * ni, ni, rows, y + r0 * no, no, 1); });
}

template <typename T>
void backward_rows(const EncodingConfig& c, int64_t batch, const T* x, const T* dy, T* dx) {
  const int ni = n_inputs(c), no = n_outputs(c);
  for_each_block(batch, [&](int64_t r0, int rows) {
    encode_rows_backward(c, x + r0 * ni, ni, rows, dy + r0 * no, no, 1, dx + r0 * ni);
  });
}

Status check(const EncodingConfig& c, DType dtype, int64_t batch) {
  const Status s = validate_encoding(c);
  if (s != Status::Ok) return s;
  if (dtype != DType::Float32 && dtype != DType::Float64) return Status::BadDtype;
  if (batch < 0) return Status::BadShape;
  return Status::Ok;
}

}  // namespace

Status encoding_forward_cpu(const EncodingConfig& c, DType dtype, int64_t batch, const void* x, void* y) {
  Status s = check(c, dtype, batch);
  if (s != Status::Ok || batch == 0) return s;
  if (!x || !y) return Status::NullPointer;
  if (dtype == DType::Float32) forward_rows(c, batch, static_cast<const float*>(x), static_cast<float*>(y));
  else forward_rows(c, batch, static_cast<const double*>(x), static_cast<double*>(y));
  return Status::Ok;
}

Status encoding_backward_cpu(const EncodingConfig& c, DType dtype, int64_t batch, const void* x, const void* dy,
                             void* dx) {
  Status s = check(c, dtype, batch);
  if (s != Status::Ok || batch == 0) return s;
  if (!x || !dy || !dx) return Status::NullPointer;
  if (dtype == DType::Float32)
    backward_rows(c, batch, static_cast<const float*>(x), static_cast<const float*>(dy), static_cast<float*>(dx));
  else
    backward_rows(c, batch, static_cast<const double*>(x), static_cast<const double*>(dy), static_cast<double*>(dx));
  return Status::Ok;
}

}  // namespace enc
}  // namespace perceptrons
