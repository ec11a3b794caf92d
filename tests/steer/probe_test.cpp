// Logistic-regression probe: fit, metrics, standardization, class weights, save/load, errors,
// layer sweep; and (hidden, [peer]) agreement with scikit-learn.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <filesystem>
#include <string>
#include <vector>

#include "dms/core/thread_pool.hpp"
#include "dms/formats/npy.hpp"
#include "dms/probe/layer_sweep.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/probe/logistic_io.hpp"
#include "dms/probe/metrics.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"
#include "synthetic.hpp"

using dms::test::labelled_data;
using dms::test::make_data;

namespace {

double cosine(std::span<const float> a, std::span<const float> b) {
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

//! The first-order optimality condition of scikit-learn's objective, recomputed from the probe's
//! own parameters: w + C sum sw_i (p_i - y_i) z_i = 0 and sum sw_i (p_i - y_i) = 0, z the
//! standardized rows. Returns the largest component relative to C * sum(sw).
double kkt_residual(const dms::logistic_probe &p, const labelled_data &data, double C, bool balanced) {
  const auto d = static_cast<std::size_t>(data.d);
  std::size_t n1 = 0;
  for (int y : data.y) n1 += y == 1;
  const double n = double(data.n);
  std::vector<double> g(d + 1, 0.0);
  double sw_sum = 0;
  for (std::int64_t i = 0; i < data.n; ++i) {
    const int y = data.y[static_cast<std::size_t>(i)];
    const double sw = balanced ? n / (2.0 * double(y ? n1 : data.n - std::int64_t(n1))) : 1.0;
    sw_sum += sw;
    double m = p.bias();
    std::vector<double> z(d);
    for (std::size_t j = 0; j < d; ++j) {
      z[j] = (double(data.x[static_cast<std::size_t>(i) * d + j]) - p.mean()[j]) / p.scale()[j];
      m += double(p.weight()[j]) * z[j];
    }
    const double r = sw * (1.0 / (1.0 + std::exp(-m)) - y);
    for (std::size_t j = 0; j < d; ++j) g[j] += C * r * z[j];
    g[d] += C * r;
  }
  for (std::size_t j = 0; j < d; ++j) g[j] += p.weight()[j];
  double worst = 0;
  for (double v : g) worst = std::max(worst, std::abs(v));
  return worst / (C * sw_sum);
}

} // namespace

TEST_CASE("metrics: accuracy, ROC-AUC with ties, log-loss on hand cases", "[steer][probe]") {
  const std::vector<float> s{0.1f, 0.4f, 0.35f, 0.8f};
  const std::vector<int> y{0, 0, 1, 1};
  CHECK(dms::roc_auc(s, y) == Approx(0.75)); // scikit-learn's roc_auc_score docstring example
  const std::vector<float> tied{0.2f, 0.5f, 0.5f, 0.9f};
  CHECK(dms::roc_auc(tied, y) == Approx(3.5 / 4)); // the (0.5, 0.5) pair counts one half
  const std::vector<float> all_tied{0.5f, 0.5f, 0.5f, 0.5f};
  CHECK(dms::roc_auc(all_tied, std::vector<int>{0, 1, 0, 1}) == Approx(0.5));
  CHECK(dms::roc_auc(std::vector<float>{0.9f, 0.1f}, std::vector<int>{0, 1}) == Approx(0.0));
  // accuracy: 0.5 predicts 1
  CHECK(dms::accuracy(std::vector<float>{0.5f, 0.49f, 0.7f, 0.2f}, std::vector<int>{1, 0, 0, 0}) == Approx(0.75));
  CHECK(dms::log_loss(std::vector<float>{0.9f, 0.2f}, std::vector<int>{1, 0}) ==
        Approx(-(std::log(0.9) + std::log(0.8)) / 2).epsilon(1e-6));
  // clipped, not infinite
  CHECK(dms::log_loss(std::vector<float>{0.0f}, std::vector<int>{1}) == Approx(-std::log(1e-15)));
  CHECK_THROWS_WITH(dms::roc_auc(std::vector<float>{0.1f, 0.2f}, std::vector<int>{1, 1}),
                    Catch::Contains("needs both classes"));
  CHECK_THROWS_WITH(dms::accuracy(std::vector<float>{0.1f}, std::vector<int>{2}), Catch::Contains("label 2"));
}

TEST_CASE("fit_logistic: separable data converges to a perfect, bounded probe", "[steer][probe]") {
  const auto train = make_data(300, 8, 3.0, 0.5, 1);
  const auto test = make_data(200, 8, 3.0, 0.5, 2);
  const auto fit = dms::fit_logistic(train.view(), train.y, {.C = 1.0});
  CHECK(fit.report.converged);
  CHECK(fit.report.solver == dms::logistic_solver::newton);
  CHECK(fit.report.iterations > 0);
  CHECK(fit.report.iterations < 30);
  CHECK(fit.report.gradient_max <= 1e-8);
  CHECK(kkt_residual(fit.probe, train, 1.0, false) < 1e-6);
  const auto m = dms::evaluate(fit.probe, test.view(), test.y);
  CHECK(m.accuracy == 1.0);
  CHECK(m.roc_auc == 1.0);
  CHECK(m.log_loss < 0.05);
  CHECK(m.n == 200);
  for (float w : fit.probe.weight()) CHECK(std::isfinite(w));
}

TEST_CASE("fit_logistic: noisy data, Newton and L-BFGS reach the same optimum", "[steer][probe]") {
  const auto train = make_data(800, 24, 0.8, 1.0, 3);
  const auto test = make_data(400, 24, 0.8, 1.0, 4);
  const auto newton = dms::fit_logistic(train.view(), train.y, {.C = 0.5, .solver = dms::logistic_solver::newton});
  const auto lbfgs = dms::fit_logistic(train.view(), train.y, {.C = 0.5, .solver = dms::logistic_solver::lbfgs});
  REQUIRE(newton.report.converged);
  REQUIRE(lbfgs.report.converged);
  CHECK(lbfgs.report.solver == dms::logistic_solver::lbfgs);
  CHECK(lbfgs.report.iterations > newton.report.iterations);
  CHECK(kkt_residual(newton.probe, train, 0.5, false) < 1e-6);
  CHECK(kkt_residual(lbfgs.probe, train, 0.5, false) < 1e-6);
  CHECK(cosine(newton.probe.weight(), lbfgs.probe.weight()) > 0.999999);
  CHECK(newton.probe.bias() == Approx(lbfgs.probe.bias()).margin(1e-5));
  const auto m = dms::evaluate(newton.probe, test.view(), test.y);
  CHECK(m.roc_auc > 0.7);
  CHECK(m.roc_auc < 0.99); // noisy: not separable
  CHECK(m.accuracy > 0.6);
  // A smaller C shrinks the weights.
  const auto strong = dms::fit_logistic(train.view(), train.y, {.C = 0.001});
  double a = 0, b = 0;
  for (float w : strong.probe.weight()) a += double(w) * w;
  for (float w : newton.probe.weight()) b += double(w) * w;
  CHECK(a < b);
}

TEST_CASE("fit_logistic: fewer rows than features (the n x n Newton system) reaches the L-BFGS optimum",
          "[steer][probe]") {
  // The shape of a probe on a wide model: a few hundred rows of many features, classes imbalanced
  // and (in the second case) separable, so that the curvature of many rows nearly vanishes.
  for (const double shift : {0.15, 0.6}) {
    const auto train = make_data(120, 300, shift, 1.0, 11, /*p1=*/0.25);
    const dms::logistic_options opt{.C = 1.0, .class_weight = dms::class_weight_mode::balanced};
    auto newton_opt = opt, lbfgs_opt = opt;
    newton_opt.solver = dms::logistic_solver::newton;
    lbfgs_opt.solver = dms::logistic_solver::lbfgs;
    const auto newton = dms::fit_logistic(train.view(), train.y, newton_opt);
    const auto lbfgs = dms::fit_logistic(train.view(), train.y, lbfgs_opt);
    INFO("shift " << shift << ": newton " << newton.report.iterations << " iterations, gradient "
                  << newton.report.gradient_max << "; lbfgs " << lbfgs.report.iterations);
    REQUIRE(newton.report.converged);
    REQUIRE(lbfgs.report.converged);
    CHECK(newton.report.iterations < 30);
    CHECK(kkt_residual(newton.probe, train, 1.0, true) < 1e-6);
    CHECK(cosine(newton.probe.weight(), lbfgs.probe.weight()) > 0.999999);
    CHECK(newton.probe.bias() == Approx(lbfgs.probe.bias()).margin(1e-4));
    // The automatic choice for this shape is Newton.
    CHECK(dms::fit_logistic(train.view(), train.y, opt).report.solver == dms::logistic_solver::newton);
  }
}

TEST_CASE("fit_logistic: balanced class weights shift the decision towards the rare class", "[steer][probe]") {
  const auto train = make_data(1000, 6, 0.6, 1.0, 5, /*p1=*/0.1);
  const auto plain = dms::fit_logistic(train.view(), train.y);
  const auto balanced = dms::fit_logistic(train.view(), train.y, {.class_weight = dms::class_weight_mode::balanced});
  CHECK(kkt_residual(plain.probe, train, 1.0, false) < 1e-6);
  CHECK(kkt_residual(balanced.probe, train, 1.0, true) < 1e-6);
  CHECK(kkt_residual(plain.probe, train, 1.0, true) > 1e-3); // the weights matter
  CHECK(balanced.probe.bias() > plain.probe.bias() + 0.5);
  std::size_t pred_plain = 0, pred_bal = 0;
  for (std::int64_t i = 0; i < train.n; ++i) {
    pred_plain += plain.probe.score(train.view().row_span(i)) >= 0.5f;
    pred_bal += balanced.probe.score(train.view().row_span(i)) >= 0.5f;
  }
  CHECK(pred_bal > 2 * pred_plain);
  CHECK(balanced.probe.info().class_weight == dms::class_weight_mode::balanced);
}

TEST_CASE("fit_logistic: standardization makes the fit scale-invariant and handles constant features",
          "[steer][probe]") {
  auto data = make_data(400, 5, 1.0, 1.0, 6);
  const auto base = dms::fit_logistic(data.view(), data.y);
  auto scaled = data, constant = data;
  for (std::int64_t i = 0; i < scaled.n; ++i) {
    scaled.x[static_cast<std::size_t>(i * 5 + 1)] *= 1000.0f; // feature 1 in other units
    constant.x[static_cast<std::size_t>(i * 5 + 3)] = 7.0f;   // feature 3 constant
  }
  const auto with_constant = dms::fit_logistic(constant.view(), constant.y);
  CHECK(with_constant.report.converged);
  CHECK(with_constant.probe.scale()[3] == 1.0f);
  CHECK(with_constant.probe.mean()[3] == 7.0f);
  CHECK(with_constant.probe.weight()[3] == 0.0f);
  const auto fit = dms::fit_logistic(scaled.view(), scaled.y);
  for (std::size_t j = 0; j < 5; ++j) CHECK(fit.probe.weight()[j] == Approx(base.probe.weight()[j]).epsilon(1e-4));
  CHECK(fit.probe.bias() == Approx(base.probe.bias()).epsilon(1e-4));
  CHECK(fit.probe.raw_weight()[1] == Approx(base.probe.raw_weight()[1] / 1000.0f).epsilon(1e-3));
  CHECK(fit.probe.scale()[1] == Approx(base.probe.scale()[1] * 1000.0f).epsilon(1e-5));
  // score = sigmoid(w . (h - mean) / scale + b), computed by hand
  const auto h = scaled.view().row_span(0);
  double z = fit.probe.bias();
  for (std::size_t j = 0; j < 5; ++j) z += double(fit.probe.weight()[j]) * (h[j] - fit.probe.mean()[j]) / fit.probe.scale()[j];
  CHECK(fit.probe.score(h) == Approx(1.0 / (1.0 + std::exp(-z))).epsilon(1e-5));
  // without standardization the scaler is the identity
  const auto raw = dms::fit_logistic(data.view(), data.y, {.standardize = false});
  for (std::size_t j = 0; j < 5; ++j) {
    CHECK(raw.probe.mean()[j] == 0.0f);
    CHECK(raw.probe.scale()[j] == 1.0f);
  }
  CHECK_FALSE(raw.probe.info().standardized);
}

TEST_CASE("fit_logistic and evaluate: errors name what is wrong", "[steer][probe]") {
  auto data = make_data(20, 4, 1.0, 1.0, 7);
  std::vector<int> one_class(20, 1);
  CHECK_THROWS_WITH(dms::fit_logistic(data.view(), one_class), Catch::Contains("needs both classes"));
  CHECK_THROWS_WITH(dms::fit_logistic(dms::matrix_view<const float>{data.x.data(), 0, 4, 4}, std::span<const int>{}),
                    Catch::Contains("no data"));
  CHECK_THROWS_WITH(dms::fit_logistic(data.view(), std::span<const int>(data.y).first(19)),
                    Catch::Contains("20 rows but 19 labels"));
  auto bad_label = data.y;
  bad_label[5] = 2;
  CHECK_THROWS_WITH(dms::fit_logistic(data.view(), bad_label), Catch::Contains("label 2 at row 5"));
  auto nan = data;
  nan.x[3 * 4 + 2] = std::nanf("");
  try {
    dms::fit_logistic(nan.view(), nan.y);
    FAIL("no error");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::numeric);
    CHECK_THAT(e.what(), Catch::Contains("row 3, column 2"));
  }
  auto inf = data;
  inf.x[7 * 4 + 0] = INFINITY;
  CHECK_THROWS_WITH(dms::fit_logistic(inf.view(), inf.y), Catch::Contains("row 7, column 0"));
  CHECK_THROWS_WITH(dms::fit_logistic(data.view(), data.y, {.C = 0.0}), Catch::Contains("C = 0"));
  const auto fit = dms::fit_logistic(data.view(), data.y);
  const auto wide = make_data(10, 5, 1.0, 1.0, 8);
  CHECK_THROWS_WITH(dms::evaluate(fit.probe, wide.view(), wide.y), Catch::Contains("the probe expects 4"));
  const std::vector<float> row(5, 0.0f);
  CHECK_THROWS_WITH(fit.probe.score(row), Catch::Contains("width 4, got 5"));
  CHECK_THROWS_AS(dms::logistic_probe({1.0f}, 0.0f, {0.0f}, {0.0f}), dms::error); // scale 0
}

TEST_CASE("save_probe / load_probe round trip", "[steer][probe]") {
  const auto dir = dms::test::scratch_dir("dms-steer", "probe-io");
  const auto data = make_data(200, 7, 1.0, 1.0, 9);
  const auto fit = dms::fit_logistic(
      data.view(), data.y,
      {.C = 0.25, .class_weight = dms::class_weight_mode::balanced, .at = {12, dms::site::resid_mid}});
  const auto path = dir / "probe.safetensors";
  dms::save_probe(path, fit.probe);
  const auto back = dms::load_probe(path);
  CHECK(back.info().at == dms::hook_point{12, dms::site::resid_mid});
  CHECK(back.info().C == 0.25);
  CHECK(back.info().class_weight == dms::class_weight_mode::balanced);
  CHECK(back.info().standardized);
  REQUIRE(back.n_features() == 7);
  for (std::size_t j = 0; j < 7; ++j) {
    CHECK(back.weight()[j] == fit.probe.weight()[j]);
    CHECK(back.mean()[j] == fit.probe.mean()[j]);
    CHECK(back.scale()[j] == fit.probe.scale()[j]);
  }
  CHECK(back.bias() == fit.probe.bias());
  for (std::int64_t i = 0; i < data.n; ++i) CHECK(back.score(data.view().row_span(i)) == fit.probe.score(data.view().row_span(i)));
  // the metadata is plain JSON a Python user can read
  const dms::safetensors_file f(path.string());
  CHECK_THAT(*f.metadata("dms.probe"), Catch::Contains("\"hook\":\"blocks.12.hook_resid_mid\""));
  // a safetensors file that is not a probe
  dms::safetensors_writer w;
  const float one = 1.0f;
  w.add("weight", dms::dtype::f32, {1}, std::as_bytes(std::span<const float>(&one, 1)));
  w.write(dir / "other.safetensors");
  CHECK_THROWS_WITH(dms::load_probe(dir / "other.safetensors"), Catch::Contains("not a probe written by dms::save_probe"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("stratified_split and sweep_layers find the informative layer", "[steer][probe]") {
  const std::int64_t n = 400, d = 6;
  const auto signal = make_data(n, d, 1.5, 1.0, 10);
  std::vector<labelled_data> layers{make_data(n, d, 0.0, 1.0, 11), signal, make_data(n, d, 0.0, 1.0, 12)};
  for (auto &l : layers) l.y = signal.y; // same examples, same labels; only layer 1 carries the signal
  const auto mask = dms::stratified_split(signal.y, 0.25, 42);
  CHECK(mask == dms::stratified_split(signal.y, 0.25, 42));
  CHECK(mask != dms::stratified_split(signal.y, 0.25, 43));
  std::size_t pos = 0, pos_held = 0, held = 0;
  for (std::size_t i = 0; i < mask.size(); ++i) {
    held += mask[i];
    pos += signal.y[i];
    pos_held += mask[i] && signal.y[i];
  }
  CHECK(held == 100);
  CHECK(double(pos_held) == Approx(0.25 * double(pos)).margin(0.5));
  std::vector<dms::matrix_view<const float>> views;
  for (auto &l : layers) views.push_back(l.view());
  const auto sweep = dms::sweep_layers(views, signal.y, mask, {}, /*first_layer=*/10);
  REQUIRE(sweep.size() == 3);
  CHECK(sweep[0].layer == 10);
  CHECK(sweep[1].heldout.roc_auc > 0.85);
  CHECK(sweep[0].heldout.roc_auc < 0.7);
  CHECK(sweep[2].heldout.roc_auc < 0.7);
  CHECK(sweep[1].heldout.n == 100);
  CHECK(dms::best_layer(sweep).layer == 11);
  for (const auto &e : sweep) CHECK(e.report.converged);
}

// ---------------------------------------------------------------------------------------------
// scikit-learn as the reference: the same matrices, StandardScaler + LogisticRegression.

namespace {
constexpr const char *sklearn_script = R"PY(
import sys, json
import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression
d = sys.argv[1]
C = float(sys.argv[2]); cw = None if sys.argv[3] == "none" else "balanced"
Xtr = np.load(d + "/xtr.npy").astype(np.float64); ytr = np.load(d + "/ytr.npy").astype(int)
Xte = np.load(d + "/xte.npy").astype(np.float64); yte = np.load(d + "/yte.npy").astype(int)
sc = StandardScaler().fit(Xtr)
lr = LogisticRegression(C=C, class_weight=cw, tol=1e-10, max_iter=100000).fit(sc.transform(Xtr), ytr)
np.save(d + "/coef.npy", lr.coef_[0].astype(np.float32))
print(json.dumps({"intercept": float(lr.intercept_[0]),
                  "accuracy": float(lr.score(sc.transform(Xte), yte)),
                  "n_iter": int(lr.n_iter_[0])}))
)PY";
} // namespace

TEST_CASE("peer: logistic probe agrees with scikit-learn", "[.peer][steer][probe]") {
  const auto dir = dms::test::scratch_dir("dms-steer", "sklearn");
  const std::string python = dms::test::peer_python(dir, "numpy, sklearn");
  struct case_t {
    double p1, C;
    const char *cw;
    std::uint64_t seed;
  };
  for (const case_t c : {case_t{0.5, 1.0, "none", 20}, case_t{0.15, 0.1, "none", 21}, case_t{0.15, 1.0, "balanced", 22},
                         case_t{0.5, 10.0, "balanced", 23}}) {
    INFO("p1 " << c.p1 << " C " << c.C << " class_weight " << c.cw);
    const auto train = make_data(600, 32, 0.7, 1.0, c.seed, c.p1);
    const auto test = make_data(300, 32, 0.7, 1.0, c.seed + 100, c.p1);
    auto as_float = [](const std::vector<int> &y) { return std::vector<float>(y.begin(), y.end()); };
    const std::vector<std::int64_t> str{train.n, train.d}, ste{test.n, test.d}, ytr{train.n}, yte{test.n};
    dms::write_npy(dir / "xtr.npy", train.x, str);
    dms::write_npy(dir / "xte.npy", test.x, ste);
    dms::write_npy(dir / "ytr.npy", as_float(train.y), ytr);
    dms::write_npy(dir / "yte.npy", as_float(test.y), yte);
    const std::string out = dms::test::run_python(python, sklearn_script, {dir.string(), std::to_string(c.C), c.cw}, dir);
    const auto j = nlohmann::json::parse(out);
    const auto coef = dms::read_npy(dir / "coef.npy").data;
    const auto fit = dms::fit_logistic(
        train.view(), train.y,
        {.C = c.C, .class_weight = std::string(c.cw) == "balanced" ? dms::class_weight_mode::balanced
                                                                     : dms::class_weight_mode::none});
    REQUIRE(fit.report.converged);
    const double cos = cosine(fit.probe.weight(), coef);
    INFO("cosine " << cos << " dms bias " << fit.probe.bias() << " sklearn " << j["intercept"].get<double>());
    CHECK(cos >= 0.999);
    CHECK(fit.probe.bias() == Approx(j["intercept"].get<double>()).margin(1e-3));
    const auto m = dms::evaluate(fit.probe, test.view(), test.y);
    CHECK(std::abs(m.accuracy - j["accuracy"].get<double>()) <= 0.005);
  }
  std::filesystem::remove_all(dir);
}

namespace {
//! Cholesky through panels and a given trailing-update kernel (an ISA variant).
template <class T, class Trailing> bool factor_with(T *h, std::size_t D, std::size_t ld, Trailing trailing) {
  namespace d = dms::detail;
  for (std::size_t k0 = 0; k0 < D; k0 += d::cholesky_panel_rows) {
    const std::size_t k1 = std::min(D, k0 + d::cholesky_panel_rows);
    if (!d::cholesky_panel(h, D, ld, k0, k1)) return false;
    if (k1 < D) trailing(h, ld, k0, k1 - k0, k1, D);
  }
  return true;
}
} // namespace

TEST_CASE("probe solver kernels: every compiled ISA variant agrees with the portable one", "[steer][probe]") {
  namespace d = dms::detail;
  const std::size_t n = 137, w = 53, ld = 144; // odd sizes: partial tiles, vector remainders
  std::vector<double> z(n * w), a(n), b(n);
  std::uint64_t x = 42;
  auto next = [&] {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return static_cast<double>(x % 20001) / 10000.0 - 1.0;
  };
  for (auto &v : z) v = next();
  for (std::size_t i = 0; i < n; ++i) a[i] = next(), b[i] = next();
  // Gram: the portable tiles against a plain triple loop, then the dispatched and the AVX2 ones,
  // with and without a pool, against the portable ones.
  std::vector<double> g(n * n), ref(n * n, 0.0);
  d::gram_rows_body<d::simd<double, 2>, 2, 2>(z.data(), n, w, g.data(), 0, n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t k = 0; k < w; ++k) ref[i * n + j] += z[i * w + k] * z[j * w + k];
  for (std::size_t i = 0; i < n * n; ++i) REQUIRE(g[i] == Approx(ref[i]).epsilon(1e-12).margin(1e-12));
  dms::thread_pool pool(2);
  std::vector<double> gd(n * n);
  d::gram(z.data(), n, w, gd.data());
  for (std::size_t i = 0; i < n * n; ++i) REQUIRE(gd[i] == Approx(ref[i]).epsilon(1e-12).margin(1e-12));
  std::vector<double> gp(n * n);
  d::gram(z.data(), n, w, gp.data(), &pool);
  CHECK(gp == gd); // the same bits on a pool
  // An SPD matrix (G + I), factored in float and double by each variant, checked by U^T U = H.
  std::vector<double> h(n * n);
  for (std::size_t i = 0; i < n * n; ++i) h[i] = ref[i] + (i % (n + 1) == 0 ? 1.0 : 0.0);
  auto check_factor = [&](const auto &u, std::size_t stride, double tol) {
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = i; j < n; ++j) {
        double s = 0;
        for (std::size_t k = 0; k <= i; ++k) s += double(u[k * stride + i]) * double(u[k * stride + j]);
        REQUIRE(s == Approx(h[i * n + j]).epsilon(tol).margin(tol * 10));
      }
  };
  auto padded = [&](auto zero) {
    std::vector<decltype(zero)> m(n * ld, zero);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) m[i * ld + j] = static_cast<decltype(zero)>(h[i * n + j]);
    return m;
  };
  // The substitution solves H y = rhs (two right-hand sides at once for a float factor).
  auto check_solve = [&](const auto &u, std::size_t stride, double tol) {
    std::vector<double> y0 = a, y1 = b;
    if constexpr (std::is_same_v<std::decay_t<decltype(u[0])>, float>) {
      d::cholesky_substitute(u.data(), n, stride, {y0, y1});
    } else {
      d::cholesky_substitute(u.data(), n, stride, {y0});
      d::cholesky_substitute(u.data(), n, stride, {y1});
    }
    for (std::size_t i = 0; i < n; ++i) {
      double s0 = 0, s1 = 0;
      for (std::size_t j = 0; j < n; ++j) s0 += h[i * n + j] * y0[j], s1 += h[i * n + j] * y1[j];
      REQUIRE(s0 == Approx(a[i]).margin(tol));
      REQUIRE(s1 == Approx(b[i]).margin(tol));
    }
  };
  auto portable = [](auto *u, std::size_t stride, std::size_t k0, std::size_t nb, std::size_t lo, std::size_t hi) {
    using T = std::remove_pointer_t<decltype(u)>;
    d::cholesky_trailing_body<d::simd<T, 16 / sizeof(T)>, 2>(u, stride, k0, nb, lo, hi);
  };
  auto dispatched = [](auto *u, std::size_t stride, std::size_t k0, std::size_t nb, std::size_t lo, std::size_t hi) {
    d::cholesky_trailing(u, stride, k0, nb, lo, hi);
  };
  auto f_port = padded(0.0f), f_disp = padded(0.0f);
  REQUIRE(factor_with(f_port.data(), n, ld, portable));
  REQUIRE(factor_with(f_disp.data(), n, ld, dispatched));
  check_factor(f_port, ld, 1e-5);
  check_factor(f_disp, ld, 1e-5);
  check_solve(f_disp, ld, 1e-2); // float factor: ~1e-4 relative here
  auto d_port = padded(0.0), d_disp = padded(0.0);
  REQUIRE(factor_with(d_port.data(), n, ld, portable));
  REQUIRE(factor_with(d_disp.data(), n, ld, dispatched));
  check_factor(d_port, ld, 1e-12);
  check_factor(d_disp, ld, 1e-12);
  check_solve(d_disp, ld, 1e-9);
  std::vector<double> un(h); // unpadded rows (stride n): the scalar remainder
  REQUIRE(d::cholesky_factor(un.data(), n, n));
  check_factor(un, n, 1e-12);
  // On a pool: the same bits as without.
  auto f_pool = padded(0.0f), f_one = padded(0.0f);
  REQUIRE(d::cholesky_factor(f_pool.data(), n, ld, &pool));
  REQUIRE(d::cholesky_factor(f_one.data(), n, ld));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i; j < n; ++j) REQUIRE(f_pool[i * ld + j] == f_one[i * ld + j]);
  // Products with G, two vectors at once, on a pool, against the portable kernel.
  std::vector<double> ga(n), gb(n), ra(n), rb(n);
  d::rows_dot2_body<d::simd<double, 2>>(ref.data(), n, n, a.data(), b.data(), ra.data(), rb.data());
  d::symmetric_products(ref.data(), n, a.data(), b.data(), ga.data(), gb.data(), &pool);
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(ga[i] == Approx(ra[i]).epsilon(1e-12).margin(1e-9));
    REQUIRE(gb[i] == Approx(rb[i]).epsilon(1e-12).margin(1e-9));
  }
#if defined(DMS_X86_DISPATCH)
  if (d::half_isa_supported(d::half_isa::avx2)) { // the AVX2 variants even on an AVX-512 CPU
    d::gram_rows_avx2(z.data(), n, w, gd.data(), 0, n);
    for (std::size_t i = 0; i < n * n; ++i) REQUIRE(gd[i] == Approx(ref[i]).epsilon(1e-12).margin(1e-12));
    d::rows_dot2_avx2(ref.data(), n, n, a.data(), b.data(), ga.data(), gb.data());
    for (std::size_t i = 0; i < n; ++i) REQUIRE(ga[i] == Approx(ra[i]).epsilon(1e-12).margin(1e-9));
    auto avx2 = [](auto *u, std::size_t stride, std::size_t k0, std::size_t nb, std::size_t lo, std::size_t hi) {
      d::cholesky_trailing_avx2(u, stride, k0, nb, lo, hi);
    };
    auto f2 = padded(0.0f);
    REQUIRE(factor_with(f2.data(), n, ld, avx2));
    check_factor(f2, ld, 1e-5);
    auto d2 = padded(0.0);
    REQUIRE(factor_with(d2.data(), n, ld, avx2));
    check_factor(d2, ld, 1e-12);
  }
#endif
  // Not positive definite: reported, not factored.
  auto bad = padded(0.0);
  bad[5 * ld + 5] = -1.0;
  CHECK_FALSE(d::cholesky_factor(bad.data(), n, ld));
}

TEST_CASE("fit_logistic: a thread pool gives the same probe, bit for bit", "[steer][probe]") {
  const auto train = make_data(150, 400, 0.3, 1.0, 21, /*p1=*/0.3);
  dms::thread_pool pool(2);
  const dms::logistic_options opt{.C = 1.0, .class_weight = dms::class_weight_mode::balanced};
  auto pooled = opt;
  pooled.pool = &pool;
  const auto one = dms::fit_logistic(train.view(), train.y, opt);
  const auto two = dms::fit_logistic(train.view(), train.y, pooled);
  REQUIRE(one.report.converged);
  CHECK(two.report.iterations == one.report.iterations);
  CHECK(std::vector<float>(two.probe.weight().begin(), two.probe.weight().end()) ==
        std::vector<float>(one.probe.weight().begin(), one.probe.weight().end()));
  CHECK(two.probe.bias() == one.probe.bias());
}
