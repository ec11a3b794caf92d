// Merge strategies on small hand-computed cases: linear, task_arithmetic, slerp, nuslerp,
// model_stock, passthrough, and the registry.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dms/merge/strategies.hpp"
#include "strategy_test_support.hpp"

using Catch::Matchers::Contains;
using dms::test::merge_case;

namespace {
void require_close(const std::vector<float> &got, const std::vector<float> &want, float tol = 1e-6f) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= tol * std::max(1.0f, std::abs(want[i])));
  }
}
} // namespace

TEST_CASE("registry: every name makes its strategy, with a consistent contract", "[merge][strategy]") {
  const auto names = dms::merge_method_names();
  REQUIRE(names.size() == 13);
  for (auto n : names) {
    auto s = dms::make_merge_strategy(n);
    CHECK(s->name() == n);
    CHECK(s->info().name == n);
    CHECK(s->needs_base() == (s->base_policy() == dms::merge_base_policy::required));
    for (const auto &p : s->parameters()) {
      CHECK(s->find_parameter(p.name) == &p);
      CHECK((p.required ? !p.default_value.has_value() : true));
    }
    CHECK(s->find_parameter("no_such_parameter") == nullptr);
  }
  CHECK(dms::make_merge_strategy("linear")->elementwise());
  CHECK(dms::make_merge_strategy("task_arithmetic")->elementwise());
  CHECK_FALSE(dms::make_merge_strategy("ties")->elementwise());
  CHECK(dms::make_merge_strategy("ties")->find_parameter("density")->scope == dms::merge_parameter_scope::per_model);
  CHECK(dms::make_merge_strategy("ties")->find_parameter("lambda")->scope == dms::merge_parameter_scope::global);
  CHECK(dms::make_merge_strategy("breadcrumbs")->find_parameter("gamma")->default_value == 0.01);
  CHECK(dms::make_merge_strategy("della")->find_parameter("epsilon")->default_value == 0.15);
  CHECK(dms::make_merge_strategy("dare_ties")->find_parameter("rescale")->default_value == 1.0);
  CHECK(dms::make_merge_strategy("slerp")->find_parameter("t")->required);
  CHECK(dms::make_merge_strategy("nuslerp")->base_policy() == dms::merge_base_policy::optional);
  CHECK(dms::make_merge_strategy("linear")->base_policy() == dms::merge_base_policy::ignored);
  try {
    (void)dms::make_merge_strategy("tiez");
    FAIL("no error");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::unsupported);
    CHECK_THAT(e.what(), Contains("'tiez'") && Contains("ties"));
  }
}

TEST_CASE("linear: weighted mean, plain weighted sum, identity", "[merge][strategy]") {
  merge_case c;
  c.models = {{1, 2, 3}, {3, 6, 9}};
  c.params.set("weight", 0, 1.0).set("weight", 1, 3.0);
  CHECK(c.run("linear") == std::vector<float>{2.5f, 5.0f, 7.5f});
  c.params.set("normalize", 0.0);
  CHECK(c.run("linear") == std::vector<float>{10.0f, 20.0f, 30.0f});

  merge_case one; // one model: bit-for-bit identity whatever its weight
  one.models = {{0.1f, -3.7f, 1e-30f, 12345.678f}};
  one.params.set("weight", 0.3);
  CHECK(one.run("linear") == one.models[0]);
}

TEST_CASE("task_arithmetic: base + lambda * sum w_i d_i", "[merge][strategy]") {
  merge_case c;
  c.base = {1, 1, 1, 1};
  c.models = {{2, 0, 1, 3}, {1, 3, 1, -1}}; // d = [1,-1,0,2], [0,2,0,-2]
  c.params.set("weight", 0, 1.0).set("weight", 1, 0.5).set("lambda", 2.0);
  CHECK(c.run("task_arithmetic") == std::vector<float>{3, 1, 1, 3});
  c.params.set("normalize", 1.0); // divided by 1.5
  require_close(c.run("task_arithmetic"), {1 + 2 / 1.5f, 1, 1, 1 + 2 / 1.5f});
  c.params.set("lambda", 0.0); // lambda 0: the base
  CHECK(c.run("task_arithmetic") == c.base);
}

TEST_CASE("slerp: spherical, collinear lerp, zero-norm base, endpoints", "[merge][strategy]") {
  const float r = std::sqrt(0.5f);
  merge_case c;
  c.base = {1, 0};
  c.models = {{0, 1}};
  c.params.set("t", 0.5);
  require_close(c.run("slerp"), {r, r});
  c.params.set("t", 0.0);
  CHECK(c.run("slerp") == c.base);
  c.params.set("t", 1.0);
  require_close(c.run("slerp"), c.models[0]);

  merge_case col; // |dot| > 0.9995: linear interpolation
  col.base = {1, 2};
  col.models = {{2, 4}};
  col.params.set("t", 0.25);
  require_close(col.run("slerp"), {1.25f, 2.5f});

  merge_case zero; // a zero base counts as norm 1: dot 0, theta = pi / 2
  zero.base = {0, 0};
  zero.models = {{3, 4}};
  zero.params.set("t", 0.5);
  require_close(zero.run("slerp"), {3 * r, 4 * r});
}

TEST_CASE("nuslerp: flattened, per row, per column, on task vectors", "[merge][strategy]") {
  const float r = std::sqrt(0.5f);
  merge_case c;
  c.models = {{1, 0, 1, 0}, {0, 1, 2, 0}};
  c.shape = {2, 2};
  c.params.set("weight", 0, 1.0).set("weight", 1, 1.0);
  c.params.set("nuslerp_flatten", 0.0);
  // Rows: [1,0] vs [0,1] orthogonal; [1,0] vs [2,0] collinear -> lerp.
  require_close(c.run("nuslerp"), {r, r, 1.5f, 0.0f});
  // Columns: [1,1] vs [0,2] at 45 degrees; [0,0] vs [1,0]: zero vector, theta = pi/2.
  c.params.set("nuslerp_row_wise", 1.0);
  const float k = static_cast<float>(std::sin(M_PI / 8) / std::sin(M_PI / 4));
  require_close(c.run("nuslerp"), {k, r, 3 * k, 0.0f}, 1e-6f);

  merge_case b; // with a base: slerp of the task vectors, base added back; weights 1:3 -> t = 0.75
  b.base = {1, 1};
  b.models = {{2, 1}, {1, 2}};
  b.params.set("weight", 0, 1.0).set("weight", 1, 3.0);
  const auto t = 0.75, th = M_PI / 2;
  require_close(b.run("nuslerp"), {1 + static_cast<float>(std::sin((1 - t) * th)), 1 + static_cast<float>(std::sin(t * th))});
}

TEST_CASE("model_stock: t = N cos / (1 + (N - 1) cos), per tensor and per filter", "[merge][strategy]") {
  merge_case c;
  c.base = {1, 1, 1, 0, 0, 0};
  c.models = {{2, 2, 1, 1, 0, 0}, {2, 1, 2, -1, 0, 0}};
  c.shape = {2, 3};
  c.params.set("filter_wise", 1.0);
  // Row 0: offsets [1,1,0], [1,0,1]: cos 0.5, t = 2/3. Row 1: [1,0,0], [-1,0,0]: cos -1, the
  // denominator vanishes: the base.
  require_close(c.run("model_stock"), {5 / 3.0f, 4 / 3.0f, 4 / 3.0f, 0, 0, 0});
  // Whole tensor: offsets [1,1,0,1,0,0], [1,0,1,-1,0,0]: cos = 0 -> t = 0 -> the base.
  c.params.set("filter_wise", 0.0);
  require_close(c.run("model_stock"), c.base);
}

TEST_CASE("passthrough: copies or scales its single input", "[merge][strategy]") {
  merge_case c;
  c.models = {{1.5f, -0.0f, 3}};
  const auto copy = c.run("passthrough");
  CHECK(copy == c.models[0]);
  CHECK(std::signbit(copy[1]));
  c.params.set("scale", 0, 2.0);
  CHECK(c.run("passthrough") == std::vector<float>{3, -0.0f, 6});
}

TEST_CASE("strategies: bad parameters and inputs name the parameter and the tensor", "[merge][strategy]") {
  auto expect_error = [](merge_case &c, std::string_view method, dms::errc code, const std::string &what) {
    try {
      (void)c.run(method);
      FAIL("no error for " << what);
    } catch (const dms::error &e) {
      INFO(e.what());
      CHECK(e.code() == code);
      CHECK(e.where().tensor == c.name);
      CHECK_THAT(e.what(), Contains(what));
    }
  };
  merge_case c;
  c.base = {0, 0, 0, 0};
  c.models = {{1, 2, 3, 4}, {4, 3, 2, 1}};
  c.params.set("weight", 1.0);
  c.params.set("density", 1, 1.5);
  expect_error(c, "ties", dms::errc::invalid_argument, "'density' (model 1) must be in (0, 1]");
  c.params.set("density", 1, 0.0);
  expect_error(c, "dare_linear", dms::errc::invalid_argument, "'density' (model 1)");
  c.params.set("density", 1, 0.5);
  c.params.set("weight", 0, std::numeric_limits<double>::quiet_NaN());
  expect_error(c, "task_arithmetic", dms::errc::invalid_argument, "'weight' (model 0) must be a finite number");
  c.params.set("weight", 0, 1.0).set("weight", 1, -1.0);
  expect_error(c, "linear", dms::errc::invalid_argument, "normalize would divide by zero");
  expect_error(c, "slerp", dms::errc::invalid_argument, "exactly 1 input model besides the base");
  c.params.set("epsilon", 0.6);
  expect_error(c, "della", dms::errc::invalid_argument, "'epsilon' (model 1)"); // model 0 keeps all
  c.params.set("gamma", 1.5);
  expect_error(c, "breadcrumbs", dms::errc::invalid_argument, "'gamma' (model 0) must be in [0");

  merge_case s;
  s.base = {1, 0};
  s.models = {{0, 1}};
  expect_error(s, "slerp", dms::errc::invalid_argument, "parameter 't' is not set");
  s.params.set("t", 1.5);
  expect_error(s, "slerp", dms::errc::invalid_argument, "'t' must be in [0");
  s.base.clear();
  s.params.set("t", 0.5);
  expect_error(s, "slerp", dms::errc::invalid_argument, "needs a base model");
  s.models = {{0, 1}, {1, 0, 0}};
  s.params.set("weight", 1.0);
  expect_error(s, "nuslerp", dms::errc::shape_mismatch, "model 1 has 3 elements");
  merge_case ms;
  ms.base = {0, 0};
  ms.models = {{0, 1}};
  expect_error(ms, "model_stock", dms::errc::invalid_argument, "at least 2 input models besides the base");
  merge_case p;
  p.models = {{1}, {2}};
  expect_error(p, "passthrough", dms::errc::invalid_argument, "exactly 1 input model");
}

TEST_CASE("weighted sums: the dispatched kernels equal a plain double loop, bit for bit", "[merge][strategy]") {
  // Odd length (block remainder), signed zeros, one to four models: the dispatched kernel (AVX2
  // here, without fused multiply-adds) and the portable one against sum_i c_i x_i in double,
  // starting from +0.0.
  const std::size_t n = 1000 + 37;
  std::vector<std::vector<float>> x(4, std::vector<float>(n));
  std::uint64_t s = 7;
  for (auto &v : x)
    for (auto &e : v) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      e = static_cast<float>(static_cast<double>(s % 200001) / 1e5 - 1.0);
    }
  x[0][3] = -0.0f, x[1][3] = -0.0f, x[2][3] = -0.0f, x[3][3] = -0.0f;
  const std::vector<float> base(x[3].rbegin(), x[3].rend());
  const std::vector<double> coef{0.4, -0.6, 1.0 / 3.0, 0.0};
  for (std::size_t m = 1; m <= 4; ++m) {
    std::vector<std::span<const float>> xs(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(m));
    const std::span<const double> c(coef.data(), m);
    std::vector<float> got(n), portable(n), task(n), task_portable(n);
    dms::detail::weighted_sum(xs, c, got, 0, n);
    dms::detail::weighted_sum_portable(xs, c, portable, 0, n);
    dms::detail::weighted_task_sum(xs, c, base, task, 0, n);
    dms::detail::weighted_task_sum_portable(xs, c, base, task_portable, 0, n);
    for (std::size_t j = 0; j < n; ++j) {
      double want = 0.0, want_task = 0.0;
      for (std::size_t i = 0; i < m; ++i) {
        want += coef[i] * static_cast<double>(x[i][j]);
        want_task += coef[i] * static_cast<double>(x[i][j] - base[j]);
      }
      INFO("models " << m << ", element " << j);
      REQUIRE(std::signbit(got[j]) == std::signbit(static_cast<float>(want)));
      REQUIRE(got[j] == static_cast<float>(want));
      REQUIRE(portable[j] == got[j]);
      REQUIRE(task[j] == static_cast<float>(static_cast<double>(base[j]) + want_task));
      REQUIRE(task_portable[j] == task[j]);
    }
  }
}
