#include <catch2/catch.hpp>

#include <sstream>

#include "fwengine/diagnostics.hpp"

using namespace fwe;

TEST_CASE("diagnostics print file:line:col, severity, message and hint") {
  Diagnostics diag;
  auto f = diag.add_file("policy.yaml");
  CHECK(diag.add_file("policy.yaml") == f);
  diag.error({f, 18, 14}, "unknown stage 'inptu'", "did you mean 'input'?");
  diag.warning({f, 2, 1}, "v1 resource");
  diag.error({}, "no sources");
  CHECK(diag.error_count() == 2);
  std::ostringstream out;
  diag.print(out);
  CHECK(out.str() ==
        "policy.yaml:18:14: error: unknown stage 'inptu' (did you mean 'input'?)\n"
        "policy.yaml:2:1: warning: v1 resource\n"
        "<command line>: error: no sources\n");
}

TEST_CASE("did_you_mean suggests only close words") {
  CHECK(did_you_mean("inptu", {"input", "output", "forward"}) == "did you mean 'input'?");
  CHECK(did_you_mean("protcol", {"protocol", "port"}) == "did you mean 'protocol'?");
  CHECK(did_you_mean("zzzzzz", {"input", "output"}).empty());
}

TEST_CASE("a frontend option from fwengine.conf is located there, one from the command line is not") {
  Diagnostics diag;
  auto conf = diag.add_file("fwengine.conf");
  diag.set_option_origin("compat", {conf, 3, 3}, {conf, 3, 11});
  CHECK(diag.option_key_loc("compat") == SourceLoc{conf, 3, 3});
  CHECK(diag.option_value_loc("compat") == SourceLoc{conf, 3, 11});
  CHECK(diag.option_value_loc("defaults") == SourceLoc{});
  diag.error(diag.option_value_loc("compat"), "compat must be 1.3 or 2, not '1.4'");
  diag.error(diag.option_key_loc("defaults"), "defaults= needs a directory");
  std::ostringstream out;
  diag.print(out);
  CHECK(out.str() ==
        "fwengine.conf:3:11: error: compat must be 1.3 or 2, not '1.4'\n"
        "<command line>: error: defaults= needs a directory\n");
}
