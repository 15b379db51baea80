#pragma once
namespace perceptrons {
// Element type of a kernel call; the numbering is part of the binding ABI.
enum class DType : int { Float32 = 0, Float64 = 1 };
}  // namespace perceptrons
