// selector.hpp - Calico's label selector language (spec calico.md §3): parse, evaluate, print.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace fwe::calico {

using Labels = std::map<std::string, std::string, std::less<>>;

struct SelectorError {
  std::size_t offset = 0;  // byte offset inside the selector text where the problem starts
  std::string message;
  std::string hint;
};

class Selector {
 public:
  enum class Op { all, global, has, eq, ne, in, not_in, contains, starts_with, ends_with, not_, and_, or_ };
  struct Expr {
    Op op = Op::all;
    std::string label;
    std::string value;
    std::set<std::string> values;  // in / not in
    std::vector<Expr> operands;    // not (one), and, or
  };

  // The empty selector, which selects everything (like all()).
  Selector();
  // Parses text; on failure returns std::nullopt and fills error.
  static std::optional<Selector> parse(std::string_view text, SelectorError& error);

  bool matches(const Labels& labels) const;
  // A stable rendering: equal selectors print the same, whatever spacing or quotes they were written with.
  std::string canonical() const;
  bool uses_global() const;
  // Calico's rewrite of a namespace or service-account selector into its v1 form (updateprocessors):
  // every all() becomes has(label) and, with global_too, every global() becomes !has(label).
  Selector with_all_as(std::string_view label, bool global_too) const;
  bool is_all() const { return root_->op == Op::all; }
  const Expr& root() const { return *root_; }

 private:
  explicit Selector(Expr root);
  std::shared_ptr<const Expr> root_;
};

}  // namespace fwe::calico
