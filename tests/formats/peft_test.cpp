#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "dms/formats/peft.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {
fs::path scratch_dir(const std::string &name) { return dms::test::scratch_dir("dms-peft-test", name); }
template <class T> std::span<const std::byte> bytes_of(const std::vector<T> &v) {
  return std::as_bytes(std::span<const T>(v));
}
//! Deterministic small values, exact in f32.
std::vector<float> values(std::size_t n, int seed) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<float>((static_cast<int>(i) * 7 + seed * 13) % 17 - 8) / 8.0f;
  return v;
}
//! Reference: scale * B A as [out, in] in double.
std::vector<double> reference(const std::vector<float> &a, const std::vector<float> &b, std::size_t r,
                              std::size_t in, std::size_t out, double scale) {
  std::vector<double> d(out * in, 0.0);
  for (std::size_t i = 0; i < out; ++i)
    for (std::size_t j = 0; j < in; ++j) {
      double s = 0;
      for (std::size_t k = 0; k < r; ++k)
        s += double(b[i * r + k]) * double(a[k * in + j]);
      d[i * in + j] = scale * s;
    }
  return d;
}
struct adapter_files {
  dms::safetensors_writer w;
  std::vector<std::vector<float>> keep; // storage for the spans
  void add(const std::string &name, std::vector<float> v, std::vector<std::int64_t> shape) {
    keep.push_back(std::move(v));
    w.add(name, dms::dtype::f32, std::move(shape), bytes_of(keep.back()));
  }
  std::vector<std::byte> bytes() const { return w.serialize(); }
};
dms::lora_adapter make(const std::string &config, const std::vector<std::byte> &weights) {
  return dms::lora_adapter(dms::parse_lora_config(config, "adapter_config.json"),
                           dms::safetensors_file(weights, "adapter_model.safetensors"));
}
const std::string P = "base_model.model.";
} // namespace

TEST_CASE("LoRA config: defaults, patterns, scales", "[formats][peft]") {
  const auto c = dms::parse_lora_config(R"({
    "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "embed_tokens"],
    "rank_pattern": {"layers.1.self_attn.v_proj": 4, "v_proj": 2},
    "alpha_pattern": {"q_proj": 32.5}, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M",
    "fan_in_fan_out": false, "use_rslora": false, "bias": "none", "use_dora": false,
    "lora_dropout": 0.05, "task_type": "CAUSAL_LM"})",
                                        "adapter_config.json");
  CHECK(c.r == 8);
  CHECK(c.lora_alpha == 16.0);
  CHECK(c.base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M");
  // The first pattern in file order wins: layer 1's v_proj gets 4, the others 2.
  CHECK(c.rank_for("model.layers.1.self_attn.v_proj") == 4);
  CHECK(c.rank_for("model.layers.11.self_attn.v_proj") == 2);
  CHECK(c.rank_for("model.layers.0.self_attn.q_proj") == 8);
  CHECK(c.alpha_for("model.layers.0.self_attn.q_proj") == 32.5);
  CHECK(c.alpha_for("model.layers.0.self_attn.v_proj") == 16.0);
  CHECK(c.scale_for("model.layers.0.self_attn.v_proj") == 8.0);
  // A pattern must match a whole dotted suffix: "v_proj" does not match "xv_proj".
  CHECK(c.rank_for("model.layers.0.self_attn.xv_proj") == 8);
  CHECK(c.targets("model.layers.0.self_attn.q_proj"));
  CHECK(c.targets("q_proj"));
  CHECK_FALSE(c.targets("model.layers.0.self_attn.k_proj"));
  CHECK_FALSE(c.targets("model.layers.0.self_attn.xq_proj"));

  const auto rs = dms::parse_lora_config(R"({"r": 16, "lora_alpha": 8, "use_rslora": true,
    "target_modules": ".*\\.(q|v)_proj"})",
                                         "a.json");
  CHECK(rs.scale_for("x") == Approx(8.0 / 4.0));
  CHECK(rs.targets("model.layers.0.self_attn.q_proj"));
  CHECK_FALSE(rs.targets("model.layers.0.self_attn.k_proj"));
  CHECK_FALSE(rs.targets("model.layers.0.self_attn.q_proj.x")); // the regex must match the whole name
  const auto all = dms::parse_lora_config(R"({"target_modules": "all-linear"})", "a.json");
  CHECK(all.targets("anything"));
  CHECK(all.r == 8);
  CHECK(all.lora_alpha == 8.0);

  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"peft_type": "IA3"})", "a.json"),
                    Contains("a.json: offset 1: unsupported: peft_type 'IA3'"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"use_dora": true})", "a.json"), Contains("DoRA"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"bias": "all"})", "a.json"), Contains("bias 'all'"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"r": 0})", "a.json"),
                    Contains("key 'r': expected an integer in [1,"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"r": "8"})", "a.json"),
                    Contains("key 'r'") && Contains("got string"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"lora_alpha": "x"})", "a.json"),
                    Contains("key 'lora_alpha': expected a number, got string"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"target_modules": 3})", "a.json"),
                    Contains("key 'target_modules': expected a list of module names or a regex string"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"target_modules": "(q_proj"})", "a.json"),
                    Contains("cannot compile regular expression '(q_proj'"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"rank_pattern": {"q": 0}})", "a.json"),
                    Contains("rank_pattern['q']: expected an integer in [1,"));
  CHECK_THROWS_WITH(dms::parse_lora_config(R"({"alpha_pattern": []})", "a.json"),
                    Contains("key 'alpha_pattern': expected an object, got array"));
}

TEST_CASE("LoRA adapter: deltas for Linear, rank patterns, fan_in_fan_out and Embedding", "[formats][peft]") {
  const std::size_t in = 5, out = 3, r = 2, vocab = 6, dim = 4;
  const auto qa = values(r * in, 1), qb = values(out * r, 2);
  const auto va = values(1 * in, 3), vb = values(out * 1, 4); // rank 1 through rank_pattern
  const auto ea = values(r * vocab, 5), eb = values(dim * r, 6);
  adapter_files f;
  f.add(P + "model.layers.0.self_attn.q_proj.lora_A.weight", qa, {2, 5});
  f.add(P + "model.layers.0.self_attn.q_proj.lora_B.weight", qb, {3, 2});
  f.add(P + "model.layers.0.self_attn.v_proj.lora_A.weight", va, {1, 5});
  f.add(P + "model.layers.0.self_attn.v_proj.lora_B.weight", vb, {3, 1});
  f.add(P + "model.embed_tokens.lora_embedding_A", ea, {2, 6});
  f.add(P + "model.embed_tokens.lora_embedding_B", eb, {4, 2});
  const auto bytes = f.bytes();
  const auto lora =
      make(R"({"r": 2, "lora_alpha": 3, "rank_pattern": {"v_proj": 1}, "alpha_pattern": {"v_proj": 5},
    "target_modules": ["q_proj", "v_proj", "embed_tokens"]})",
           bytes);

  REQUIRE(lora.modules().size() == 3);
  CHECK(lora.modules()[0].base_tensor == "model.embed_tokens.weight");
  CHECK(lora.modules()[1].base_tensor == "model.layers.0.self_attn.q_proj.weight");
  CHECK(lora.modules()[2].base_tensor == "model.layers.0.self_attn.v_proj.weight");

  const auto *q = lora.find("model.layers.0.self_attn.q_proj.weight");
  REQUIRE(q != nullptr);
  CHECK(q->module == "model.layers.0.self_attn.q_proj");
  CHECK(q->rank == 2);
  CHECK(q->scale == 1.5);
  CHECK(q->rows == 3);
  CHECK(q->cols == 5);
  CHECK_FALSE(q->transposed);
  const auto dq = lora.delta(*q);
  const auto rq = reference(qa, qb, r, in, out, 1.5);
  for (std::size_t i = 0; i < dq.size(); ++i)
    CHECK(dq[i] == Approx(rq[i]).margin(1e-6));

  const auto *v = lora.find("model.layers.0.self_attn.v_proj.weight");
  REQUIRE(v != nullptr);
  CHECK(v->rank == 1);
  CHECK(v->scale == 5.0);
  const auto dv = lora.delta(*v);
  const auto rv = reference(va, vb, 1, in, out, 5.0);
  for (std::size_t i = 0; i < dv.size(); ++i)
    CHECK(dv[i] == Approx(rv[i]).margin(1e-6));

  // Embedding: delta = (B A)^T, [vocab, dim].
  const auto *e = lora.find("model.embed_tokens.weight");
  REQUIRE(e != nullptr);
  CHECK(e->transposed);
  CHECK(e->rows == 6);
  CHECK(e->cols == 4);
  const auto de = lora.delta(*e);
  const auto re = reference(ea, eb, r, vocab, dim, 1.5); // [dim, vocab]
  for (std::size_t t = 0; t < vocab; ++t)
    for (std::size_t c = 0; c < dim; ++c)
      CHECK(de[t * dim + c] == Approx(re[c * vocab + t]).margin(1e-6));

  // apply() adds to an existing weight.
  std::vector<float> w(15, 1.0f);
  lora.apply(*q, w);
  for (std::size_t i = 0; i < w.size(); ++i)
    CHECK(w[i] == Approx(1.0 + rq[i]).margin(1e-6));
  std::vector<float> wrong(14);
  CHECK_THROWS_WITH(lora.apply(*q, wrong), Contains("output holds 14 floats, the delta is [3, 5]"));

  // fan_in_fan_out: the base weight is [in, out] and the delta is transposed.
  adapter_files g;
  g.add(P + "h.0.attn.c_attn.lora_A.weight", qa, {2, 5});
  g.add(P + "h.0.attn.c_attn.lora_B.weight", qb, {3, 2});
  const auto g_bytes = g.bytes(); // the adapter borrows these bytes: they must outlive it
  const auto lt = make(R"({"r": 2, "lora_alpha": 3, "fan_in_fan_out": true})", g_bytes);
  const auto &c = lt.modules()[0];
  CHECK(c.base_tensor == "h.0.attn.c_attn.weight");
  CHECK(c.transposed);
  CHECK(c.rows == 5);
  CHECK(c.cols == 3);
  const auto dc = lt.delta(c);
  for (std::size_t j = 0; j < in; ++j)
    for (std::size_t i = 0; i < out; ++i)
      CHECK(dc[j * out + i] == Approx(rq[i * in + j]).margin(1e-6));
}

TEST_CASE("LoRA adapter: half-precision factors and modules_to_save", "[formats][peft]") {
  const auto a = values(2 * 4, 7), b = values(3 * 2, 8);
  std::vector<dms::bf16_bits> a16;
  std::vector<dms::f16_bits> b16;
  for (float x : a)
    a16.push_back(dms::to_bf16(x));
  for (float x : b)
    b16.push_back(dms::to_f16(x));
  const auto head = values(6, 9);
  dms::safetensors_writer w;
  w.add(P + "model.layers.0.mlp.down_proj.lora_A.weight", dms::dtype::bf16, {2, 4}, bytes_of(a16));
  w.add(P + "model.layers.0.mlp.down_proj.lora_B.weight", dms::dtype::f16, {3, 2}, bytes_of(b16));
  w.add(P + "lm_head.weight", dms::dtype::f32, {2, 3}, bytes_of(head));
  const auto bytes = w.serialize();
  const auto lora = make(R"({"r": 2, "lora_alpha": 2, "modules_to_save": ["lm_head"]})", bytes);
  REQUIRE(lora.modules().size() == 1);
  const auto d = lora.delta(lora.modules()[0]);
  const auto ref = reference(a, b, 2, 4, 3, 1.0); // the values are exact in f16 and bf16
  for (std::size_t i = 0; i < d.size(); ++i)
    CHECK(d[i] == Approx(ref[i]).margin(1e-6));
  REQUIRE(lora.replacements().size() == 1);
  CHECK(lora.replacements()[0].base_tensor == "lm_head.weight");
  CHECK(lora.replacements()[0].adapter_tensor == P + "lm_head.weight");
  CHECK(lora.weights().to_f32(lora.replacements()[0].adapter_tensor) == head);
}

TEST_CASE("LoRA adapter errors name the tensors", "[formats][peft]") {
  const auto a = values(2 * 4, 1), b = values(3 * 2, 2);
  auto fails = [](const std::string &config, adapter_files &f) {
    const auto bytes = f.bytes();
    try {
      make(config, bytes);
    } catch (const dms::error &e) {
      return std::string(e.what());
    }
    FAIL("no error");
    return std::string();
  };
  const std::string qa = P + "model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string qb = P + "model.layers.0.self_attn.q_proj.lora_B.weight";
  SECTION("A without B") {
    adapter_files f;
    f.add(qa, a, {2, 4});
    CHECK_THAT(fails(R"({"r": 2})", f), Contains("adapter_model.safetensors: offset 9: tensor '" + qa +
                                                 "': invalid format: has no matching '" + qb + "'"));
  }
  SECTION("B without A") {
    adapter_files f;
    f.add(qb, b, {3, 2});
    CHECK_THAT(fails(R"({"r": 2})", f),
               Contains("tensor '" + qb + "'") && Contains("has no matching '" + qa + "'"));
  }
  SECTION("rank disagrees with the config") {
    adapter_files f;
    f.add(qa, a, {2, 4});
    f.add(qb, b, {3, 2});
    CHECK_THAT(fails(R"({"r": 4})", f),
               Contains("shape mismatch: rank 4 (from the adapter config) disagrees with '" + qa +
                        "' [2, 4] and '" + qb + "' [3, 2] (expected A [r, in] and B [out, r])"));
  }
  SECTION("factor shapes disagree") {
    adapter_files f;
    f.add(qa, a, {2, 4});
    f.add(qb, b, {2, 3});
    CHECK_THAT(fails(R"({"r": 2})", f), Contains("'" + qa + "' [2, 4] and '" + qb + "' [2, 3]"));
    adapter_files g;
    g.add(qa, a, {8});
    g.add(qb, b, {3, 2});
    CHECK_THAT(fails(R"({"r": 2})", g), Contains("LoRA factors must be matrices"));
  }
  SECTION("unknown keys") {
    adapter_files f;
    f.add("model.layers.0.q_proj.lora_A.weight", a, {2, 4});
    CHECK_THAT(fails(R"({"r": 2})", f),
               Contains("tensor 'model.layers.0.q_proj.lora_A.weight': invalid format: unknown key "
                        "(expected base_model.model.<module>.lora_A.weight"));
    adapter_files g;
    g.add(P + "lm_head.weight", a, {2, 4});
    CHECK_THAT(fails(R"({"r": 2})", g), Contains("unknown key"));
    adapter_files h;
    h.add(P + "model.layers.0.self_attn.q_proj.lora_A.default.weight", a, {2, 4});
    CHECK_THAT(fails(R"({"r": 2})", h), Contains("unknown key"));
  }
  SECTION("unsupported features") {
    adapter_files f;
    f.add(P + "model.layers.0.self_attn.q_proj.lora_magnitude_vector", a, {8});
    CHECK_THAT(fails(R"({"r": 2})", f), Contains("DoRA magnitude vectors are not supported"));
    adapter_files g;
    g.add(P + "model.layers.0.self_attn.q_proj.lora_B.bias", a, {8});
    CHECK_THAT(fails(R"({"r": 2})", g), Contains("LoRA biases"));
    adapter_files h;
    const std::vector<float> ints(8);
    h.keep.push_back(ints);
    h.w.add(qa, dms::dtype::i32, {2, 4}, bytes_of(h.keep.back()));
    h.add(qb, b, {3, 2});
    CHECK_THAT(fails(R"({"r": 2})", h), Contains("LoRA factor of dtype I32"));
  }
  SECTION("mixed Linear and Embedding factors") {
    adapter_files f;
    f.add(P + "model.embed_tokens.lora_A.weight", a, {2, 4});
    f.add(P + "model.embed_tokens.lora_embedding_B", b, {3, 2});
    CHECK_THAT(fails(R"({"r": 2})", f), Contains("has both Linear"));
  }
  SECTION("module outside target_modules") {
    adapter_files f;
    f.add(qa, a, {2, 4});
    f.add(qb, b, {3, 2});
    CHECK_THAT(
        fails(R"({"r": 2, "target_modules": ["k_proj"]})", f),
        Contains(
            "module 'model.layers.0.self_attn.q_proj' has LoRA factors but does not match target_modules"));
  }
}

TEST_CASE("LoRA adapter from a directory", "[formats][peft]") {
  const auto dir = scratch_dir("dir");
  const auto a = values(2 * 4, 1), b = values(3 * 2, 2);
  adapter_files f;
  f.add(P + "model.layers.0.self_attn.q_proj.lora_A.weight", a, {2, 4});
  f.add(P + "model.layers.0.self_attn.q_proj.lora_B.weight", b, {3, 2});
  f.w.write(dir / "adapter_model.safetensors");
  std::ofstream(dir / "adapter_config.json") << R"({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]})";
  const dms::lora_adapter lora(dir);
  CHECK(lora.config().lora_alpha == 4.0);
  REQUIRE(lora.modules().size() == 1);
  CHECK(lora.modules()[0].scale == 2.0);
  fs::remove(dir / "adapter_config.json");
  CHECK_THROWS_WITH(dms::lora_adapter(dir), Contains("adapter_config.json: I/O error: cannot open"));
  fs::remove_all(dir);
}
