// Whole-model TIES (`trim_scope: model`): the engine's first pass finds each model's threshold
// over all of its tensors, and the merge equals a brute-force whole-model TIES computed here
// (sort every |delta| of a model, take the k-th largest, trim, elect signs, disjoint mean).
#include <catch2/catch.hpp>

// Built with dms::merge only (yaml-cpp); the folder also builds without it.
#if defined(DMS_HAS_MERGE)

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <dms/merge/builtin_strategies.hpp>
#include <dms/merge/engine.hpp>

#include "engine_fixtures.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace dms;
using namespace dms::test;

namespace {

std::string yaml_path(const fs::path &p) { return "'" + p.string() + "'"; }

// Large enough that whole-model and per-tensor thresholds differ on most tensors (3840 entries).
const tiny_dims dims{.hidden = 16, .intermediate = 32, .vocab = 40, .layers = 3, .heads = 2, .kv_heads = 1};

struct model_spec {
  std::uint64_t seed;
  double weight, density;
};

std::string ties_yaml(const fs::path &dir, const std::vector<model_spec> &models, const std::string &extra) {
  std::string y = "merge_method: ties\nbase_model: " + yaml_path(dir / "base") + "\n" + extra + "models:\n";
  for (const auto &m : models)
    y += "  - model: " + yaml_path(dir / ("m" + std::to_string(m.seed))) + "\n    parameters: {weight: " +
         std::to_string(m.weight) + ", density: " + std::to_string(m.density) + "}\n";
  return y;
}

void write_models(const fs::path &dir, const std::vector<model_spec> &models) {
  write_tiny_hf(dir / "base", 100, dims);
  for (const auto &m : models) write_tiny_hf(dir / ("m" + std::to_string(m.seed)), m.seed, dims);
}

//! The original TIES code's merge, by brute force: thresholds (out) and the merged tensors.
std::map<std::string, std::vector<float>> brute_force_ties(const std::vector<model_spec> &models,
                                                           std::vector<float> &thresholds) {
  const auto layout = tiny_layout(dims);
  std::map<std::string, std::vector<float>> base;
  std::vector<std::map<std::string, std::vector<float>>> delta(models.size());
  for (const auto &[name, shape] : layout) {
    base[name] = tiny_values(100, name, numel_of(shape));
    for (std::size_t m = 0; m < models.size(); ++m) {
      auto x = tiny_values(models[m].seed, name, numel_of(shape));
      for (std::size_t j = 0; j < x.size(); ++j) x[j] = x[j] - base[name][j];
      delta[m][name] = std::move(x);
    }
  }
  thresholds.assign(models.size(), 0.0f);
  for (std::size_t m = 0; m < models.size(); ++m) {
    std::vector<float> all;
    for (const auto &[name, d] : delta[m])
      for (float v : d) all.push_back(std::abs(v));
    std::sort(all.begin(), all.end(), std::greater<>());
    const auto k = std::max<std::size_t>(1, static_cast<std::size_t>(models[m].density * static_cast<double>(all.size())));
    thresholds[m] = all[k - 1];
    for (auto &[name, d] : delta[m])
      for (float &v : d) v = std::abs(v) >= thresholds[m] ? v : 0.0f;
  }
  std::map<std::string, std::vector<float>> out;
  for (const auto &[name, shape] : layout) {
    const std::size_t n = numel_of(shape);
    std::vector<float> o(n);
    for (std::size_t j = 0; j < n; ++j) {
      double elect = 0;
      for (std::size_t m = 0; m < models.size(); ++m) elect += models[m].weight * delta[m][name][j];
      double mixed = 0, divisor = 0;
      for (std::size_t m = 0; m < models.size(); ++m) {
        const double wd = models[m].weight * delta[m][name][j];
        if (elect >= 0 ? wd > 0 : wd < 0) mixed += wd, divisor += models[m].weight;
      }
      o[j] = static_cast<float>(base[name][j] + mixed / (divisor == 0 ? 1.0 : divisor));
    }
    out[name] = std::move(o);
  }
  return out;
}

} // namespace

TEST_CASE("ties, trim_scope model: equals brute-force whole-model TIES, differs from per-tensor", "[merge][engine][ties]") {
  const auto dir = scratch_dir("dms-ties-model", "brute");
  const std::vector<model_spec> models = {{1, 1.0, 0.3}, {2, 0.5, 0.5}, {3, 0.75, 0.2}};
  write_models(dir, models);
  const merge_config whole = parse_merge_config(ties_yaml(dir, models, "trim_scope: model\n"), "whole.yaml");
  REQUIRE(whole.trim_scope == magnitude_trim_scope::model);

  std::vector<float> want_thresholds;
  const auto want = brute_force_ties(models, want_thresholds);

  // Small chunks and several threads: the first pass splits every tensor into chunks and lanes.
  for (const std::size_t threads : {std::size_t{1}, std::size_t{3}}) {
    INFO("threads " << threads);
    const fs::path out = dir / ("out" + std::to_string(threads));
    merge_engine e(whole, builtin_strategy("ties"), {.output = out, .threads = threads, .chunk_elements = 256});
    e.run();
    REQUIRE(e.trim_thresholds().size() == models.size());
    for (std::size_t m = 0; m < models.size(); ++m)
      CHECK(e.trim_thresholds().at(m + 1) == want_thresholds[m]); // source 0 is the base
    const auto got = read_hf(out);
    for (const auto &[name, w] : want) {
      INFO(name);
      REQUIRE(got.at(name).size() == w.size());
      for (std::size_t j = 0; j < w.size(); ++j) REQUIRE(got.at(name)[j] == w[j]);
    }
  }

  // mergekit's per-tensor trimming keeps a different set on most tensors.
  merge_engine per_tensor(parse_merge_config(ties_yaml(dir, models, ""), "tensor.yaml"), builtin_strategy("ties"),
                          {.output = dir / "tensor"});
  per_tensor.run();
  CHECK(per_tensor.trim_thresholds().empty());
  const auto got = read_hf(dir / "tensor");
  std::size_t differing = 0;
  for (const auto &[name, w] : want) differing += got.at(name) != w;
  CHECK(differing >= want.size() / 2);
}

TEST_CASE("ties, trim_scope model: compute() without run() and the plan text", "[merge][engine][ties]") {
  const auto dir = scratch_dir("dms-ties-model", "compute");
  const std::vector<model_spec> models = {{4, 1.0, 0.25}, {5, 1.0, 0.25}};
  write_models(dir, models);
  merge_engine e(parse_merge_config(ties_yaml(dir, models, "trim_scope: model\n"), "t.yaml"), builtin_strategy("ties"),
                 {});
  CHECK_THAT(e.plan().describe(), Catch::Contains("trim scope: model"));
  std::vector<float> thresholds;
  const auto want = brute_force_ties(models, thresholds);
  for (std::size_t i = 0; i < e.plan().tensors.size(); ++i) CHECK(e.compute(i) == want.at(e.plan().tensors[i].name));
  // The thresholds are in the plan now, per model.
  CHECK(e.plan().tensors[0].params.find("trim_threshold", 1) == static_cast<double>(thresholds[1]));

  merge_engine t(parse_merge_config(ties_yaml(dir, models, "trim_scope: tensor\n"), "t.yaml"), builtin_strategy("ties"),
                 {});
  CHECK_THAT(t.plan().describe(), Catch::Contains("trim scope: tensor"));
}

TEST_CASE("ties, trim_scope model: configs it cannot honour are errors", "[merge][engine][ties]") {
  const auto dir = scratch_dir("dms-ties-model", "errors");
  const std::vector<model_spec> models = {{6, 1.0, 0.3}, {7, 1.0, 0.3}};
  write_models(dir, models);
  auto engine_for = [&](const std::string &yaml) {
    const merge_config c = parse_merge_config(yaml, "e.yaml");
    return merge_engine(c, builtin_strategy(c.merge_method), {});
  };
  CHECK_THROWS_WITH(parse_merge_config(ties_yaml(dir, models, "trim_scope: layer\n"), "e.yaml"),
                    Catch::Contains("trim_scope 'layer'") && Catch::Contains("'tensor'") && Catch::Contains("'model'"));
  CHECK_THROWS_WITH(parse_merge_config(ties_yaml(dir, models, "trim_scop: model\n"), "e.yaml"),
                    Catch::Contains("unknown key 'trim_scop'"));
  std::string dare = ties_yaml(dir, models, "trim_scope: model\n");
  dare.replace(dare.find("ties"), 4, "dare_ties");
  CHECK_THROWS_WITH(engine_for(dare), Catch::Contains("trim_scope: model needs") && Catch::Contains("'dare_ties'"));
  // One density per model: a gradient gives each layer its own.
  std::string gradient = ties_yaml(dir, models, "trim_scope: model\n");
  gradient.replace(gradient.find("density: 0.300000"), 17, "density: [0.2, 0.4]");
  CHECK_THROWS_WITH(engine_for(gradient), Catch::Contains("one density") && Catch::Contains("m6"));
  CHECK_THROWS_WITH(engine_for(ties_yaml(dir, models, "trim_scope: model\nparameters: {trim_threshold: 0.1}\n")),
                    Catch::Contains("trim_threshold is set by the engine"));
}

#if defined(DMS_CLI_PATH)
TEST_CASE("dms merge: --dry-run shows the trim scope, the run reports thresholds", "[merge][engine][ties][cli]") {
  const auto dir = scratch_dir("dms-ties-model", "cli");
  const std::vector<model_spec> models = {{8, 1.0, 0.3}, {9, 1.0, 0.6}};
  write_models(dir, models);
  write_text_file(dir / "whole.yaml", ties_yaml(dir, models, "trim_scope: model\n"));
  write_text_file(dir / "tensor.yaml", ties_yaml(dir, models, ""));
  const std::string dms_cli = DMS_CLI_PATH;
  auto r = run(quote(dms_cli) + " merge " + quote((dir / "whole.yaml").string()) + " --dry-run", dir);
  INFO(r.err);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("trim scope: model"));
  r = run(quote(dms_cli) + " merge " + quote((dir / "tensor.yaml").string()) + " --dry-run", dir);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("trim scope: tensor"));
  r = run(quote(dms_cli) + " merge " + quote((dir / "whole.yaml").string()) + " -o " + quote((dir / "out").string()), dir);
  INFO(r.err);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.err, Catch::Contains("whole-model trim threshold of") && Catch::Contains("m8"));
  std::vector<float> thresholds;
  const auto want = brute_force_ties(models, thresholds);
  const auto got = read_hf(dir / "out");
  for (const auto &[name, w] : want) CHECK(got.at(name) == w);
}
#endif

#endif // DMS_HAS_MERGE
