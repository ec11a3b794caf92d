// dms's merge strategies against mergekit 0.1.5's own code, on random tensors (hidden: [.peer]).
//
// C++ writes the inputs (and, for DARE and DELLA, its random masks) as .npy; a Python script
// calls mergekit's merge methods (registry.get(...).merge_group, slerp(), the linear kernel) on
// them and writes mergekit's outputs; the test compares. mergekit draws its masks from torch's
// global generator, so for DARE and DELLA the script swaps torch.bernoulli for one that returns
// dms's masks (and records the probabilities mergekit asked for): the rest of the computation,
// rescale, sign election and mixing, is then mergekit's own and must agree to fp32 rounding, and
// DELLA's rank-based probabilities are compared exactly.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dms/formats/npy.hpp"
#include "dms/merge/sparsify.hpp"
#include "dms/merge/strategies.hpp"
#include "strategy_test_support.hpp"
#include "support/external.hpp"
#include "support/random_floats.hpp"
#include "support/scratch_dir.hpp"

namespace {

constexpr const char *script = R"PY(
import sys, pathlib
import numpy as np
import torch
import mergekit.sparsify as sp
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorEntry, TensorGroup, TensorBatch, PerInputValues
from mergekit.merge_methods.slerp import slerp
from mergekit.merge_methods.linear import linear_merge

d = pathlib.Path(sys.argv[1])
load = lambda name: torch.from_numpy(np.load(d / f"{name}.npy"))
save = lambda name, t: np.save(d / f"{name}.npy", t.detach().to(torch.float32).numpy())
base = load("base")
models = [load(f"m{i}") for i in range(3)]
ids = ["m0", "m1", "m2"]

masks, probs = [], []
def fake_bernoulli(p, *args, **kwargs):
    probs.append(p.clone())
    return masks.pop(0).reshape(p.shape).to(p.dtype)
torch.bernoulli = fake_bernoulli  # mergekit.sparsify calls torch.bernoulli

def per(values):
    return PerInputValues(list(zip(ids[: len(values)], values)))

def group(n, with_base=True):
    entries = [TensorEntry(ids[i], models[i]) for i in range(n)]
    if with_base:
        entries.insert(0, TensorEntry("base", base, is_base=True))
    return TensorGroup(tuple(entries))

def gta(case, method, weights, density, normalize, rescale, lam=1.0, extra=None, use_masks=False):
    global masks, probs
    if use_masks:
        masks = [load(f"mask_{case}_{i}") for i in range(3)]
        probs = []
    params = dict(int8_mask=False, normalize=normalize, rescale=rescale, weight=per(weights),
                  density=per(density), **{"lambda": lam})
    for k, v in (extra or {}).items():
        params[k] = per(v)
    save(f"mk_{case}", registry.get(method).merge_group(group(3), **params))
    for i, p in enumerate(probs):
        save(f"mk_probs_{case}_{i}", p)

# linear: the batched kernel, inputs stacked as [1, *shape], weights [1, N]
batch = TensorBatch(tuple(m[None] for m in models), base_index=None)
save("mk_linear", linear_merge.implementation(batch, weight=torch.tensor([[0.2, 0.5, 0.3]]), normalize=True)[0])
gta("task_arithmetic", "task_arithmetic", [0.5, 0.8, -0.3], [1.0] * 3, False, False, lam=0.9)
gta("ties", "ties", [1.0, 0.6, 0.8], [0.3, 0.5, 0.7], True, False)
gta("ties_rescale", "ties", [1.0, 0.6, 0.8], [0.3, 0.5, 0.7], True, True, lam=1.3)
gta("breadcrumbs", "breadcrumbs", [0.7, 0.5, 0.4], [0.5] * 3, False, False, extra={"gamma": [0.05, 0.02, 0.1]})
gta("breadcrumbs_ties", "breadcrumbs_ties", [1.0, 0.5, 0.7], [0.4] * 3, False, True, extra={"gamma": [0.01] * 3})
gta("dare_ties", "dare_ties", [1.0, 0.6, 0.8], [0.5, 0.3, 0.7], False, True, use_masks=True)
gta("dare_linear", "dare_linear", [0.3, 0.3, 0.4], [0.3] * 3, False, True, use_masks=True)
gta("della", "della", [1.0, 0.6, 0.8], [0.5] * 3, True, True, extra={"epsilon": [0.2] * 3}, use_masks=True)
gta("della_linear", "della_linear", [0.5, 0.3, 0.4], [0.6] * 3, False, False, extra={"epsilon": [0.15] * 3}, use_masks=True)

far = load("far")
save("mk_slerp", slerp(torch.tensor([0.3]), base[None], far[None])[0])
save("mk_slerp_near", slerp(torch.tensor([0.7]), base[None], models[0][None])[0])

nus = registry.get("nuslerp")
save("mk_nuslerp", nus.merge_group(group(2), weight=per([0.4, 0.6]), nuslerp_row_wise=False, nuslerp_flatten=True))
save("mk_nuslerp_nobase", nus.merge_group(group(2, False), weight=per([0.4, 0.6]), nuslerp_row_wise=False, nuslerp_flatten=True))
save("mk_nuslerp_rows", nus.merge_group(group(2), weight=per([0.4, 0.6]), nuslerp_row_wise=False, nuslerp_flatten=False))
save("mk_nuslerp_cols", nus.merge_group(group(2, False), weight=per([1.0, 3.0]), nuslerp_row_wise=True, nuslerp_flatten=False))

ms = registry.get("model_stock")
save("mk_model_stock", ms.merge_group(group(3), filter_wise=False))
save("mk_model_stock_filters", ms.merge_group(group(3), filter_wise=True))
print("ok")
)PY";

constexpr std::int64_t rows = 48, cols = 64;
constexpr std::size_t n = static_cast<std::size_t>(rows * cols);

struct peer_fixture {
  dms::test::fs::path dir = dms::test::scratch_dir("dms-merge", "mergekit-methods");
  std::vector<std::int64_t> shape{rows, cols};
  std::vector<float> base = dms::test::random_floats(n, 1), far = dms::test::random_floats(n, 2);
  std::vector<std::vector<float>> models;

  peer_fixture() {
    for (std::uint32_t i = 0; i < 3; ++i) {
      auto x = dms::test::random_floats(n, 10 + i);
      for (std::size_t j = 0; j < n; ++j) x[j] = base[j] + 0.05f * x[j];
      models.push_back(x);
    }
    save("base", base);
    save("far", far);
    for (std::size_t i = 0; i < 3; ++i) save("m" + std::to_string(i), models[i]);
  }
  void save(const std::string &name, const std::vector<float> &v) const {
    dms::write_npy(dir / (name + ".npy"), v, shape);
  }
  dms::test::merge_case make(std::size_t n_models, bool with_base = true) const {
    dms::test::merge_case c;
    c.models.assign(models.begin(), models.begin() + static_cast<std::ptrdiff_t>(n_models));
    if (with_base) c.base = base;
    c.shape = shape;
    c.name = "model.layers.3.self_attn.q_proj.weight";
    return c;
  }
};

void set_per_model(dms::merge_parameters &p, const char *key, std::vector<double> v) {
  for (std::size_t i = 0; i < v.size(); ++i) p.set(key, static_cast<std::int32_t>(i), v[i]);
}

void compare(const peer_fixture &f, const std::string &name, const std::vector<float> &ours, float tol = 2e-6f) {
  const auto theirs = dms::read_npy(f.dir / ("mk_" + name + ".npy"));
  REQUIRE(theirs.data.size() == ours.size());
  double max_diff = 0.0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    const double diff = std::abs(static_cast<double>(ours[i]) - theirs.data[i]) /
                        std::max(1.0, std::abs(static_cast<double>(theirs.data[i])));
    if (diff > max_diff) max_diff = diff, worst = i;
  }
  INFO(name << ": max relative difference " << max_diff << " at " << worst << " (dms " << ours[worst]
            << ", mergekit " << theirs.data[worst] << ")");
  CHECK(max_diff <= tol);
}

//! dms's keep mask for model i of a DARE merge: drop_random on ones.
std::vector<float> dare_mask(const dms::test::merge_case &c, std::size_t i, double density) {
  std::vector<float> m(c.size(), 1.0f);
  dms::drop_random(m, density, dms::rescale_mode::none,
                   dms::philox_stream(dms::key_for(c.seed, c.name, static_cast<std::uint32_t>(i)), 0), 0);
  return m;
}
//! dms's keep mask for model i of a DELLA merge: its survivors.
std::vector<float> della_mask(const dms::test::merge_case &c, std::size_t i, double density, double epsilon) {
  std::vector<float> d(c.size());
  for (std::size_t j = 0; j < d.size(); ++j) d[j] = c.models[i][j] - c.base[j];
  dms::della_magprune(d, c.shape, density, epsilon, dms::rescale_mode::none,
                      dms::philox_stream(dms::key_for(c.seed, c.name, static_cast<std::uint32_t>(i)), 0), 0);
  for (float &v : d) v = v != 0.0f ? 1.0f : 0.0f;
  return d;
}
//! DELLA's keep probabilities for one task vector, straight from the definition.
std::vector<float> della_probs(const std::vector<float> &delta, double density, double epsilon) {
  std::vector<float> p(delta.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<std::size_t> order(static_cast<std::size_t>(cols));
    for (std::size_t k = 0; k < order.size(); ++k) order[k] = static_cast<std::size_t>(r * cols) + k;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return std::abs(delta[a]) < std::abs(delta[b]); });
    for (std::size_t k = 0; k < order.size(); ++k)
      p[order[k]] = static_cast<float>((density - epsilon) + 2 * epsilon * static_cast<double>(k) / static_cast<double>(cols - 1));
  }
  return p;
}

} // namespace

TEST_CASE("merge strategies match mergekit 0.1.5", "[.peer][merge][strategy]") {
  peer_fixture f;
  const std::string python = dms::test::peer_python(f.dir, "mergekit, torch, numpy");

  // Masks first: the script reads them.
  {
    auto c = f.make(3);
    const double dare_ties_density[] = {0.5, 0.3, 0.7};
    for (std::size_t i = 0; i < 3; ++i) {
      f.save("mask_dare_ties_" + std::to_string(i), dare_mask(c, i, dare_ties_density[i]));
      f.save("mask_dare_linear_" + std::to_string(i), dare_mask(c, i, 0.3));
      f.save("mask_della_" + std::to_string(i), della_mask(c, i, 0.5, 0.2));
      f.save("mask_della_linear_" + std::to_string(i), della_mask(c, i, 0.6, 0.15));
    }
  }
  dms::test::run_python(python, script, {f.dir.string()}, f.dir);

  {
    auto c = f.make(3, false);
    set_per_model(c.params, "weight", {0.2, 0.5, 0.3});
    compare(f, "linear", c.run("linear"));
  }
  struct gta_case {
    const char *name, *method;
    std::vector<double> weight, density;
    double lambda;
    std::vector<std::pair<const char *, double>> global;
    std::vector<std::pair<const char *, std::vector<double>>> per_model;
  };
  const gta_case cases[] = {
      {"task_arithmetic", "task_arithmetic", {0.5, 0.8, -0.3}, {1, 1, 1}, 0.9, {}, {}},
      {"ties", "ties", {1.0, 0.6, 0.8}, {0.3, 0.5, 0.7}, 1.0, {}, {}},
      {"ties_rescale", "ties", {1.0, 0.6, 0.8}, {0.3, 0.5, 0.7}, 1.3, {{"rescale", 1.0}}, {}},
      {"breadcrumbs", "breadcrumbs", {0.7, 0.5, 0.4}, {0.5, 0.5, 0.5}, 1.0, {}, {{"gamma", {0.05, 0.02, 0.1}}}},
      {"breadcrumbs_ties", "breadcrumbs_ties", {1.0, 0.5, 0.7}, {0.4, 0.4, 0.4}, 1.0, {{"rescale", 1.0}}, {}},
      {"dare_ties", "dare_ties", {1.0, 0.6, 0.8}, {0.5, 0.3, 0.7}, 1.0, {}, {}},
      {"dare_linear", "dare_linear", {0.3, 0.3, 0.4}, {0.3, 0.3, 0.3}, 1.0, {}, {}},
      {"della", "della", {1.0, 0.6, 0.8}, {0.5, 0.5, 0.5}, 1.0, {{"epsilon", 0.2}}, {}},
      {"della_linear", "della_linear", {0.5, 0.3, 0.4}, {0.6, 0.6, 0.6}, 1.0, {{"epsilon", 0.15}, {"rescale", 0.0}}, {}},
  };
  for (const auto &gc : cases) {
    auto c = f.make(3);
    set_per_model(c.params, "weight", gc.weight);
    set_per_model(c.params, "density", gc.density);
    c.params.set("lambda", gc.lambda);
    for (const auto &[k, v] : gc.global) c.params.set(k, v);
    for (const auto &[k, v] : gc.per_model) set_per_model(c.params, k, v);
    compare(f, gc.name, c.run(gc.method), 1e-5f);
  }
  // DELLA's deterministic part: the probabilities mergekit asked torch.bernoulli for.
  {
    auto c = f.make(3);
    for (std::size_t i = 0; i < 3; ++i) {
      std::vector<float> delta(n);
      for (std::size_t j = 0; j < n; ++j) delta[j] = c.models[i][j] - c.base[j];
      compare(f, "probs_della_" + std::to_string(i), della_probs(delta, 0.5, 0.2), 1e-6f);
    }
    // DARE keeps ~density of the entries.
    const auto m = dare_mask(c, 0, 0.3);
    const double kept = static_cast<double>(std::count(m.begin(), m.end(), 1.0f)) / static_cast<double>(n);
    CHECK(std::abs(kept - 0.3) < 5 * std::sqrt(0.3 * 0.7 / static_cast<double>(n)));
  }
  {
    auto c = f.make(0);
    c.models = {f.far};
    c.params.set("t", 0.3);
    compare(f, "slerp", c.run("slerp"));
    auto near = f.make(1);
    near.params.set("t", 0.7);
    compare(f, "slerp_near", near.run("slerp"));
  }
  {
    auto c = f.make(2);
    set_per_model(c.params, "weight", {0.4, 0.6});
    compare(f, "nuslerp", c.run("nuslerp"));
    c.params.set("nuslerp_flatten", 0.0);
    compare(f, "nuslerp_rows", c.run("nuslerp"));
    auto nb = f.make(2, false);
    set_per_model(nb.params, "weight", {0.4, 0.6});
    compare(f, "nuslerp_nobase", nb.run("nuslerp"));
    set_per_model(nb.params, "weight", {1.0, 3.0});
    nb.params.set("nuslerp_flatten", 0.0).set("nuslerp_row_wise", 1.0);
    compare(f, "nuslerp_cols", nb.run("nuslerp"));
  }
  {
    auto c = f.make(3);
    compare(f, "model_stock", c.run("model_stock"));
    c.params.set("filter_wise", 1.0);
    compare(f, "model_stock_filters", c.run("model_stock"));
  }
}
