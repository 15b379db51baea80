// Entry points of the per-ISA CPU KAN kernels (kan_cpu_isa.cpp, compiled once per ISA).
#pragma once
#include "kan/kan.h"
#include "kan/kan_cpu_layout.h"

#define PERCEPTRONS_DECLARE_KAN_ISA(NS)                                         \
  namespace perceptrons {                                                       \
  namespace kan {                                                               \
  namespace NS {                                                                \
  void run(const KanForwardArgs& args, const cpu::Layout& layout, void* ws);    \
  void run(const KanBackwardArgs& args, const cpu::Layout& layout, void* ws);   \
  }                                                                             \
  }                                                                             \
  }

PERCEPTRONS_DECLARE_KAN_ISA(isa_generic)
PERCEPTRONS_DECLARE_KAN_ISA(isa_avx2)
PERCEPTRONS_DECLARE_KAN_ISA(isa_avx512)
