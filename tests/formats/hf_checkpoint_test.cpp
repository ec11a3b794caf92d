#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "dms/formats/hf_checkpoint.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {
fs::path scratch_dir(const std::string &name) { return dms::test::scratch_dir("dms-hf-test", name); }
std::string slurp(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
void spit(const fs::path &p, const std::string &s) { std::ofstream(p, std::ios::binary) << s; }
template <class T> std::span<const std::byte> bytes_of(const std::vector<T> &v) {
  return std::as_bytes(std::span<const T>(v));
}
std::vector<float> iota_f(std::size_t n, float start) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = start + static_cast<float>(i);
  return v;
}
} // namespace

TEST_CASE("hf checkpoint: a single model.safetensors", "[formats][hf_checkpoint]") {
  const auto dir = scratch_dir("single");
  const auto a = iota_f(6, 0);
  dms::hf_checkpoint_writer w;
  w.set_metadata("format", "pt");
  w.add("model.embed_tokens.weight", dms::dtype::f32, {2, 3}, bytes_of(a));
  w.add_file("config.json", R"({"hidden_size": 3})");
  w.write(dir / "out");
  CHECK(fs::exists(dir / "out" / "model.safetensors"));
  CHECK_FALSE(fs::exists(dir / "out" / "model.safetensors.index.json"));
  CHECK(slurp(dir / "out" / "config.json") == R"({"hidden_size": 3})");

  const dms::hf_checkpoint ck(dir / "out");
  CHECK_FALSE(ck.sharded());
  CHECK(ck.shard_count() == 1);
  CHECK(ck.size() == 1);
  CHECK(ck.to_f32("model.embed_tokens.weight") == a);
  CHECK(ck.view("model.embed_tokens.weight").extents[1] == 3);
  CHECK(ck.shard(0).metadata("format") == "pt");
  CHECK_FALSE(ck.total_size().has_value());
  CHECK_THROWS_WITH(ck.at("lm_head.weight"), Contains("no tensor named 'lm_head.weight' in the checkpoint"));
  CHECK(ck.find("lm_head.weight") == nullptr);
  CHECK_THROWS_WITH(w.write(dir / "out"), Contains("already exists; refusing to overwrite"));
  fs::remove_all(dir);
}

TEST_CASE("hf checkpoint: sharded writer splits like save_pretrained and reads back",
          "[formats][hf_checkpoint]") {
  const auto dir = scratch_dir("sharded");
  const auto t0 = iota_f(4, 0);   // 16 bytes
  const auto t1 = iota_f(4, 10);  // 16
  const auto big = iota_f(20, 5); // 80: larger than a shard
  const auto t3 = iota_f(2, 50);  // 8
  dms::hf_checkpoint_writer w({.max_shard_bytes = 40});
  w.add("model.layers.0.a", dms::dtype::f32, {4}, bytes_of(t0));
  w.add("model.layers.0.b", dms::dtype::f32, {2, 2}, bytes_of(t1));
  w.add("lm_head.weight", dms::dtype::f32, {4, 5},
        [&](dms::tensor_sink &s) { s.write(std::span<const float>(big)); });
  w.add("model.norm.weight", dms::dtype::f32, {2}, bytes_of(t3));
  w.add("model.layers.1.a", dms::dtype::f32, {4}, bytes_of(t0));
  CHECK(w.total_size() == 136);
  // huggingface_hub: the oversized tensor gets its own shard, placed before the one being filled.
  CHECK(w.plan() == std::vector<std::vector<std::size_t>>{{2}, {0, 1, 3}, {4}});
  w.write(dir / "out");

  for (const char *f : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                        "model-00003-of-00003.safetensors", "model.safetensors.index.json"})
    CHECK(fs::exists(dir / "out" / f));
  CHECK(slurp(dir / "out" / "model.safetensors.index.json") ==
        "{\n"
        "  \"metadata\": {\n"
        "    \"total_size\": 136\n"
        "  },\n"
        "  \"weight_map\": {\n"
        "    \"lm_head.weight\": \"model-00001-of-00003.safetensors\",\n"
        "    \"model.layers.0.a\": \"model-00002-of-00003.safetensors\",\n"
        "    \"model.layers.0.b\": \"model-00002-of-00003.safetensors\",\n"
        "    \"model.layers.1.a\": \"model-00003-of-00003.safetensors\",\n"
        "    \"model.norm.weight\": \"model-00002-of-00003.safetensors\"\n"
        "  }\n"
        "}\n");

  const dms::hf_checkpoint ck(dir / "out");
  CHECK(ck.sharded());
  CHECK(ck.shard_count() == 3);
  CHECK(ck.total_size() == 136u);
  CHECK(ck.tensor_names() == std::vector<std::string>{"lm_head.weight", "model.layers.0.a",
                                                      "model.layers.0.b", "model.layers.1.a",
                                                      "model.norm.weight"});
  CHECK(ck.to_f32("lm_head.weight") == big);
  CHECK(ck.to_f32("model.layers.0.b") == t1);
  CHECK(ck.to_f32("model.layers.1.a") == t0);
  CHECK(ck.file_of("model.norm.weight").path() ==
        (dir / "out" / "model-00002-of-00003.safetensors").string());
  CHECK(ck.index_metadata()["total_size"] == 136);

  // With single_file_if_one_shard = false, even one shard gets an index.
  dms::hf_checkpoint_writer one({.single_file_if_one_shard = false});
  one.add("x", dms::dtype::f32, {4}, bytes_of(t0));
  one.write(dir / "one");
  CHECK(fs::exists(dir / "one" / "model-00001-of-00001.safetensors"));
  CHECK(dms::hf_checkpoint(dir / "one").sharded());
  fs::remove_all(dir);
}

TEST_CASE("hf checkpoint writer leaves nothing behind on failure", "[formats][hf_checkpoint]") {
  const auto dir = scratch_dir("fail");
  const auto t = iota_f(4, 0);
  dms::hf_checkpoint_writer w({.max_shard_bytes = 16});
  w.add("a", dms::dtype::f32, {4}, bytes_of(t));
  w.add("b", dms::dtype::f32, {4}, [](dms::tensor_sink &) { throw std::runtime_error("merge failed"); });
  CHECK_THROWS_WITH(w.write(dir / "out"), Contains("merge failed"));
  CHECK(fs::is_empty(dir));
  CHECK_THROWS_WITH(w.add("a", dms::dtype::f32, {4}, bytes_of(t)), Contains("added twice"));
  CHECK_THROWS_WITH(w.add_file("../x", ""), Contains("not a plain file name"));
  CHECK_THROWS_WITH(dms::hf_checkpoint_writer({.max_shard_bytes = 0}),
                    Contains("max_shard_bytes must be positive"));
  fs::remove_all(dir);
}

TEST_CASE("hf checkpoint rejects inconsistent directories", "[formats][hf_checkpoint]") {
  const auto dir = scratch_dir("bad");
  const auto t = iota_f(4, 0);
  dms::safetensors_writer w;
  w.add("a", dms::dtype::f32, {4}, bytes_of(t));
  w.write(dir / "s1.safetensors");
  const std::string index = (dir / "model.safetensors.index.json").string();

  CHECK_THROWS_WITH(dms::hf_checkpoint(dir),
                    Contains("no model.safetensors or model.safetensors.index.json"));

  spit(index, R"({"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  CHECK_THROWS_WITH(dms::hf_checkpoint(dir),
                    Contains(index + ": offset 17: I/O error: shard 's2.safetensors' "
                                     "(listed for tensor 'b') does not exist"));
  spit(index, R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})");
  CHECK_THROWS_WITH(
      dms::hf_checkpoint(dir),
      Contains("s1.safetensors: tensor 'b': invalid format: listed in model.safetensors.index.json "
               "for this shard, but the shard has no such tensor"));
  spit(index, R"({"weight_map": {"a": "../s1.safetensors"}})");
  CHECK_THROWS_WITH(dms::hf_checkpoint(dir),
                    Contains("expected a file name inside the checkpoint directory"));
  spit(index, R"({"weight_map": {"a": 3}})");
  CHECK_THROWS_WITH(dms::hf_checkpoint(dir), Contains("weight_map['a']: expected a string, got integer"));
  spit(index, R"({"weight_map": []})");
  CHECK_THROWS_WITH(dms::hf_checkpoint(dir),
                    Contains("offset 1") && Contains("key 'weight_map': expected an object, got array"));
  spit(index, R"({"metadata": {}})");
  CHECK_THROWS_WITH(dms::hf_checkpoint(dir), Contains("missing key 'weight_map'"));
  spit(index, R"({"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}})");
  CHECK_THROWS_WITH(dms::hf_checkpoint(dir), Contains("offset 39: invalid format: duplicate key 'a'"));
  spit(index, R"({"weight_map": {"a": "s1.safetensors"}})");
  CHECK(dms::hf_checkpoint(dir).to_f32("a") == t);
  fs::remove_all(dir);
}

TEST_CASE("config.json: Llama and Qwen2 hyper-parameters", "[formats][hf_checkpoint]") {
  // SmolLM2-135M's config.json (abridged).
  const auto smol = dms::parse_hf_config(R"({
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
    "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536,
    "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
    "num_hidden_layers": 30, "num_key_value_heads": 3, "rms_norm_eps": 1e-05,
    "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16", "vocab_size": 49152})",
                                         "config.json");
  CHECK(smol.architectures == std::vector<std::string>{"LlamaForCausalLM"});
  CHECK(smol.model_type == "llama");
  CHECK(smol.hidden_size == 576);
  CHECK(smol.intermediate_size == 1536);
  CHECK(smol.num_hidden_layers == 30);
  CHECK(smol.num_attention_heads == 9);
  CHECK(smol.num_key_value_heads == 3);
  CHECK(smol.head_dim == 64);
  CHECK(smol.rms_norm_eps == 1e-5);
  CHECK(smol.rope_theta == 100000.0);
  CHECK_FALSE(smol.rope_scaling.has_value());
  CHECK(smol.tie_word_embeddings);
  CHECK(smol.max_position_embeddings == 8192);
  CHECK(smol.bos_token_id == 0);
  CHECK(smol.eos_token_ids == std::vector<std::int64_t>{0});
  CHECK(smol.torch_dtype == "bfloat16");

  // Defaults, an eos list and llama3 rope scaling.
  const auto c = dms::parse_hf_config(R"({"hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
    "eos_token_id": [1, 2], "bos_token_id": null, "dtype": "float32",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})",
                                      "c.json");
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK(c.rope_theta == 10000.0);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK_FALSE(c.max_position_embeddings.has_value());
  CHECK_FALSE(c.bos_token_id.has_value());
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{1, 2});
  CHECK(c.torch_dtype == "float32");
  CHECK(c.hidden_act == "silu");
  REQUIRE(c.rope_scaling.has_value());
  CHECK(c.rope_scaling->rope_type == "llama3");
  CHECK(c.rope_scaling->factor == 8.0);
  CHECK(c.rope_scaling->high_freq_factor == 4.0);
  CHECK(c.rope_scaling->original_max_position_embeddings == 8192);
  const auto legacy = dms::parse_hf_config(R"({"hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "head_dim": 32,
    "rope_scaling": {"type": "linear", "factor": 2}})",
                                           "c.json");
  CHECK(legacy.rope_scaling->rope_type == "linear");
  CHECK(legacy.head_dim == 32);

  // Errors name the key.
  const std::string base =
      R"("intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100)";
  CHECK_THROWS_WITH(dms::parse_hf_config("{" + base + "}", "config.json"),
                    Contains("config.json: offset 0: invalid format: missing key 'hidden_size'"));
  CHECK_THROWS_WITH(dms::parse_hf_config(R"({"hidden_size": "64", )" + base + "}", "config.json"),
                    Contains("config.json: offset 1") &&
                        Contains("key 'hidden_size': expected an integer in [1, ") && Contains("got string"));
  CHECK_THROWS_WITH(dms::parse_hf_config(R"({"hidden_size": 0, )" + base + "}", "config.json"),
                    Contains("key 'hidden_size': expected an integer in [1, 9223372036854775807], got 0"));
  CHECK_THROWS_WITH(
      dms::parse_hf_config(R"({"hidden_size": 64, "num_key_value_heads": 3, )" + base + "}", "c"),
      Contains("num_attention_heads (4) must be a multiple of num_key_value_heads (3)"));
  CHECK_THROWS_WITH(dms::parse_hf_config(R"({"hidden_size": 66, )" + base + "}", "c"),
                    Contains("hidden_size (66) is not a multiple of num_attention_heads (4)"));
  CHECK_THROWS_WITH(dms::parse_hf_config(R"({"hidden_size": 64, "rms_norm_eps": "x", )" + base + "}", "c"),
                    Contains("key 'rms_norm_eps': expected a number, got string"));
  CHECK_THROWS_WITH(dms::parse_hf_config(R"({"hidden_size": 64, "rope_theta": -1, )" + base + "}", "c"),
                    Contains("key 'rope_theta': expected a positive number, got -1"));
  CHECK_THROWS_WITH(
      dms::parse_hf_config(R"({"hidden_size": 64, "rope_scaling": {"factor": 2}, )" + base + "}", "c"),
      Contains("rope_scaling: missing key 'rope_type' (or 'type')"));
  CHECK_THROWS_WITH(dms::parse_hf_config(R"({"hidden_size": 64, "rope_scaling": 2, )" + base + "}", "c"),
                    Contains("key 'rope_scaling': expected an object, got integer"));
  CHECK_THROWS_WITH(
      dms::parse_hf_config(R"({"hidden_size": 64, "tie_word_embeddings": 1, )" + base + "}", "c"),
      Contains("key 'tie_word_embeddings': expected true or false, got integer"));
  CHECK_THROWS_WITH(dms::parse_hf_config(R"({"hidden_size": 64, "eos_token_id": "2", )" + base + "}", "c"),
                    Contains("key 'eos_token_id': expected an integer or an array of integers, got string"));
  CHECK_THROWS_WITH(
      dms::parse_hf_config(R"({"hidden_size": 64, "architectures": "Llama", )" + base + "}", "c"),
      Contains("key 'architectures': expected an array of strings, got string"));
  CHECK_THROWS_WITH(dms::parse_hf_config("[]", "c"), Contains("config: expected an object, got array"));

  const auto dir = scratch_dir("config");
  spit(dir / "config.json", R"({"hidden_size": 64, )" + base + "}");
  CHECK(dms::read_hf_config(dir).hidden_size == 64);
  CHECK(dms::read_hf_config(dir / "config.json").vocab_size == 100);
  CHECK_THROWS_WITH(dms::read_hf_config(dir / "nope.json"), Contains("nope.json: I/O error: cannot open"));
  fs::remove_all(dir);
}
