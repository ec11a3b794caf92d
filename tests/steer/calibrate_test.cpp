// dms/steer/calibrate.hpp on a tiny random Llama: passages made of the model's own greedy output
// are the ones it "recites", so the pipeline must find exactly those; the bundle it returns must
// be consistent (probe no later than the steering point, vector = the class-mean difference at
// the steering point, sweeps over every layer) and survive a save/load round trip.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "dms/model/generate.hpp"
#include "dms/model/llama.hpp"
#include "dms/steer/calibrate.hpp"
#include "dms/steer/probe_data.hpp"
#include "greedy_passage.hpp"
#include "model/tiny_model.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using dms::test::greedy_passage;
using dms::token_id;

namespace {

//! Texts are token ids written as decimal numbers separated by spaces.
struct id_tokenizer {
  std::vector<token_id> encode(std::string_view text, bool = true) const {
    std::vector<token_id> ids;
    std::istringstream in{std::string(text)};
    for (token_id t; in >> t;) ids.push_back(t);
    return ids;
  }
};

std::string to_text(const std::vector<token_id> &ids) {
  std::string s;
  for (auto t : ids) s += std::to_string(t) + " ";
  return s;
}

struct fixture {
  fs::path dir = dms::test::scratch_dir("dms-calibrate", "tiny");
  dms::test::tiny_config config;
  fixture() {
    config.n_layers = 3;
    dms::test::write_gguf(dms::test::make_tiny(config), dir / "model.gguf", dms::ggml_type::f32);
  }
  ~fixture() { fs::remove_all(dir); }
  dms::llama_model load() const {
    return dms::llama_model::load(dir / "model.gguf", {.n_ctx = 48, .n_seq_max = 4, .n_threads = 1});
  }
};


dms::calibration_item item(std::string id, std::string kind, std::string split, const std::vector<token_id> &ids) {
  dms::calibration_item it;
  it.id = std::move(id);
  it.kind = std::move(kind);
  it.category = "test";
  it.split = std::move(split);
  it.text = to_text(ids);
  return it;
}

dms::calibration_options tiny_options() {
  dms::calibration_options o;
  o.extraction = {.prefix_tokens = 8, .continuation_tokens = 6, .min_match = 0.9};
  o.with_diversity = false;
  o.max_patching_pairs = 6;
  o.corrupt_tokens = 6;
  o.sweep_heldout_fraction = 0.3;
  return o;
}

} // namespace

TEST_CASE("calibrate: finds the recited passages and builds a consistent bundle", "[steer][calibrate]") {
  fixture f;
  auto m = f.load();
  std::vector<dms::calibration_item> items;
  std::uint32_t state = 12345;
  auto next = [&] { return static_cast<token_id>((state = state * 1664525u + 1013904223u) >> 8) % 100; };
  std::vector<std::vector<token_id>> recited;
  for (int i = 0; i < 8; ++i) { // recited: the model's own greedy continuation
    std::vector<token_id> prefix;
    for (int k = 0; k < 8; ++k) prefix.push_back(next());
    recited.push_back(greedy_passage(m, prefix, 6));
    items.push_back(item("mem-own-" + std::to_string(i), "memorized", "train", recited.back()));
  }
  for (int i = 0; i < 8; ++i) { // not recited: random continuations
    std::vector<token_id> ids;
    for (int k = 0; k < 14; ++k) ids.push_back(next());
    items.push_back(item("mem-random-" + std::to_string(i), "memorized", "train", ids));
  }
  for (int i = 0; i < 12; ++i) {
    std::vector<token_id> ids;
    for (int k = 0; k < 5 + i % 4; ++k) ids.push_back(next());
    items.push_back(item("gen-" + std::to_string(i), "generalization", "train", ids));
  }
  items.push_back(item("mem-heldout", "memorized", "heldout", recited.front())); // never read

  const auto out = dms::calibrate(m, id_tokenizer{}, items, tiny_options());
  const auto &b = out.bundle;

  // Labels: exactly the model's own passages, and held-out items were not read.
  REQUIRE(out.extraction.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) CHECK(out.extraction[i].memorized == (i < 8));
  CHECK(b.labels.n_memorization == 8);
  CHECK(b.labels.n_generalization == 20);
  CHECK(b.labels.source == "extraction");
  CHECK(std::isnan(b.labels.agreement));

  // Sweeps over every layer; the probe reads no later than the steering point.
  REQUIRE(b.probe_sweep.size() == 3);
  REQUIRE(b.patching.size() == 3);
  CHECK(out.n_patching_pairs >= 1);
  CHECK(dms::hook_rank(b.probe_at()) <= dms::hook_rank(b.steering_at()));
  CHECK(b.steering_at().where == dms::site::resid_post);
  CHECK(b.probe.n_features() == f.config.n_embd);

  // The vector is mean(generalization) - mean(memorization) at the steering point.
  std::vector<std::vector<token_id>> gen_rows, mem_rows;
  for (std::size_t i = 0; i < 8; ++i) mem_rows.push_back(out.extraction[i].prefix);
  for (std::size_t i = 8; i < 16; ++i) gen_rows.push_back(out.extraction[i].prefix);
  for (const auto &it : items)
    if (it.kind == "generalization") gen_rows.push_back(id_tokenizer{}.encode(it.text));
  const dms::hook_point at = b.steering_at();
  const auto gen = dms::collect_activations(m, std::span<const std::vector<token_id>>(gen_rows), std::span(&at, 1), {});
  const auto mem = dms::collect_activations(m, std::span<const std::vector<token_id>>(mem_rows), std::span(&at, 1), {});
  const auto expected = dms::mean_difference(gen.matrix(at), mem.matrix(at));
  REQUIRE(b.steering.vector.values.size() == expected.size());
  double diff = 0, norm = 0;
  for (std::size_t j = 0; j < expected.size(); ++j) {
    diff = std::max(diff, static_cast<double>(std::abs(b.steering.vector.values[j] - expected[j])));
    norm += static_cast<double>(expected[j]) * expected[j];
  }
  INFO("steering " << dms::to_string(at) << " v[0..3] " << b.steering.vector.values[0] << " " << b.steering.vector.values[1]
                    << " expected " << expected[0] << " " << expected[1] << " gen rows " << gen.n_rows() << " mem rows " << mem.n_rows());
  CHECK(norm > 0);
  CHECK(diff <= 1e-5 * std::sqrt(norm));

  // A CAST condition at the probe point, and a bundle that saves, loads and steers.
  REQUIRE(b.condition.has_value());
  CHECK(b.condition->at == b.probe_at());
  auto saved = b;
  saved.model.n_layers = 3;
  const fs::path path = f.dir / "tiny.dms";
  dms::save_bundle(path, saved);
  const auto loaded = dms::load_bundle(path);
  CHECK(loaded.steering.vector.values == b.steering.vector.values);
  CHECK(loaded.steering_at() == b.steering_at());
  CHECK(loaded.probe_at() == b.probe_at());
  const auto policy = dms::make_dms_policy(loaded);
  CHECK_NOTHROW(policy.validate(m.n_layers(), m.n_embd()));

  // The probe's training rows as .npz: refitting on them gives the bundle's probe back.
  dms::write_probe_data(f.dir / "probe.npz", out);
  const auto data = dms::read_probe_data(f.dir / "probe.npz");
  REQUIRE(data.n_rows == static_cast<std::int64_t>(out.labels.size()));
  CHECK(data.n_features == f.config.n_embd);
  CHECK(data.y == out.labels);
  CHECK(std::count(data.heldout.begin(), data.heldout.end(), 1) > 0);
  CHECK(std::count(data.heldout.begin(), data.heldout.end(), 0) > 0);
  CHECK(data.part(true).n_rows + data.part(false).n_rows == data.n_rows);
  const auto refit = dms::fit_logistic(data.matrix(), data.y, tiny_options().probe).probe;
  CHECK(std::vector<float>(refit.weight().begin(), refit.weight().end()) ==
        std::vector<float>(b.probe.weight().begin(), b.probe.weight().end()));
  CHECK(refit.bias() == b.probe.bias());
}

TEST_CASE("probe data: a malformed archive names the file and what is wrong", "[steer][calibrate]") {
  const fs::path dir = dms::test::scratch_dir("dms-calibrate", "probe-data");
  const std::vector<float> x(6, 0.5f), y{0, 1, 2}, h{0, 0, 1}, short_y{0, 1};
  dms::npz_writer bad_label;
  bad_label.add("x", x, {3, 2});
  bad_label.add("y", y, {3});
  bad_label.add("heldout", h, {3});
  bad_label.write(dir / "label.npz");
  CHECK_THROWS_WITH(dms::read_probe_data(dir / "label.npz"),
                    Catch::Contains("label.npz") && Catch::Contains("y[2] is 2"));
  dms::npz_writer bad_shape;
  bad_shape.add("x", x, {3, 2});
  bad_shape.add("y", short_y, {2});
  bad_shape.add("heldout", h, {3});
  bad_shape.write(dir / "shape.npz");
  CHECK_THROWS_WITH(dms::read_probe_data(dir / "shape.npz"), Catch::Contains("shape.npz") && Catch::Contains("x [n, d]"));
  dms::npz_writer missing;
  missing.add("x", x, {3, 2});
  missing.write(dir / "missing.npz");
  CHECK_THROWS_WITH(dms::read_probe_data(dir / "missing.npz"), Catch::Contains("no array named 'y'"));
  fs::remove_all(dir);
}

TEST_CASE("calibrate: errors name what is missing", "[steer][calibrate]") {
  fixture f;
  auto m = f.load();
  std::vector<dms::calibration_item> items;
  std::uint32_t state = 99;
  auto next = [&] { return static_cast<token_id>((state = state * 1664525u + 1013904223u) >> 8) % 100; };
  for (int i = 0; i < 6; ++i) {
    std::vector<token_id> ids;
    for (int k = 0; k < 14; ++k) ids.push_back(next());
    items.push_back(item("mem-" + std::to_string(i), "memorized", "train", ids));
    items.push_back(item("gen-" + std::to_string(i), "generalization", "train", std::vector<token_id>(ids.begin(), ids.begin() + 5)));
  }
  // Random passages: nothing recited, no probe can be fitted.
  CHECK_THROWS_WITH(dms::calibrate(m, id_tokenizer{}, items, tiny_options()),
                    Catch::Contains("recites only 0 of 6 candidate passages"));
  // No generalization prompts in the training split.
  std::vector<dms::calibration_item> only_mem;
  for (const auto &it : items)
    if (it.kind == "memorized") only_mem.push_back(it);
  CHECK_THROWS_WITH(dms::calibrate(m, id_tokenizer{}, only_mem, tiny_options()),
                    Catch::Contains("0 generalization prompts"));
  auto bad = tiny_options();
  bad.alpha = std::nanf("");
  CHECK_THROWS_WITH(dms::calibrate(m, id_tokenizer{}, items, bad), Catch::Contains("alpha is not finite"));
}
