// Entry points of the per-ISA CPU MLP kernels. mlp_cpu_isa.cpp is compiled once per instruction
// set with PERCEPTRONS_ISA_NS set to isa_generic / isa_avx2 / isa_avx512; the dispatcher
// (mlp_cpu.cpp) picks one at run time. `ws` is a 64-byte aligned workspace laid out by
// cpu::make_layout for the same config, batch and thread count.
#pragma once
#include "mlp/mlp.h"
#include "mlp/mlp_cpu_layout.h"

#define PERCEPTRONS_DECLARE_MLP_ISA(NS)                                                  \
  namespace perceptrons {                                                                \
  namespace mlp {                                                                        \
  namespace NS {                                                                         \
  void run(const MlpForwardArgs& args, const cpu::Layout& layout, void* ws);             \
  void run(const MlpBackwardArgs& args, const cpu::Layout& layout, void* ws);            \
  }                                                                                      \
  }                                                                                      \
  }

PERCEPTRONS_DECLARE_MLP_ISA(isa_generic)
PERCEPTRONS_DECLARE_MLP_ISA(isa_avx2)
PERCEPTRONS_DECLARE_MLP_ISA(isa_avx512)
