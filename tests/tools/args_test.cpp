#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "args.hpp"

namespace {
dms::cli::command_spec merge_like() {
  dms::cli::command_spec c("dms merge", "Merge models.");
  c.option({"out", 'o', "DIR", "output directory", ""})
      .option({"threads", 't', "N", "worker threads", "2"})
      .option({"dry-run", 0, "", "print the plan only", ""})
      .option({"alpha", 0, "A", "strength", "1.4"})
      .positional({"CONFIG", "the YAML config", true, false});
  return c;
}
dms::cli::parsed_args parse(const std::vector<std::string> &a) { return merge_like().parse(a); }
} // namespace

TEST_CASE("long, short, inline values, flags and positionals", "[cli]") {
  auto p = parse({"cfg.yaml", "-o", "out", "--threads=4", "--dry-run"});
  CHECK(p.get("out") == "out");
  CHECK(p.get_int("threads") == 4);
  CHECK(p.has("dry-run"));
  CHECK(p.get_double("alpha") == Approx(1.4));
  REQUIRE(p.positionals().size() == 1);
  CHECK(p.positionals()[0] == "cfg.yaml");
  auto q = parse({"--", "-weird-name.yaml"});
  CHECK(q.positionals()[0] == "-weird-name.yaml");
  CHECK(q.get_int("threads") == 2);
}

TEST_CASE("mistakes name the option and point at --help", "[cli]") {
  CHECK_THROWS_WITH(parse({"c", "--thread", "3"}),
                    Catch::Contains("unknown option '--thread' for 'dms merge', did you mean '--threads'?"));
  CHECK_THROWS_WITH(parse({"c", "-x"}), Catch::Contains("unknown option '-x'"));
  CHECK_THROWS_WITH(parse({"c", "--out"}), Catch::Contains("--out needs a value (DIR)"));
  CHECK_THROWS_WITH(parse({"c", "--dry-run=yes"}), Catch::Contains("--dry-run is a flag"));
  CHECK_THROWS_WITH(parse({}), Catch::Contains("'dms merge' needs CONFIG"));
  CHECK_THROWS_WITH(parse({"a", "b"}), Catch::Contains("unexpected argument 'b'"));
  CHECK_THROWS_WITH(parse({"c", "--threads", "many"}).get_int("threads"),
                    Catch::Contains("--threads expects an integer, got 'many'"));
  CHECK_THROWS_WITH(parse({"c"}).get("out"), Catch::Contains("--out is required"));
}

TEST_CASE("--help skips required checks and the help text lists everything", "[cli]") {
  auto p = parse({"--help"});
  CHECK(p.has("help"));
  const auto h = merge_like().help_text();
  CHECK_THAT(h, Catch::Contains("Usage: dms merge [OPTIONS] CONFIG"));
  CHECK_THAT(h, Catch::Contains("-o, --out DIR"));
  CHECK_THAT(h, Catch::Contains("[default: 2]"));
  CHECK_THAT(h, Catch::Contains("--dry-run"));
}
