#pragma once
namespace perceptrons {
// Element type of a kernel call; the numbering is part of the binding ABI.
// Float16/BFloat16 exist on the CUDA path only (storage type; arithmetic accumulates in float32).
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };
}  // namespace perceptrons
