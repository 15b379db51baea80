#pragma once

namespace perceptrons {

struct BuildInfo {
  const char* version = "";
  const char* cxx_compiler = "";
  bool openmp = false;
  bool cuda = false;
  const char* cuda_archs = "";
  const char* cuda_compiler = "";
};

BuildInfo build_info();

}  // namespace perceptrons
