// Marks math shared by the CPU and CUDA builds. Functions are `static inline` on purpose: each
// translation unit (one per CPU instruction set) keeps its own copy, so the linker can never hand
// an AVX-512 copy to the generic path.
#pragma once

#if defined(__CUDACC__)
#define PCT_HD static __host__ __device__ __forceinline__
#else
#define PCT_HD static inline __attribute__((always_inline))
#endif
