// The merge engine on tiny synthetic checkpoints: outputs are read back and compared with the
// merge computed here by hand, for every input format, output format and plan shape.
#include <catch2/catch.hpp>

// Built with dms::merge only (yaml-cpp); the folder also builds without it.
#if defined(DMS_HAS_MERGE)

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <dms/formats/gguf.hpp>
#include <dms/formats/hf_checkpoint.hpp>
#include <dms/merge/engine.hpp>

#include "engine_fixtures.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace dms;
using namespace dms::test;

namespace {

//! A linear strategy written against the concept only (no contract): the engine must run any.
struct test_linear {
  static constexpr std::string_view name = "linear";
  static constexpr bool elementwise = true;
  bool needs_base() const noexcept { return false; }
  void merge(const merge_inputs &in, std::span<float> out) const {
    double total = 0;
    for (std::size_t i = 0; i < in.models.size(); ++i) total += in.params->get("weight", static_cast<std::int32_t>(i));
    for (std::size_t j = 0; j < out.size(); ++j) {
      double s = 0;
      for (std::size_t i = 0; i < in.models.size(); ++i)
        s += in.params->get("weight", static_cast<std::int32_t>(i)) * in.models[i][j];
      out[j] = static_cast<float>(s / total);
    }
  }
};

//! base + sum_i w_i (theta_i - base), with a contract like the built-in ones.
struct test_task_arithmetic {
  static constexpr std::string_view name = "task_arithmetic";
  static constexpr bool elementwise = true;
  static constexpr merge_parameter_info params[] = {
      {"weight", merge_parameter_scope::per_model, true, std::nullopt, ""},
      {"lambda", merge_parameter_scope::global, false, 1.0, ""},
  };
  static constexpr merge_method_info info{name, merge_base_policy::required, 1, 0, true, params, ""};
  bool needs_base() const noexcept { return true; }
  void merge(const merge_inputs &in, std::span<float> out) const {
    const double lambda = in.params->get_or("lambda", 1.0);
    for (std::size_t j = 0; j < out.size(); ++j) {
      double s = 0;
      for (std::size_t i = 0; i < in.models.size(); ++i)
        s += in.params->get("weight", static_cast<std::int32_t>(i)) * (in.models[i][j] - in.base[j]);
      out[j] = static_cast<float>(in.base[j] + lambda * s);
    }
  }
};

//! Copies its single input; throws on the tensor named `fail_on` (atomicity tests).
struct test_passthrough {
  static constexpr std::string_view name = "passthrough";
  static constexpr bool elementwise = true;
  std::string fail_on;
  bool needs_base() const noexcept { return false; }
  void merge(const merge_inputs &in, std::span<float> out) const {
    if (!fail_on.empty() && in.name == fail_on) throw error(errc::numeric, "injected failure", {{}, std::nullopt, std::string(in.name)});
    std::copy(in.models[0].begin(), in.models[0].end(), out.begin());
  }
};

std::string yaml_path(const fs::path &p) { return "'" + p.string() + "'"; }

merge_config cfg(const std::string &yaml) { return parse_merge_config(yaml, "test.yaml"); }

void require_close(const std::vector<float> &a, const std::vector<float> &b, float tol, const std::string &what) {
  INFO(what);
  REQUIRE(a.size() == b.size());
  float worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  CHECK(worst <= tol);
}

} // namespace

TEST_CASE("engine: linear merge of two safetensors models, sharded output, files copied", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "linear");
  const tiny_dims d;
  write_tiny_hf(dir / "a", 1, d);
  write_tiny_hf(dir / "b", 2, d, dtype::f32, 2000); // input sharded too
  const auto c = cfg("merge_method: linear\nmodels:\n  - model: " + yaml_path(dir / "a") +
                     "\n    parameters: {weight: 0.25}\n  - model: " + yaml_path(dir / "b") +
                     "\n    parameters: {weight: 0.75}\n");
  merge_engine e(c, make_strategy_handle(test_linear{}), {.output = dir / "out", .threads = 2, .max_shard_bytes = 3000});
  REQUIRE(e.plan().tensors.size() == tiny_layout(d).size());
  REQUIRE(e.plan().n_layers == 3);
  e.run();
  REQUIRE(fs::exists(dir / "out" / "model.safetensors.index.json"));
  CHECK(hf_checkpoint(dir / "out").shard_count() >= 3);
  const auto out = read_hf(dir / "out");
  REQUIRE(out.size() == tiny_layout(d).size());
  for (const auto &[name, shape] : tiny_layout(d)) {
    const auto a = tiny_values(1, name, numel_of(shape)), b = tiny_values(2, name, numel_of(shape));
    std::vector<float> want(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) want[i] = static_cast<float>((0.25 * a[i] + 0.75 * b[i]) / 1.0);
    require_close(out.at(name), want, 1e-6f, name);
  }
  // config.json comes from the first model (no base), tokenizer files too; inputs untouched.
  const auto config = read_hf_config(dir / "out");
  CHECK(config.num_hidden_layers == 3);
  CHECK(slurp(dir / "out" / "tokenizer.json").find("\"seed\": 1") != std::string::npos);
  CHECK(fs::exists(dir / "out" / "generation_config.json"));
  CHECK(count_entries(dir) == 3); // a, b, out: no temporary left
}

TEST_CASE("engine: output type follows --out-type, out_dtype, dtype, then the inputs", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "dtype");
  write_tiny_hf(dir / "a", 1, {}, dtype::bf16);
  write_tiny_hf(dir / "b", 2, {}, dtype::bf16);
  const std::string models = "models:\n  - model: " + yaml_path(dir / "a") + "\n    parameters: {weight: 1}\n  - model: " +
                             yaml_path(dir / "b") + "\n    parameters: {weight: 1}\n";
  {
    merge_engine e(cfg("merge_method: linear\n" + models), make_strategy_handle(test_linear{}), {.output = dir / "o1"});
    e.run();
    hf_checkpoint o(dir / "o1");
    CHECK(o.at("lm_head.weight").dtype_name == "BF16");
    // bf16 of the mean of two bf16 values, rounded once.
    const auto a = tiny_values(1, "lm_head.weight", 32 * 8, dtype::bf16), b = tiny_values(2, "lm_head.weight", 32 * 8, dtype::bf16);
    const auto got = o.to_f32("lm_head.weight");
    for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(got[i] == to_f32(to_bf16((a[i] + b[i]) / 2)));
  }
  {
    merge_engine e(cfg("merge_method: linear\ndtype: float32\nout_dtype: float16\n" + models),
                   make_strategy_handle(test_linear{}), {.output = dir / "o2"});
    e.run();
    CHECK(hf_checkpoint(dir / "o2").at("lm_head.weight").dtype_name == "F16");
    CHECK(read_hf_config(dir / "o2").torch_dtype == "float16");
  }
  {
    merge_engine e(cfg("merge_method: linear\nout_dtype: float16\n" + models), make_strategy_handle(test_linear{}),
                   {.output = dir / "o3", .out_type = output_type::f32});
    e.run();
    CHECK(hf_checkpoint(dir / "o3").at("lm_head.weight").dtype_name == "F32");
  }
  CHECK_THROWS_WITH(merge_engine(cfg("merge_method: linear\ndtype: float8\n" + models), make_strategy_handle(test_linear{}),
                                 {.output = dir / "o4"}),
                    Catch::Contains("dtype 'float8'"));
  CHECK_THROWS_WITH(merge_engine(cfg("merge_method: linear\n" + models), make_strategy_handle(test_linear{}),
                                 {.output = dir / "o5", .out_type = output_type::q8_0}),
                    Catch::Contains("q8_0 is a GGUF type"));
}

TEST_CASE("engine: task arithmetic with a base, gradients and filters resolved per tensor", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "ta");
  write_tiny_hf(dir / "base", 10);
  write_tiny_hf(dir / "a", 11);
  write_tiny_hf(dir / "b", 12);
  const auto c = cfg("merge_method: task_arithmetic\nbase_model: " + yaml_path(dir / "base") +
                     "\nparameters:\n  lambda: [0, 1]\nmodels:\n  - model: " + yaml_path(dir / "base") +
                     "\n  - model: " + yaml_path(dir / "a") +
                     "\n    parameters:\n      weight:\n        - filter: self_attn\n          value: 2\n        - value: 0.5\n"
                     "  - model: " + yaml_path(dir / "b") + "\n    parameters: {weight: 1}\n");
  merge_engine e(c, make_strategy_handle(test_task_arithmetic{}), {.output = dir / "out"});
  const auto &plan = e.plan();
  // The base is listed in models but is not a task vector.
  for (const auto &t : plan.tensors) {
    REQUIRE(t.models.size() == 2);
    REQUIRE(t.base.has_value());
  }
  e.run();
  const auto out = read_hf(dir / "out");
  for (const auto &[name, shape] : tiny_layout({})) {
    const std::size_t n = numel_of(shape);
    const auto base = tiny_values(10, name, n), a = tiny_values(11, name, n), b = tiny_values(12, name, n);
    double t = 0.0; // outside the blocks: t = 0, as in mergekit 0.1.5
    if (auto l = layer_index(name)) t = *l / 2.0; // 3 layers: t = 0, 0.5, 1
    const double wa = name.find("self_attn") != std::string::npos ? 2.0 : 0.5;
    std::vector<float> want(n);
    for (std::size_t i = 0; i < n; ++i)
      want[i] = static_cast<float>(base[i] + t * (wa * (a[i] - base[i]) + 1.0 * (b[i] - base[i])));
    require_close(out.at(name), want, 2e-6f, name);
  }
}

TEST_CASE("engine: passthrough slices stack layers (frankenmerge)", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "slices");
  const tiny_dims d{.layers = 4};
  write_tiny_hf(dir / "a", 1, d);
  write_tiny_hf(dir / "b", 2, d);
  const auto c = cfg("merge_method: passthrough\nslices:\n  - sources:\n      - model: " + yaml_path(dir / "a") +
                     "\n        layer_range: [0, 3]\n  - sources:\n      - model: " + yaml_path(dir / "b") +
                     "\n        layer_range: [1, 4]\n");
  merge_engine e(c, make_strategy_handle(test_passthrough{}), {.output = dir / "out"});
  CHECK(e.plan().n_layers == 6);
  e.run();
  const auto out = read_hf(dir / "out");
  CHECK(read_hf_config(dir / "out").num_hidden_layers == 6);
  const std::size_t n = 8 * 8;
  CHECK(out.at("model.layers.2.self_attn.q_proj.weight") == tiny_values(1, "model.layers.2.self_attn.q_proj.weight", n));
  CHECK(out.at("model.layers.3.self_attn.q_proj.weight") == tiny_values(2, "model.layers.1.self_attn.q_proj.weight", n));
  CHECK(out.at("model.layers.5.self_attn.q_proj.weight") == tiny_values(2, "model.layers.3.self_attn.q_proj.weight", n));
  CHECK(out.at("model.embed_tokens.weight") == tiny_values(1, "model.embed_tokens.weight", 32 * 8)); // first slice
  CHECK(out.at("lm_head.weight") == tiny_values(2, "lm_head.weight", 32 * 8));                       // last slice
  CHECK(out.size() == 2 + 6 * 9 + 1);

  const auto bad = cfg("merge_method: passthrough\nslices:\n  - sources:\n      - model: " + yaml_path(dir / "a") +
                       "\n        layer_range: [2, 6]\n");
  CHECK_THROWS_WITH(merge_engine(bad, make_strategy_handle(test_passthrough{}), {.output = dir / "x"}),
                    Catch::Contains("which has 4 layers"));
}

TEST_CASE("engine: GGUF inputs (F32, Q8_0) merged to GGUF keep the base's metadata", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "gguf");
  const tiny_dims d{.hidden = 32, .intermediate = 64, .vocab = 64, .layers = 2, .heads = 4, .kv_heads = 2};
  write_tiny_gguf(dir / "a.gguf", 1, d, ggml_type::q8_0);
  write_tiny_gguf(dir / "b.gguf", 2, d, ggml_type::f32);
  const auto c = cfg("merge_method: linear\nbase_model: " + yaml_path(dir / "a.gguf") + "\nmodels:\n  - model: " +
                     yaml_path(dir / "a.gguf") + "\n    parameters: {weight: 1}\n  - model: " + yaml_path(dir / "b.gguf") +
                     "\n    parameters: {weight: 3}\n");
  for (const auto type : {output_type::f32, output_type::q8_0}) {
    const fs::path out_path = dir / (std::string(name_of(type)) + ".gguf");
    merge_engine e(c, make_strategy_handle(test_linear{}),
                   {.output = out_path, .format = output_format::gguf, .out_type = type});
    CHECK(e.naming() == tensor_naming::gguf);
    e.run();
    gguf_file a(dir / "a.gguf"), b(dir / "b.gguf"), o(out_path);
    // Metadata: the base's, file_type updated.
    for (const auto &kv : a.metadata()) {
      INFO(kv.key);
      if (kv.key == "general.file_type") CHECK(o.get<std::uint32_t>(kv.key) == (type == output_type::q8_0 ? 7u : 0u));
      else CHECK(o.at(kv.key) == kv.value);
    }
    CHECK(o.metadata().size() == a.metadata().size());
    REQUIRE(o.tensors().size() == a.tensors().size());
    for (const auto &t : a.tensors()) {
      const auto &ot = o.tensor(t.name), &bt = b.tensor(t.name);
      std::vector<float> va(t.n_elements), vb(t.n_elements), vo(t.n_elements), want(t.n_elements);
      dequantize(t.type, t.raw_bytes(), va);
      dequantize(bt.type, bt.raw_bytes(), vb);
      dequantize(ot.type, ot.raw_bytes(), vo);
      for (std::size_t i = 0; i < va.size(); ++i) want[i] = static_cast<float>((1.0 * va[i] + 3.0 * vb[i]) / 4.0);
      if (type == output_type::q8_0 && t.n_dims >= 2) {
        CHECK(ot.type == ggml_type::q8_0);
        std::vector<std::byte> q(t.n_bytes);
        quantize(ggml_type::q8_0, want, q); // the same bytes as quantizing the f32 merge
        CHECK(std::equal(q.begin(), q.end(), ot.raw_bytes().begin()));
      } else {
        CHECK(ot.type == ggml_type::f32);
        require_close(vo, want, 1e-6f, t.name);
      }
    }
  }
}

TEST_CASE("engine: GGUF and safetensors inputs mix (names mapped, Q/K un-permuted)", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "mixed");
  const tiny_dims d{.hidden = 32, .intermediate = 64, .vocab = 64, .layers = 2, .heads = 4, .kv_heads = 2};
  write_tiny_hf(dir / "a", 1, d);
  write_tiny_gguf(dir / "b.gguf", 2, d, ggml_type::f32);
  const auto c = cfg("merge_method: linear\nmodels:\n  - model: " + yaml_path(dir / "a") +
                     "\n    parameters: {weight: 1}\n  - model: " + yaml_path(dir / "b.gguf") + "\n    parameters: {weight: 1}\n");
  merge_engine e(c, make_strategy_handle(test_linear{}), {.output = dir / "out"});
  CHECK(e.naming() == tensor_naming::hf);
  e.run();
  const auto out = read_hf(dir / "out");
  for (const auto &[name, shape] : tiny_layout(d)) {
    const auto a = tiny_values(1, name, numel_of(shape)), b = tiny_values(2, name, numel_of(shape));
    std::vector<float> want(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) want[i] = (a[i] + b[i]) / 2;
    require_close(out.at(name), want, 1e-6f, name);
  }
  // And back to GGUF with the metadata of the GGUF input: Q/K permuted again, exactly.
  merge_engine g(c, make_strategy_handle(test_linear{}), {.output = dir / "out.gguf", .format = output_format::gguf});
  g.run();
  gguf_file o(dir / "out.gguf"), b(dir / "b.gguf");
  const auto &q = o.tensor("blk.1.attn_q.weight");
  std::vector<float> vq(q.n_elements), hf(q.n_elements);
  dequantize(q.type, q.raw_bytes(), vq);
  unpermute_qk<float>(vq, hf, 32, 32, 4);
  require_close(hf, out.at("model.layers.1.self_attn.q_proj.weight"), 0, "q round trip");
  CHECK(o.get<std::string>("general.name") == b.get<std::string>("general.name"));
}

TEST_CASE("engine: a LoRA adapter applied on its base (base+adapter)", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "lora");
  const tiny_dims d;
  write_tiny_hf(dir / "base", 1, d);
  write_tiny_lora(dir / "adapter", 5, d, 2, 4);
  const auto c = cfg("merge_method: passthrough\nmodels:\n  - model: '" + (dir / "base").string() + "+" +
                     (dir / "adapter").string() + "'\n");
  merge_engine e(c, make_strategy_handle(test_passthrough{}), {.output = dir / "out"});
  e.run();
  const auto out = read_hf(dir / "out");
  lora_adapter lora(dir / "adapter");
  for (const auto &[name, shape] : tiny_layout(d)) {
    auto want = tiny_values(1, name, numel_of(shape));
    if (const auto *m = lora.find(name)) {
      // W + (alpha / r) B A computed here directly.
      const auto &A = lora.weights().to_f32(m->a_name), &B = lora.weights().to_f32(m->b_name);
      for (std::int64_t i = 0; i < m->rows; ++i)
        for (std::int64_t j = 0; j < m->cols; ++j) {
          double s = 0;
          for (std::int64_t k = 0; k < 2; ++k) s += B[static_cast<std::size_t>(i * 2 + k)] * A[static_cast<std::size_t>(k * m->cols + j)];
          want[static_cast<std::size_t>(i * m->cols + j)] += static_cast<float>(2.0 * s);
        }
      REQUIRE(out.at(name) != tiny_values(1, name, numel_of(shape)));
    }
    require_close(out.at(name), want, 1e-5f, name);
  }
  // An adapter named as a model is a clear error.
  CHECK_THROWS_WITH(merge_engine(cfg("merge_method: passthrough\nmodels:\n  - model: " + yaml_path(dir / "adapter") + "\n"),
                                 make_strategy_handle(test_passthrough{}), {.output = dir / "x"}),
                    Catch::Contains("this is a LoRA adapter"));
}

TEST_CASE("engine: tensor sets, shapes and vocabularies must match", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "mismatch");
  write_tiny_hf(dir / "a", 1);
  write_tiny_hf(dir / "wide", 2, {.hidden = 8, .intermediate = 24});
  write_tiny_hf(dir / "vocab", 3, {}, dtype::f32, 5'000'000'000, 40);
  write_tiny_hf(dir / "deep", 4, {.layers = 4});
  auto two = [&](const fs::path &b) {
    return cfg("merge_method: linear\nmodels:\n  - model: " + yaml_path(dir / "a") + "\n    parameters: {weight: 1}\n"
               "  - model: " + yaml_path(b) + "\n    parameters: {weight: 1}\n");
  };
  CHECK_THROWS_WITH(merge_engine(two(dir / "wide"), make_strategy_handle(test_linear{}), {.output = dir / "x"}),
                    Catch::Contains("model.layers.0.mlp.down_proj.weight") && Catch::Contains("[8, 24]") &&
                        Catch::Contains((dir / "wide").string()) && Catch::Contains((dir / "a").string()));
  CHECK_THROWS_WITH(merge_engine(two(dir / "deep"), make_strategy_handle(test_linear{}), {.output = dir / "x"}),
                    Catch::Contains("has 4 layers"));
  CHECK_THROWS_WITH(merge_engine(two(dir / "vocab"), make_strategy_handle(test_linear{}),
                                 {.output = dir / "x", .vocab = vocab_policy::error}),
                    Catch::Contains("vocabulary rows differ") && Catch::Contains("model.embed_tokens.weight"));
  {
    merge_engine e(two(dir / "vocab"), make_strategy_handle(test_linear{}), {.output = dir / "trunc"});
    e.run();
    const auto out = read_hf(dir / "trunc");
    CHECK(out.at("lm_head.weight").size() == 32 * 8);
    CHECK(read_hf_config(dir / "trunc").vocab_size == 32);
    const auto a = tiny_values(1, "lm_head.weight", 32 * 8), b = tiny_values(3, "lm_head.weight", 40 * 8);
    for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(out.at("lm_head.weight")[i] == (a[i] + b[i]) / 2);
  }
  // A tensor missing from one input: named, with both files.
  fs::remove_all(dir / "pruned");
  {
    hf_checkpoint src(dir / "a");
    hf_checkpoint_writer w;
    for (const auto &n : src.tensor_names())
      if (n != "model.layers.1.mlp.up_proj.weight") w.add(n, src.view(n));
    w.write(dir / "pruned");
  }
  CHECK_THROWS_WITH(merge_engine(two(dir / "pruned"), make_strategy_handle(test_linear{}), {.output = dir / "x"}),
                    Catch::Contains("model.layers.1.mlp.up_proj.weight") && Catch::Contains("missing from") &&
                        Catch::Contains((dir / "pruned").string()));
}

TEST_CASE("engine: strategy contract checked at plan time", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "contract");
  write_tiny_hf(dir / "base", 1);
  write_tiny_hf(dir / "a", 2);
  const std::string models = "models:\n  - model: " + yaml_path(dir / "a") + "\n    parameters: {weight: 1}\n";
  CHECK_THROWS_WITH(merge_engine(cfg("merge_method: task_arithmetic\n" + models), make_strategy_handle(test_task_arithmetic{}),
                                 {.output = dir / "x"}),
                    Catch::Contains("needs base_model"));
  const std::string base = "base_model: " + yaml_path(dir / "base") + "\n";
  CHECK_THROWS_WITH(merge_engine(cfg("merge_method: task_arithmetic\n" + base + "parameters: {lamda: 1}\n" + models),
                                 make_strategy_handle(test_task_arithmetic{}), {.output = dir / "x"}),
                    Catch::Contains("no parameter 'lamda'") && Catch::Contains("lambda"));
  CHECK_THROWS_WITH(merge_engine(cfg("merge_method: task_arithmetic\n" + base + "models:\n  - model: " + yaml_path(dir / "a") +
                                     "\n    parameters: {lambda: 1, weight: 1}\n"),
                                 make_strategy_handle(test_task_arithmetic{}), {.output = dir / "x"}),
                    Catch::Contains("'lambda'") && Catch::Contains("is global"));
  CHECK_THROWS_WITH(merge_engine(cfg("merge_method: task_arithmetic\n" + base + "models:\n  - model: " + yaml_path(dir / "a") + "\n"),
                                 make_strategy_handle(test_task_arithmetic{}), {.output = dir / "x"}),
                    Catch::Contains("needs parameter 'weight'"));
}

TEST_CASE("engine: chunking and thread count do not change a single bit", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "determinism");
  const tiny_dims d{.hidden = 64, .intermediate = 128, .vocab = 300, .layers = 2, .heads = 4, .kv_heads = 2};
  write_tiny_hf(dir / "a", 1, d);
  write_tiny_hf(dir / "b", 2, d);
  const auto c = cfg("merge_method: linear\nmodels:\n  - model: " + yaml_path(dir / "a") + "\n    parameters: {weight: 0.3}\n"
                     "  - model: " + yaml_path(dir / "b") + "\n    parameters: {weight: 0.6}\n");
  merge_engine whole(c, make_strategy_handle(test_linear{}), {.output = dir / "o1", .threads = 1});
  whole.run();
  merge_engine chunked(c, make_strategy_handle(test_linear{}), {.output = dir / "o2", .threads = 3, .chunk_elements = 256});
  chunked.run();
  const auto x = read_hf(dir / "o1"), y = read_hf(dir / "o2");
  REQUIRE(x == y);
}

// Tensors above 64 Ki elements take the parallel paths: each thread reads and merges its part of
// a chunk, and the output is encoded in parts on the pool. Same bits as one thread, for each
// output type.
TEST_CASE("engine: large tensors split over the pool give one thread's bits in every output type", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "split-parts");
  const tiny_dims d{.hidden = 64, .intermediate = 128, .vocab = 1100, .layers = 1, .heads = 4, .kv_heads = 2};
  write_tiny_hf(dir / "a", 1, d);
  write_tiny_hf(dir / "b", 2, d);
  for (const char *dtype : {"float32", "bfloat16", "float16"}) {
    INFO(dtype);
    const auto c = cfg(std::string("merge_method: linear\nout_dtype: ") + dtype + "\nmodels:\n  - model: " +
                       yaml_path(dir / "a") + "\n    parameters: {weight: 0.3}\n  - model: " + yaml_path(dir / "b") +
                       "\n    parameters: {weight: 0.6}\n");
    const auto one = dir / (std::string("one-") + dtype), three = dir / (std::string("three-") + dtype);
    merge_engine(c, make_strategy_handle(test_linear{}), {.output = one, .threads = 1}).run();
    merge_engine(c, make_strategy_handle(test_linear{}), {.output = three, .threads = 3}).run();
    const auto x = read_hf(one), y = read_hf(three);
    REQUIRE(x.size() == y.size());
    REQUIRE(x == y);
  }
}

TEST_CASE("engine: nothing is left behind on failure, inputs and outputs never overlap", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "atomic");
  write_tiny_hf(dir / "a", 1);
  const auto c = cfg("merge_method: passthrough\nmodels:\n  - model: " + yaml_path(dir / "a") + "\n");
  const auto before = slurp(dir / "a" / "model.safetensors");
  {
    merge_engine e(c, make_strategy_handle(test_passthrough{"model.layers.1.mlp.up_proj.weight"}), {.output = dir / "out"});
    CHECK_THROWS_WITH(e.run(), Catch::Contains("injected failure"));
  }
  CHECK(count_entries(dir) == 1); // only the input
  CHECK(slurp(dir / "a" / "model.safetensors") == before);

  // Cancellation (what SIGINT does in the CLI).
  std::atomic<bool> cancel{true};
  {
    merge_engine e(c, make_strategy_handle(test_passthrough{}), {.output = dir / "out", .cancel = &cancel});
    CHECK_THROWS_WITH(e.run(), Catch::Contains("interrupted"));
  }
  CHECK(count_entries(dir) == 1);

  CHECK_THROWS_WITH(merge_engine(c, make_strategy_handle(test_passthrough{}), {.output = dir / "a"}),
                    Catch::Contains("overlaps the input"));
  CHECK_THROWS_WITH(merge_engine(c, make_strategy_handle(test_passthrough{}), {.output = dir / "a" / "sub"}),
                    Catch::Contains("overlaps the input"));
  CHECK_THROWS_WITH(merge_engine(c, make_strategy_handle(test_passthrough{}), {.output = dir}),
                    Catch::Contains("overlaps the input"));
  fs::create_directories(dir / "exists");
  {
    merge_engine e(c, make_strategy_handle(test_passthrough{}), {.output = dir / "exists"});
    CHECK_THROWS_WITH(e.run(), Catch::Contains("refusing to overwrite"));
  }
  // GGUF output needs a GGUF input for its metadata.
  CHECK_THROWS_WITH(merge_engine(c, make_strategy_handle(test_passthrough{}), {.output = dir / "o.gguf", .format = output_format::gguf}),
                    Catch::Contains("GGUF output takes its metadata"));
}

TEST_CASE("engine: temporaries of killed runs are removed before the next write", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "stale");
  write_tiny_hf(dir / "a", 1);
  // A pid that cannot be running (above Linux's pid_max limit of 2^22).
  fs::create_directories(dir / ".out.dms-tmp-99999999-0" / "x");
  // One of this (live) process: kept.
  fs::create_directories(dir / (".out.dms-tmp-" + std::to_string(::getpid()) + "-77"));
  const auto c = cfg("merge_method: passthrough\nmodels:\n  - model: " + yaml_path(dir / "a") + "\n");
  merge_engine e(c, make_strategy_handle(test_passthrough{}), {.output = dir / "out"});
  e.run();
  REQUIRE(e.removed_temporaries().size() == 1);
  CHECK(!fs::exists(dir / ".out.dms-tmp-99999999-0"));
  CHECK(fs::exists(dir / (".out.dms-tmp-" + std::to_string(::getpid()) + "-77")));
  CHECK(fs::exists(dir / "out" / "model.safetensors"));
}

TEST_CASE("engine: the plan describes every tensor (dry run)", "[merge][engine]") {
  const auto dir = scratch_dir("dms-engine", "plan");
  write_tiny_hf(dir / "a", 1);
  write_tiny_hf(dir / "b", 2);
  const auto c = cfg("merge_method: linear\nparameters:\n  weight: [0, 1]\nmodels:\n  - model: " + yaml_path(dir / "a") +
                     "\n  - model: " + yaml_path(dir / "b") + "\n    parameters: {weight: 0.5}\n");
  merge_engine e(c, make_strategy_handle(test_linear{}), {.output = dir / "out"});
  const std::string text = e.plan().describe();
  CHECK_THAT(text, Catch::Contains("merge plan: method linear, 30 tensors, 3 layers"));
  CHECK_THAT(text, Catch::Contains("model.layers.1.mlp.up_proj.weight [16, 8] f32 layer 1 t=0.5 <- [0] "
                                   "model.layers.1.mlp.up_proj.weight, [1] model.layers.1.mlp.up_proj.weight; "
                                   "weight=0.5 weight[1]=0.5"));
  CHECK_THAT(text, Catch::Contains("lm_head.weight [32, 8] f32 t=0 <- [0] lm_head.weight, [1] lm_head.weight; weight=0 weight[1]=0.5"));
  CHECK_THAT(text, Catch::Contains("model.embed_tokens.weight [32, 8] f32 t=0 <- [0] model.embed_tokens.weight, [1] model.embed_tokens.weight; weight=0 weight[1]=0.5"));
  CHECK_THAT(text, Catch::Contains("does not declare its parameters"));
  CHECK(!fs::exists(dir / "out"));
}

#endif // DMS_HAS_MERGE
