// The steering bundle: round trip of every field, atomic writes, and every refusal (not a bundle,
// another format, another version, a missing tensor, a width mismatch, a damaged vector, a bundle
// for another model).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "dms/probe/logistic_io.hpp"
#include "dms/steer/bundle.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using dms::site;

namespace {

constexpr std::int64_t d = 8;

std::vector<float> ramp(std::int64_t n, float start, float step) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = start + step * static_cast<float>(i);
  return v;
}

dms::steering_bundle sample_bundle(bool with_condition = true) {
  dms::steering_bundle b;
  b.model = {"llama-3-8b.Q8_0.gguf", std::string(64, 'a'), 123456789, 4, d, "llama"};
  dms::probe_info info{{1, site::resid_post}, 0.5, dms::class_weight_mode::balanced, true};
  b.probe = dms::logistic_probe(ramp(d, -0.3f, 0.1f), 0.25f, ramp(d, 1.0f, 0.5f), ramp(d, 0.5f, 0.25f), info);
  b.steering.vector = {2, site::resid_post, ramp(d, 0.5f, -0.125f)};
  b.steering.method = dms::vector_method::pca;
  b.steering.scale = dms::vector_scale::unit;
  b.steering.alpha = 1.4f;
  if (with_condition)
    b.condition = dms::bundle_condition{{1, site::resid_pre}, ramp(d, 1.0f, 1.0f), 0.125f,
                                        dms::condition_compare::below, dms::condition_mode::last_token, 2.5f};
  for (std::int32_t l = 0; l < 4; ++l) {
    b.probe_sweep.push_back({l, site::resid_post, {0.5 + 0.1 * l, 0.6 + 0.05 * l, 0.7 - 0.1 * l, 40}});
    b.patching.push_back({l, site::resid_post, 0.2 * l});
    b.patching.push_back({l, site::attn_out, l == 3 ? std::nan("") : 0.1 * l});
  }
  b.probe_sweep[0].heldout.roc_auc = std::nan(""); // a one-class split: undefined, must survive
  b.labels = {30, 50, "both", 0.875};
  b.calibration.settings = {{"prompts", "calib.jsonl"}, {"layers", {0, 1, 2, 3}}, {"seed", 7}};
  b.calibration.started_at = "2025-01-31T12:00:00Z";
  b.calibration.finished_at = "2025-01-31T12:03:20Z";
  b.calibration.wall_seconds = 200.5;
  b.extras = {{"note", "unit test \"quoted\" <tag>"}, {"nested", {{"k", 1.5}}}};
  return b;
}

bool same_or_both_nan(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

//! Rewrites bundle `src` into `dst` through `edit_json` (the metadata document) and `edit_tensors`
//! (name -> values, shape [size]); for files a buggy or foreign writer might produce.
void rewrite(const fs::path &src, const fs::path &dst, const std::function<void(dms::ordered_json &)> &edit_json,
             const std::function<void(std::map<std::string, std::vector<float>> &)> &edit_tensors = {}) {
  const dms::safetensors_file f(src.string());
  auto meta = dms::ordered_json::parse(*f.metadata(dms::bundle_metadata_key));
  std::map<std::string, std::vector<float>> tensors;
  for (const auto &t : f.tensors()) tensors[t.name] = f.to_f32(t);
  if (edit_json) edit_json(meta);
  if (edit_tensors) edit_tensors(tensors);
  dms::safetensors_writer w;
  w.set_metadata(std::string(dms::bundle_metadata_key), meta.dump());
  for (const auto &[name, values] : tensors)
    w.add(name, dms::dtype::f32, {static_cast<std::int64_t>(values.size())},
          std::as_bytes(std::span<const float>(values)));
  w.write(dst);
}

template <class Fn> dms::error error_of(Fn &&fn) {
  try {
    fn();
  } catch (const dms::error &e) {
    return e;
  }
  FAIL("expected a dms::error");
  throw; // unreachable
}

} // namespace

TEST_CASE("a bundle round-trips every field through one safetensors file", "[bundle]") {
  const auto dir = dms::test::scratch_dir("dms-report", "bundle-roundtrip");
  const auto path = dir / "calib.dms.safetensors";
  const auto b = sample_bundle();
  dms::save_bundle(path, b);
  CHECK(dms::test::count_entries(dir) == 1); // no temporary left behind

  const auto l = dms::load_bundle(path);
  CHECK(l.model.file_name == b.model.file_name);
  CHECK(l.model.sha256 == b.model.sha256);
  CHECK(l.model.file_size == b.model.file_size);
  CHECK(l.model.n_layers == 4);
  CHECK(l.model.n_embd == d);
  CHECK(l.model.arch == "llama");

  CHECK(l.probe_at() == dms::hook_point{1, site::resid_post});
  CHECK(l.probe.info().C == 0.5);
  CHECK(l.probe.info().class_weight == dms::class_weight_mode::balanced);
  CHECK(l.probe.bias() == b.probe.bias());
  for (std::size_t i = 0; i < static_cast<std::size_t>(d); ++i) {
    CHECK(l.probe.weight()[i] == b.probe.weight()[i]);
    CHECK(l.probe.mean()[i] == b.probe.mean()[i]);
    CHECK(l.probe.scale()[i] == b.probe.scale()[i]);
  }
  const auto row = ramp(d, 0.3f, 0.7f);
  CHECK(l.probe.score(row) == b.probe.score(row));

  CHECK(l.steering_at() == dms::hook_point{2, site::resid_post});
  CHECK(l.steering.vector.values == b.steering.vector.values);
  CHECK(l.steering.method == dms::vector_method::pca);
  CHECK(l.steering.scale == dms::vector_scale::unit);
  CHECK(l.steering.alpha == 1.4f);
  CHECK(l.steering.norm() == b.steering.norm());

  REQUIRE(l.condition.has_value());
  CHECK(l.condition->at == dms::hook_point{1, site::resid_pre});
  CHECK(l.condition->vector == b.condition->vector);
  CHECK(l.condition->threshold == 0.125f);
  CHECK(l.condition->compare == dms::condition_compare::below);
  CHECK(l.condition->mode == dms::condition_mode::last_token);
  CHECK(l.condition->coefficient == 2.5f);

  REQUIRE(l.probe_sweep.size() == b.probe_sweep.size());
  for (std::size_t i = 0; i < l.probe_sweep.size(); ++i) {
    CHECK(l.probe_sweep[i].layer == b.probe_sweep[i].layer);
    CHECK(l.probe_sweep[i].where == b.probe_sweep[i].where);
    CHECK(same_or_both_nan(l.probe_sweep[i].heldout.roc_auc, b.probe_sweep[i].heldout.roc_auc));
    CHECK(l.probe_sweep[i].heldout.accuracy == b.probe_sweep[i].heldout.accuracy);
    CHECK(l.probe_sweep[i].heldout.log_loss == b.probe_sweep[i].heldout.log_loss);
    CHECK(l.probe_sweep[i].heldout.n == 40);
  }
  CHECK(std::isnan(l.probe_sweep[0].heldout.roc_auc));
  REQUIRE(l.patching.size() == b.patching.size());
  for (std::size_t i = 0; i < l.patching.size(); ++i) {
    CHECK(l.patching[i].layer == b.patching[i].layer);
    CHECK(l.patching[i].where == b.patching[i].where);
    CHECK(same_or_both_nan(l.patching[i].effect, b.patching[i].effect));
  }
  CHECK(l.labels.n_memorization == 30);
  CHECK(l.labels.n_generalization == 50);
  CHECK(l.labels.source == "both");
  CHECK(l.labels.agreement == 0.875);
  CHECK(l.calibration.settings == b.calibration.settings);
  CHECK(l.calibration.started_at == b.calibration.started_at);
  CHECK(l.calibration.finished_at == b.calibration.finished_at);
  CHECK(l.calibration.wall_seconds == 200.5);
  CHECK(l.extras == b.extras);

  // A bundle is enough to build the policy.
  const auto policy = dms::make_dms_policy(l);
  CHECK(policy.wants(dms::hook_point{1, site::resid_post}));
  CHECK(policy.wants(dms::hook_point{2, site::resid_post}));
}

TEST_CASE("a bundle without condition, with NaN label agreement, round-trips", "[bundle]") {
  const auto dir = dms::test::scratch_dir("dms-report", "bundle-minimal");
  auto b = sample_bundle(false);
  b.labels.agreement = std::nan("");
  b.extras = dms::ordered_json::object();
  dms::save_bundle(dir / "b.safetensors", b);
  const auto l = dms::load_bundle(dir / "b.safetensors");
  CHECK_FALSE(l.condition.has_value());
  CHECK(std::isnan(l.labels.agreement));
  const dms::safetensors_file f((dir / "b.safetensors").string());
  CHECK_FALSE(f.contains("condition.vector"));
  CHECK(f.size() == 5);
  // The metadata is plain JSON that records the format and version.
  const auto meta = dms::ordered_json::parse(*f.metadata(dms::bundle_metadata_key));
  CHECK(meta["format"] == "dms.steering_bundle");
  CHECK(meta["version"] == 1);
  CHECK(meta["steering"]["hook"] == "blocks.2.hook_resid_post");
}

TEST_CASE("patching_rows flattens a patching result, a layer keeping its best position", "[bundle]") {
  dms::patching_result r;
  r.sites = {site::resid_pre, site::attn_out};
  r.layer_begin = 1;
  r.layer_end = 3;
  r.n_positions = 2;
  r.per_position = true;
  const double nan = std::nan("");
  // [site][layer][position]
  r.mean_effect = {0.1, 0.3, nan, 0.2, nan, nan, 0.5, 0.4};
  const auto rows = dms::patching_rows(r);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].where == site::resid_pre);
  CHECK(rows[0].layer == 1);
  CHECK(rows[0].effect == 0.3);
  CHECK(rows[1].effect == 0.2);
  CHECK(rows[2].where == site::attn_out);
  CHECK(std::isnan(rows[2].effect));
  CHECK(rows[3].layer == 2);
  CHECK(rows[3].effect == 0.5);
}

TEST_CASE("load_bundle refuses files that are not bundles of this version", "[bundle]") {
  const auto dir = dms::test::scratch_dir("dms-report", "bundle-errors");
  const auto good = dir / "good.safetensors";
  dms::save_bundle(good, sample_bundle());

  SECTION("a probe file is not a bundle") {
    const auto p = dir / "probe.safetensors";
    dms::save_probe(p, sample_bundle().probe);
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::invalid_format);
    CHECK_THAT(e.what(), Catch::Contains(p.string()) && Catch::Contains("not a steering bundle") &&
                             Catch::Contains("dms.probe"));
  }
  SECTION("a text file is not safetensors") {
    const auto p = dir / "notes.txt";
    std::ofstream(p) << "hello, this is not a bundle";
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::invalid_format);
    CHECK_THAT(e.what(), Catch::Contains(p.string()));
  }
  SECTION("another format name") {
    const auto p = dir / "other.safetensors";
    rewrite(good, p, [](dms::ordered_json &m) { m["format"] = "someone.elses_bundle"; });
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::invalid_format);
    CHECK_THAT(e.what(), Catch::Contains("format 'someone.elses_bundle'") && Catch::Contains("not a steering bundle"));
  }
  SECTION("a newer version") {
    const auto p = dir / "v2.safetensors";
    rewrite(good, p, [](dms::ordered_json &m) { m["version"] = 2; });
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::unsupported);
    CHECK_THAT(e.what(), Catch::Contains(p.string()) && Catch::Contains("version 2") &&
                             Catch::Contains("reads version 1"));
  }
  SECTION("a missing key names it") {
    const auto p = dir / "nokey.safetensors";
    rewrite(good, p, [](dms::ordered_json &m) { m["model"].erase("n_embd"); });
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::invalid_format);
    CHECK_THAT(e.what(), Catch::Contains("missing key 'n_embd'"));
  }
  SECTION("a missing tensor") {
    const auto p = dir / "novector.safetensors";
    rewrite(good, p, {}, [](auto &t) { t.erase("steering.vector"); });
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::invalid_format);
    CHECK_THAT(e.what(), Catch::Contains(p.string()) && Catch::Contains("missing tensor 'steering.vector'"));
  }
  SECTION("a condition without its tensor") {
    const auto p = dir / "nocondition.safetensors";
    rewrite(good, p, {}, [](auto &t) { t.erase("condition.vector"); });
    CHECK_THROWS_WITH(dms::load_bundle(p), Catch::Contains("missing tensor 'condition.vector'"));
  }
  SECTION("a tensor of the wrong width") {
    const auto p = dir / "wide.safetensors";
    rewrite(good, p, {}, [](auto &t) { t["probe.scaler.mean"].push_back(0.0f); });
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::shape_mismatch);
    CHECK_THAT(e.what(), Catch::Contains("probe.scaler.mean") && Catch::Contains("shape [9]") &&
                             Catch::Contains("expected [8]"));
  }
  SECTION("a model width that disagrees with the tensors") {
    const auto p = dir / "n_embd.safetensors";
    rewrite(good, p, [](dms::ordered_json &m) { m["model"]["n_embd"] = 16; });
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::shape_mismatch);
    CHECK_THAT(e.what(), Catch::Contains("model.n_embd is 16"));
  }
  SECTION("a steering vector changed after writing") {
    const auto p = dir / "tampered.safetensors";
    rewrite(good, p, {}, [](auto &t) { t["steering.vector"][0] += 1.0f; });
    const auto e = error_of([&] { (void)dms::load_bundle(p); });
    CHECK(e.code() == dms::errc::invalid_format);
    CHECK_THAT(e.what(), Catch::Contains("steering.vector") && Catch::Contains("metadata records"));
  }
  SECTION("an unknown vector method") {
    const auto p = dir / "method.safetensors";
    rewrite(good, p, [](dms::ordered_json &m) { m["steering"]["method"] = "magic"; });
    CHECK_THROWS_WITH(dms::load_bundle(p), Catch::Contains("steering.method 'magic'"));
  }
  SECTION("an unknown site") {
    const auto p = dir / "site.safetensors";
    rewrite(good, p, [](dms::ordered_json &m) { m["probe_sweep"][1]["site"] = "resid_middle"; });
    CHECK_THROWS_WITH(dms::load_bundle(p), Catch::Contains("probe_sweep[1].site: unknown site 'resid_middle'"));
  }
}

TEST_CASE("save_bundle refuses bundles that could not be used", "[bundle]") {
  const auto dir = dms::test::scratch_dir("dms-report", "bundle-save-errors");
  const auto p = dir / "b.safetensors";
  SECTION("an empty probe") {
    auto b = sample_bundle();
    b.probe = {};
    CHECK_THROWS_WITH(dms::save_bundle(p, b), Catch::Contains("the probe is empty"));
  }
  SECTION("a vector of another width") {
    auto b = sample_bundle();
    b.steering.vector.values.pop_back();
    const auto e = error_of([&] { dms::save_bundle(p, b); });
    CHECK(e.code() == dms::errc::shape_mismatch);
    CHECK_THAT(e.what(), Catch::Contains("steering vector has width 7") && Catch::Contains("n_embd 8"));
  }
  SECTION("a model width that is not the probe's") {
    auto b = sample_bundle();
    b.model.n_embd = 16;
    CHECK_THROWS_WITH(dms::save_bundle(p, b), Catch::Contains("the probe reads rows of width 8"));
  }
  SECTION("a condition vector of another width") {
    auto b = sample_bundle();
    b.condition->vector.resize(3);
    CHECK_THROWS_WITH(dms::save_bundle(p, b), Catch::Contains("condition vector has width 3"));
  }
  SECTION("a probe read after the steering point") {
    auto b = sample_bundle();
    b.steering.vector.layer = 0;
    CHECK_THROWS_WITH(dms::save_bundle(p, b), Catch::Contains("comes after the steering point"));
  }
  SECTION("a non-finite alpha or vector") {
    auto b = sample_bundle();
    b.steering.alpha = NAN;
    CHECK_THROWS_WITH(dms::save_bundle(p, b), Catch::Contains("alpha is not finite"));
    b = sample_bundle();
    b.steering.vector.values[3] = INFINITY;
    CHECK_THROWS_AS(dms::save_bundle(p, b), dms::error);
  }
  CHECK_FALSE(fs::exists(p));
  CHECK(dms::test::count_entries(dir) == 0); // a refused save leaves nothing, not even a temporary
}

TEST_CASE("check_bundle_matches ties a bundle to its model's depth and width", "[bundle]") {
  const auto b = sample_bundle();
  CHECK_NOTHROW(dms::check_bundle_matches(b, 4, d));
  {
    const auto e = error_of([&] { dms::check_bundle_matches(b, 4, 4096, "calib.safetensors"); });
    CHECK(e.code() == dms::errc::shape_mismatch);
    CHECK_THAT(e.what(), Catch::Contains("calib.safetensors") && Catch::Contains("width 8") &&
                             Catch::Contains("n_embd 4096") && Catch::Contains("llama-3-8b.Q8_0.gguf"));
  }
  CHECK_THROWS_WITH(dms::check_bundle_matches(b, 32, d), Catch::Contains("4 layers") && Catch::Contains("has 32"));
  auto deep = b;
  deep.steering.vector.layer = 9; // a hand-edited bundle
  CHECK_THROWS_WITH(dms::check_bundle_matches(deep, 4, d),
                    Catch::Contains("steering hook point blocks.9.hook_resid_post is outside"));
}

TEST_CASE("utc_timestamp is ISO 8601 UTC", "[bundle]") {
  CHECK(dms::utc_timestamp(0) == "1970-01-01T00:00:00Z");
  CHECK(dms::utc_timestamp(1738324800) == "2025-01-31T12:00:00Z");
  CHECK(dms::utc_timestamp().size() == 20);
}
