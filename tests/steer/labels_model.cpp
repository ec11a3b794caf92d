// Memorization labels of SmolLM2 over the calibration passages (train split, a stratified subset
// to keep the case near a minute on two cores): prints the counts of both labellings and their
// agreement; the counting and alphabet sequences must be extracted verbatim, and some passage
// must not be. Hidden: [.model].
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <dms/model/llama.hpp>
#include <dms/steer/calibration_data.hpp>
#include <dms/steer/labels.hpp>
#include <dms/tokenizer/tokenizer.hpp>

#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;

TEST_CASE("labels on SmolLM2: counts, agreement, sequences extracted", "[.model][steer][labels]") {
  const auto dir = dms::test::scratch_dir("dms-labels", "model");
  dms::model_options opts;
  opts.n_ctx = 64;    // 32 + 32 - 1 positions
  opts.n_seq_max = 8;
  opts.n_threads = 2; // small, shared machines
  auto model = dms::llama_model::load(dms::test::model_path(dir), opts);
  REQUIRE(model.gguf() != nullptr);
  const auto tok = dms::tokenizer::from_gguf(*model.gguf());

  const fs::path data = fs::path(__FILE__).parent_path().parent_path().parent_path() / "data/calibration";
  const auto train = dms::select_items(dms::load_calibration_items(data), {.kind = "memorized", .split = "train"});
  // Up to 3 passages per category (file order), plus named sequences the model surely recites.
  std::map<std::string, int> per_category;
  std::vector<dms::calibration_item> chosen;
  for (const auto &it : train) {
    const bool must = it.id == "mem-count-from-21" || it.id == "mem-alphabet-numbered" || it.id == "mem-months";
    if (must || per_category[it.category] < 3) {
      ++per_category[it.category];
      chosen.push_back(it);
    }
  }
  std::vector<std::vector<dms::token_id>> passages;
  for (const auto &it : chosen) passages.push_back(tok.encode(it.text));

  const auto t0 = std::chrono::steady_clock::now();
  const auto ext = dms::label_by_extraction(model, passages, {});
  const auto t1 = std::chrono::steady_clock::now();
  const auto div = dms::label_by_diversity(model, passages, {.seed = 1});
  const auto t2 = std::chrono::steady_clock::now();
  const auto agree = dms::label_agreement(ext, div);

  std::size_t n_ext = 0, n_div = 0;
  for (std::size_t i = 0; i < chosen.size(); ++i) {
    n_ext += ext[i].memorized;
    n_div += div[i].memorized;
    std::printf("%-34s %-11s extraction %.2f %s  diversity %.3f (%d distinct) H %.2f %s\n", chosen[i].id.c_str(),
                chosen[i].category.c_str(), ext[i].match_fraction, ext[i].memorized ? "M" : "-",
                div[i].distinct_ratio, div[i].n_distinct, div[i].mean_entropy, div[i].memorized ? "M" : "-");
  }
  std::printf("passages %zu: extraction memorized %zu, diversity memorized %zu; both %zu neither %zu "
              "only-extraction %zu only-diversity %zu; agreement %.3f kappa %.3f; extraction %.1f s, diversity %.1f s\n",
              chosen.size(), n_ext, n_div, agree.both, agree.neither, agree.only_extraction, agree.only_diversity,
              agree.rate(), agree.kappa(), std::chrono::duration<double>(t1 - t0).count(),
              std::chrono::duration<double>(t2 - t1).count());

  const auto label_of = [&](const std::string &id) {
    const auto it = std::find_if(chosen.begin(), chosen.end(), [&](const auto &c) { return c.id == id; });
    REQUIRE(it != chosen.end());
    return ext[static_cast<std::size_t>(it - chosen.begin())];
  };
  CHECK(label_of("mem-count-from-21").memorized);
  CHECK(label_of("mem-alphabet-numbered").memorized);
  CHECK(label_of("mem-months").memorized);
  CHECK(n_ext >= 1);
  CHECK(n_ext < chosen.size()); // not everything in the list is recited
  CHECK(agree.total() == chosen.size());
  fs::remove_all(dir);
}
