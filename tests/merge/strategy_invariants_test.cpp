// Invariants every strategy must keep: chunked merges equal whole ones, any thread count gives
// the same bits, random masks depend only on (seed, tensor, model, element).
#include <catch2/catch.hpp>

#include <vector>

#include "dms/core/thread_pool.hpp"
#include "dms/merge/sparsify.hpp"
#include "dms/merge/strategies.hpp"
#include "strategy_test_support.hpp"
#include "support/random_floats.hpp"

using dms::test::merge_case;

namespace {
merge_case random_case(std::size_t n, std::size_t n_models, std::vector<std::int64_t> shape = {}) {
  merge_case c;
  c.base = dms::test::random_floats(n, 100);
  for (std::size_t m = 0; m < n_models; ++m) {
    auto x = dms::test::random_floats(n, static_cast<std::uint32_t>(101 + m));
    for (std::size_t i = 0; i < n; ++i) x[i] = c.base[i] + 0.1f * x[i];
    c.models.push_back(std::move(x));
    c.params.set("weight", static_cast<std::int32_t>(m), 0.3 + 0.2 * static_cast<double>(m));
  }
  c.shape = std::move(shape);
  c.params.set("density", 0.4).set("t", 0.3).set("epsilon", 0.1).set("lambda", 0.9);
  return c;
}
} // namespace

TEST_CASE("elementwise strategies: chunked (element_offset) equals whole", "[merge][strategy]") {
  auto c = random_case(10007, 3);
  for (auto method : {"linear", "task_arithmetic"}) {
    INFO(method);
    REQUIRE(dms::make_merge_strategy(method)->elementwise());
    CHECK(c.run_chunked(method, 1000) == c.run(method));
    CHECK(c.run_chunked(method, 333) == c.run(method));
  }
  merge_case p;
  p.models = {dms::test::random_floats(1001, 9)};
  p.params.set("scale", 0.5);
  CHECK(p.run_chunked("passthrough", 100) == p.run("passthrough"));
}

TEST_CASE("random masks: chunks drawn at their element_offset equal the whole tensor's", "[merge][strategy]") {
  const auto d = dms::test::random_floats(10001, 11);
  const dms::philox_stream s(dms::key_for(42, "blk.3.ffn_down.weight", 2), 0);
  auto whole = d;
  dms::drop_random(whole, 0.3, dms::rescale_mode::inverse_density, s, 0);
  auto chunked = d;
  for (std::size_t b = 0; b < d.size(); b += 777) {
    const std::size_t e = std::min(d.size(), b + 777);
    dms::drop_random(std::span<float>(chunked).subspan(b, e - b), 0.3, dms::rescale_mode::inverse_density, s, b);
  }
  CHECK(chunked == whole);
}

TEST_CASE("every strategy gives the same bits on any thread count", "[merge][strategy]") {
  // Large enough for the elementwise kernels to split into several pool chunks.
  const std::size_t rows = 600, cols = 1024;
  auto c = random_case(rows * cols, 3, {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)});
  c.params.set("nuslerp_flatten", 0.0).set("filter_wise", 1.0);
  dms::thread_pool p2(2), p4(4);
  for (auto method : dms::merge_method_names()) {
    INFO(method);
    auto info = dms::make_merge_strategy(method)->info();
    merge_case m = c;
    const std::size_t n_models = info.max_models == 0 ? 3 : info.max_models;
    m.models.resize(n_models);
    if (info.base == dms::merge_base_policy::ignored) m.base.clear();
    const auto serial = m.run(method);
    CHECK(m.run(method, &p2) == serial);
    CHECK(m.run(method, &p4) == serial);
  }
}
