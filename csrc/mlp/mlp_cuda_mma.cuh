// Warp-level tensor-core building blocks of the CUDA MLP: mma.sync m16n8k16 with float32
// accumulation, ldmatrix, and the register conversions between fragments.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4 * g + t:
//   A (16 x 16, row-major): a[0] = (row g,   k 2t..2t+1)   a[1] = (row g+8, k 2t..2t+1)
//                           a[2] = (row g,   k 2t+8..+9)   a[3] = (row g+8, k 2t+8..+9)
//   B (16 x 8, "col"):      b[0] = (k 2t..2t+1, col g)     b[1] = (k 2t+8..+9, col g)
//   C (16 x 8, float):      c[0..1] = (row g, cols 2t, 2t+1)   c[2..3] = (row g+8, cols 2t, 2t+1)
// So the C fragments of n-tiles 2kk and 2kk+1, rounded to 16 bits in pairs, are exactly the A
// fragment of k-tile kk of the next layer: activations go from one layer to the next in registers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "common/activations.h"

namespace perceptrons {
namespace mlp {
namespace cuda {

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Four 8x8 16-bit matrices, transposed on the way: lanes 8q..8q+7 give the row addresses of matrix q.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Two 8x8 16-bit matrices, transposed, into r[0] and r[1] (r[2], r[3] untouched): lanes 8q..8q+7 give
// the row addresses of matrix q; the addresses of lanes 16..31 are not read.
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[4], const void* smem_row) {
  uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}

// Writes a warp's A fragment (16 rows, 16 columns at col0) into a row-major staging buffer; rows past
// the batch become zeros. On sm_90 one stmatrix stores the four 8x8 matrices (lanes 8q..8q+7 give the
// row addresses of matrix q: rows 0-7 / 8-15 of columns 0-7, then of columns 8-15), instead of four
// 32-bit stores per lane; the staging strides keep those 8 rows in distinct bank groups.
template <typename T>
__device__ __forceinline__ void stage_frag(T* s, int ld, int srow, int col0, const uint32_t (&a)[4], int g, int t,
                                           bool ok0, bool ok1) {
  const uint32_t v0 = ok0 ? a[0] : 0u, v1 = ok1 ? a[1] : 0u, v2 = ok0 ? a[2] : 0u, v3 = ok1 ? a[3] : 0u;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int lane = 4 * g + t;
  const T* row = s + (srow + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + col0 + (lane >> 4) * 8;
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(v0), "r"(v1),
               "r"(v2), "r"(v3));
#else
  uint32_t* r0 = reinterpret_cast<uint32_t*>(s + (srow + g) * ld + col0 + 2 * t);
  uint32_t* r1 = reinterpret_cast<uint32_t*>(s + (srow + g + 8) * ld + col0 + 2 * t);
  r0[0] = v0;
  r1[0] = v1;
  r0[4] = v2;
  r1[4] = v3;
#endif
}

// Two floats rounded to one 32-bit pair (lo in the low half, as the fragments want).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same<T, __half>::value) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

// relu of two floats rounded to one 32-bit pair, in one instruction (cvt's .relu: negative values
// give +0, NaN stays NaN, as activation_forward's ReLU; -0 gives +0 on the H100, tested through the
// training forward's saved outputs).
template <typename T>
__device__ __forceinline__ uint32_t pack2_relu(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same<T, __half>::value)
    asm("cvt.rn.relu.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t v) {
  if constexpr (std::is_same<T, __half>::value) {
    return __half22float2(*reinterpret_cast<__half2*>(&v));
  } else {
    return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v));
  }
}

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same<T, __half>::value) return __half2float(v);
  else return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same<T, __half>::value) return __float2half_rn(v);
  else return __float2bfloat16_rn(v);
}

// C fragments of n-tiles (2kk, 2kk+1) -> A fragment of k-tile kk; with kRelu, relu applied on the way
// (pack2_relu).
template <typename T, bool kRelu = false>
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  auto pack = [](float lo, float hi) {
    if constexpr (kRelu) return pack2_relu<T>(lo, hi);
    else return pack2<T>(lo, hi);
  };
  a[0] = pack(c0[0], c0[1]);
  a[1] = pack(c0[2], c0[3]);
  a[2] = pack(c1[0], c1[1]);
  a[3] = pack(c1[2], c1[3]);
}

// The activation applied to n values, with the switch hoisted out of the element loop.
template <Activation A>
__device__ __forceinline__ void activate_n(float* v, int n, float p) {
#pragma unroll
  for (int i = 0; i < n; ++i) v[i] = activation_forward<float>(A, v[i], p);
}

template <int N>
__device__ __forceinline__ void activate(float* v, Activation a, float p) {
  switch (a) {
    case Activation::None: break;
    case Activation::ReLU: activate_n<Activation::ReLU>(v, N, p); break;
    case Activation::LeakyReLU: activate_n<Activation::LeakyReLU>(v, N, p); break;
    case Activation::Sigmoid: activate_n<Activation::Sigmoid>(v, N, p); break;
    case Activation::Tanh: activate_n<Activation::Tanh>(v, N, p); break;
    case Activation::Softplus: activate_n<Activation::Softplus>(v, N, p); break;
    case Activation::SiLU: activate_n<Activation::SiLU>(v, N, p); break;
    case Activation::Sine: activate_n<Activation::Sine>(v, N, p); break;
    case Activation::Exp: activate_n<Activation::Exp>(v, N, p); break;
  }
}

// v[i] *= f'(s[i]), where s holds what the training forward saved: the pre-activation z for
// silu/sine, the output f(z) for the others.
template <Activation A>
__device__ __forceinline__ void scale_by_grad_n(float* v, const float* s, int n, float p) {
#pragma unroll
  for (int i = 0; i < n; ++i) {
    if constexpr (A == Activation::SiLU || A == Activation::Sine)
      v[i] *= activation_grad_from_input<float>(A, s[i], p);
    else
      v[i] *= activation_grad_from_output<float>(A, s[i], p);
  }
}

template <int N>
__device__ __forceinline__ void scale_by_grad(float* v, const float* s, Activation a, float p) {
  switch (a) {
    case Activation::None: break;
    case Activation::ReLU: scale_by_grad_n<Activation::ReLU>(v, s, N, p); break;
    case Activation::LeakyReLU: scale_by_grad_n<Activation::LeakyReLU>(v, s, N, p); break;
    case Activation::Sigmoid: scale_by_grad_n<Activation::Sigmoid>(v, s, N, p); break;
    case Activation::Tanh: scale_by_grad_n<Activation::Tanh>(v, s, N, p); break;
    case Activation::Softplus: scale_by_grad_n<Activation::Softplus>(v, s, N, p); break;
    case Activation::SiLU: scale_by_grad_n<Activation::SiLU>(v, s, N, p); break;
    case Activation::Sine: scale_by_grad_n<Activation::Sine>(v, s, N, p); break;
    case Activation::Exp: scale_by_grad_n<Activation::Exp>(v, s, N, p); break;
  }
}

// v[i] *= f'(z[i]) from the pre-activation (the output layer, whose z the backward recomputes).
template <int N>
__device__ __forceinline__ void scale_by_grad_from_input(float* v, const float* z, Activation a, float p) {
  if (a == Activation::None) return;
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] *= activation_grad_from_input<float>(a, z[i], p);
}

}  // namespace cuda
}  // namespace mlp
}  // namespace perceptrons
