// Parity with mergekit end to end: the same YAML configs through `mergekit-yaml` (mergekit 0.1.5
// in the peer venv, CPU, float32) and through `dms merge`, on tiny Llama checkpoints written by
// scripts/make-tiny-llama; every tensor of the two outputs is compared.
//
// mergekit runs in one Python process for all configs (its import alone takes most of a minute on
// a loaded machine), through the same entry point mergekit-yaml calls (mergekit.merge.run_merge).
#include <catch2/catch.hpp>

// Built with dms::merge only (yaml-cpp); the folder also builds without it.
#if defined(DMS_HAS_MERGE)

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "engine_fixtures.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"

#if defined(DMS_CLI_PATH) && defined(DMS_SOURCE_DIR)

namespace fs = std::filesystem;
using namespace dms;
using namespace dms::test;

namespace {

struct peer_case {
  std::string name;
  std::string yaml; // with {D} standing for the model directory
  float tolerance;  // max abs difference allowed (f32 outputs; see each case)
};

std::string expand(std::string s, const fs::path &dir) {
  for (std::size_t p; (p = s.find("{D}")) != std::string::npos;) s.replace(p, 3, dir.string());
  return s;
}

const char *run_mergekit_py = R"PY(
import sys, yaml, torch
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
torch.manual_seed(0)
for cfg_path, out in zip(sys.argv[1::2], sys.argv[2::2]):
    with open(cfg_path) as f:
        cfg = MergeConfiguration.model_validate(yaml.safe_load(f))
    run_merge(cfg, out, options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    print("merged", out)
)PY";

} // namespace

TEST_CASE("dms merge matches mergekit on every method", "[.peer][merge][engine]") {
  const auto dir = scratch_dir("dms-peer-mergekit", "methods");
  const std::string python = peer_python(dir, "mergekit, transformers, torch, yaml");
  const fs::path models = dir / "models";
  {
    const auto r = run(quote(python) + " " + quote(std::string(DMS_SOURCE_DIR) + "/scripts/make-tiny-llama") + " " +
                           quote(models.string()) + " --layers 4 --hidden 64 --intermediate 128 --vocab 256",
                       dir);
    INFO(r.err);
    REQUIRE(r.rc == 0);
  }
  // Tolerances: f32 arithmetic in a different order (dms sums in double) differs by a few ulps of
  // the values (|w| < 1): 1e-5 is far below any real difference (a wrong weight or mask moves
  // entries by ~1e-2, the perturbation size).
  const std::vector<peer_case> cases = {
      {"linear",
       "merge_method: linear\ndtype: float32\nmodels:\n  - model: {D}/model_a\n    parameters: {weight: 0.2}\n"
       "  - model: {D}/model_b\n    parameters: {weight: 0.3}\n  - model: {D}/model_c\n    parameters: {weight: 0.5}\n",
       1e-5f},
      {"task_arithmetic",
       "merge_method: task_arithmetic\ndtype: float32\nbase_model: {D}/base\nparameters: {lambda: 0.8}\nmodels:\n"
       "  - model: {D}/model_a\n    parameters: {weight: 0.7}\n  - model: {D}/model_b\n    parameters: {weight: [0.1, 0.9]}\n",
       1e-5f},
      {"ties",
       "merge_method: ties\ndtype: float32\nbase_model: {D}/base\nparameters: {normalize: true}\nmodels:\n"
       "  - model: {D}/model_a\n    parameters: {weight: 0.5, density: 0.5}\n"
       "  - model: {D}/model_b\n    parameters: {weight: 0.3, density: 0.7}\n"
       "  - model: {D}/model_c\n    parameters:\n      weight: 0.4\n      density:\n        - filter: mlp\n          value: 0.3\n"
       "        - value: 0.6\n",
       1e-5f},
      {"breadcrumbs",
       "merge_method: breadcrumbs\ndtype: float32\nbase_model: {D}/base\nmodels:\n"
       "  - model: {D}/model_a\n    parameters: {weight: 0.6, density: 0.8, gamma: 0.05}\n"
       "  - model: {D}/model_b\n    parameters: {weight: 0.4, density: 0.7, gamma: 0.02}\n",
       1e-5f},
      {"slerp",
       "merge_method: slerp\ndtype: float32\nbase_model: {D}/model_a\nparameters:\n  t:\n    - filter: self_attn\n"
       "      value: [0, 0.5, 0.3, 0.7, 1]\n    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\n"
       "slices:\n  - sources:\n      - model: {D}/model_a\n        layer_range: [0, 4]\n"
       "      - model: {D}/model_b\n        layer_range: [0, 4]\n",
       1e-5f},
      {"nuslerp",
       "merge_method: nuslerp\ndtype: float32\nmodels:\n  - model: {D}/model_a\n    parameters: {weight: 0.4}\n"
       "  - model: {D}/model_b\n    parameters: {weight: 0.6}\n",
       1e-5f},
      {"model_stock",
       "merge_method: model_stock\ndtype: float32\nbase_model: {D}/base\nmodels:\n  - model: {D}/model_a\n"
       "  - model: {D}/model_b\n  - model: {D}/model_c\n",
       1e-5f},
      {"passthrough",
       "merge_method: passthrough\ndtype: float32\nslices:\n  - sources:\n      - model: {D}/model_a\n"
       "        layer_range: [0, 2]\n  - sources:\n      - model: {D}/model_b\n        layer_range: [1, 4]\n",
       0.0f},
  };
  std::vector<std::string> args;
  for (const auto &c : cases) {
    write_text_file(dir / (c.name + ".yaml"), expand(c.yaml, models));
    args.push_back((dir / (c.name + ".yaml")).string());
    args.push_back((dir / ("mk_" + c.name)).string());
  }
  run_python(python, run_mergekit_py, args, dir);

  // (A loop, not sections: Catch would rerun the whole case, mergekit included, per section.)
  for (const auto &c : cases) {
    {
      INFO(c.name);
      const auto r = run(quote(DMS_CLI_PATH) + " merge " + quote((dir / (c.name + ".yaml")).string()) + " -o " +
                             quote((dir / ("dms_" + c.name)).string()),
                         dir);
      INFO(r.err);
      REQUIRE(r.rc == 0);
      const auto mk = read_hf(dir / ("mk_" + c.name)), ours = read_hf(dir / ("dms_" + c.name));
      REQUIRE(mk.size() == ours.size());
      float worst = 0;
      std::string worst_name;
      for (const auto &[name, want] : mk) {
        INFO(name);
        REQUIRE(ours.count(name) == 1);
        const auto &got = ours.at(name);
        REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < want.size(); ++i) {
          const float d = std::abs(got[i] - want[i]);
          if (!(d <= worst)) {
            worst = d;
            worst_name = name;
          }
        }
      }
      WARN(c.name << ": " << mk.size() << " tensors, max |dms - mergekit| = " << worst << " (" << worst_name << ")");
      CHECK(worst <= c.tolerance);
    }
  }
}

#endif

#endif // DMS_HAS_MERGE
