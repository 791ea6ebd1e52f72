// backend.hpp - the ebpf Backend: compile (render), Kernel (apply, read_back, flush).
#pragma once

#include <memory>

#include "compile.hpp"
#include "fwengine/plugin.hpp"
#include "kernel.hpp"
#include "log.hpp"

namespace fwe::ebpf {

class EbpfPlan : public Plan {
 public:
  explicit EbpfPlan(Program program) : program_(std::move(program)) {}
  std::string text(std::string_view) const override { return program_.text(); }
  std::string listing(std::string_view) const override { return program_.listing(); }
  const Program& program() const { return program_; }

 private:
  Program program_;
};

class EbpfBackend : public Backend {
 public:
  explicit EbpfBackend(const PluginContext& context) : context_(context), kernel_(context.netns) {}
  Capabilities capabilities() const override;
  std::unique_ptr<Plan> render(const ir::Ruleset& ruleset, Diagnostics& diag) override;
  ApplyReport apply(const Plan& plan, const ApplyOptions& options) override;
  KernelState read_back() override { return kernel_.read_back(); }
  void flush() override { kernel_.flush(); }
  std::unique_ptr<LogWatch> watch_log() override { return RingLog::open(kernel_.pin_dir()); }

 private:
  PluginContext context_;
  Kernel kernel_;
};

}  // namespace fwe::ebpf
