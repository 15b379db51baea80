// Activation functions and their derivatives, shared by the CPU kernels (every ISA unit) and the
// CUDA kernels. The numpy reference (python/perceptrons/reference/activations.py) has the same
// formulas written independently.
//
// Backward needs f'(z). Where f'(z) can be written from the output y = f(z) alone we save y (it is
// also the next layer's input, so it costs nothing extra); silu and sine cannot, so for them the
// pre-activation z is saved instead and y is recomputed (tiny-cuda-nn skips these derivatives
// silently; we never do).
#pragma once
#include "common/hd.h"

namespace perceptrons {

// The numbering is part of the binding ABI (python/perceptrons/activations.py mirrors it).
enum class Activation : int {
  None = 0,
  ReLU = 1,
  LeakyReLU = 2,  // param: negative slope (default 0.01)
  Sigmoid = 3,
  Tanh = 4,
  Softplus = 5,   // param: beta (default 1); linear above beta*z > 20, as torch.nn.Softplus
  SiLU = 6,
  Sine = 7,       // param: w0 (SIREN, default 30); y = sin(w0 * z)
  Exp = 8,
};
constexpr int kNumActivations = 9;
constexpr double kSoftplusThreshold = 20.0;

PCT_HD bool activation_valid(int a) { return a >= 0 && a < kNumActivations; }

// True when f'(z) cannot be recovered from y = f(z): the pre-activation must be saved.
PCT_HD bool activation_needs_preactivation(Activation a) {
  return a == Activation::SiLU || a == Activation::Sine;
}

#if defined(__CUDA_ARCH__)
PCT_HD float act_exp(float v) { return expf(v); }
PCT_HD double act_exp(double v) { return exp(v); }
PCT_HD float act_log1p(float v) { return log1pf(v); }
PCT_HD double act_log1p(double v) { return log1p(v); }
PCT_HD float act_tanh(float v) { return tanhf(v); }
PCT_HD double act_tanh(double v) { return tanh(v); }
PCT_HD float act_sin(float v) { return sinf(v); }
PCT_HD double act_sin(double v) { return sin(v); }
PCT_HD float act_cos(float v) { return cosf(v); }
PCT_HD double act_cos(double v) { return cos(v); }
#else
PCT_HD float act_exp(float v) { return __builtin_expf(v); }
PCT_HD double act_exp(double v) { return __builtin_exp(v); }
PCT_HD float act_log1p(float v) { return __builtin_log1pf(v); }
PCT_HD double act_log1p(double v) { return __builtin_log1p(v); }
PCT_HD float act_tanh(float v) { return __builtin_tanhf(v); }
PCT_HD double act_tanh(double v) { return __builtin_tanh(v); }
PCT_HD float act_sin(float v) { return __builtin_sinf(v); }
PCT_HD double act_sin(double v) { return __builtin_sin(v); }
PCT_HD float act_cos(float v) { return __builtin_cosf(v); }
PCT_HD double act_cos(double v) { return __builtin_cos(v); }
#endif

template <typename T>
PCT_HD T act_sigmoid(T z) {
  // Two branches keep exp's argument <= 0: no overflow for large |z|.
  if (z >= T(0)) return T(1) / (T(1) + act_exp(-z));
  T e = act_exp(z);
  return e / (T(1) + e);
}

template <typename T>
PCT_HD T activation_forward(Activation a, T z, T p) {
  switch (a) {
    case Activation::None: return z;
    case Activation::ReLU: return z > T(0) ? z : (z == z ? T(0) : z);  // NaN stays NaN, -inf -> 0
    case Activation::LeakyReLU: return z > T(0) ? z : p * z;
    case Activation::Sigmoid: return act_sigmoid(z);
    case Activation::Tanh: return act_tanh(z);
    case Activation::Softplus: {
      T bz = p * z;
      if (bz > T(kSoftplusThreshold)) return z;
      // log(1 + e^bz) = max(bz, 0) + log1p(e^-|bz|): stable for very negative bz.
      T abs_bz = bz < T(0) ? -bz : bz;
      T m = bz > T(0) ? bz : T(0);
      return (m + act_log1p(act_exp(-abs_bz))) / p;
    }
    case Activation::SiLU: return z * act_sigmoid(z);
    case Activation::Sine: return act_sin(p * z);
    case Activation::Exp: return act_exp(z);
  }
  return z;
}

// f'(z) written from y = f(z); only valid when !activation_needs_preactivation(a).
template <typename T>
PCT_HD T activation_grad_from_output(Activation a, T y, T p) {
  switch (a) {
    case Activation::None: return T(1);
    case Activation::ReLU: return y > T(0) ? T(1) : T(0);
    case Activation::LeakyReLU: return y > T(0) ? T(1) : p;  // y > 0 <=> z > 0 (slope >= 0 is enforced)
    case Activation::Sigmoid: return y * (T(1) - y);
    case Activation::Tanh: return T(1) - y * y;
    case Activation::Softplus: return T(1) - act_exp(-p * y);  // = sigmoid(beta z)
    case Activation::Exp: return y;
    default: return T(0);  // not reachable for silu/sine: callers use the z form
  }
}

// f'(z) written from the pre-activation z; valid for every activation.
template <typename T>
PCT_HD T activation_grad_from_input(Activation a, T z, T p) {
  switch (a) {
    case Activation::SiLU: {
      T s = act_sigmoid(z);
      return s * (T(1) + z * (T(1) - s));
    }
    case Activation::Sine: return p * act_cos(p * z);
    case Activation::ReLU: return z > T(0) ? T(1) : T(0);
    case Activation::LeakyReLU: return z > T(0) ? T(1) : p;
    case Activation::Softplus: return p * z > T(kSoftplusThreshold) ? T(1) : act_sigmoid(p * z);
    default: return activation_grad_from_output(a, activation_forward(a, z, p), p);
  }
}

}  // namespace perceptrons
