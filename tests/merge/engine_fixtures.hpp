// Tiny synthetic Llama-shaped checkpoints for the merge-engine tests: Hugging Face directories
// (single or sharded, F32/BF16), GGUF files (converted from the same weights, with the Q/K
// permutation convert_hf_to_gguf.py applies), and PEFT LoRA adapters. Values are a deterministic
// function of (seed, tensor name, index), so two writers with the same seed agree exactly.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <dms/core/half.hpp>
#include <dms/formats/gguf_names.hpp>
#include <dms/formats/gguf_writer.hpp>
#include <dms/formats/hf_checkpoint.hpp>
#include <dms/formats/quant.hpp>
#include <dms/merge/config.hpp>

namespace dms::test {

struct tiny_dims {
  std::int64_t hidden = 8, intermediate = 16, vocab = 32, layers = 3, heads = 2, kv_heads = 1;
  std::int64_t head_dim() const { return hidden / heads; }
};

inline std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline std::uint64_t name_hash(const std::string &s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
//! Values in [-1, 1), multiples of 2^-10 (exact in bf16 and f16 for |x| >= 2^-3 ... close enough
//! for F32 tests; BF16 tests compare against the rounded values).
inline std::vector<float> tensor_values(std::uint64_t seed, const std::string &name, std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<float>(static_cast<std::int64_t>(splitmix(seed ^ name_hash(name) ^ (i * 0x1234567ull)) % 2048) - 1024) /
           1024.0f;
  return v;
}

//! name -> shape of the tiny Llama, HF names, in model order.
inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> tiny_layout(const tiny_dims &d,
                                                                                  std::int64_t vocab = 0) {
  const std::int64_t V = vocab ? vocab : d.vocab, H = d.hidden, I = d.intermediate, KV = d.kv_heads * d.head_dim();
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> t;
  t.push_back({"model.embed_tokens.weight", {V, H}});
  for (std::int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {H}});
    t.push_back({p + "self_attn.q_proj.weight", {H, H}});
    t.push_back({p + "self_attn.k_proj.weight", {KV, H}});
    t.push_back({p + "self_attn.v_proj.weight", {KV, H}});
    t.push_back({p + "self_attn.o_proj.weight", {H, H}});
    t.push_back({p + "post_attention_layernorm.weight", {H}});
    t.push_back({p + "mlp.gate_proj.weight", {I, H}});
    t.push_back({p + "mlp.up_proj.weight", {I, H}});
    t.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  t.push_back({"model.norm.weight", {H}});
  t.push_back({"lm_head.weight", {V, H}});
  return t;
}

inline std::size_t numel_of(const std::vector<std::int64_t> &s) {
  std::size_t n = 1;
  for (auto e : s) n *= static_cast<std::size_t>(e);
  return n;
}

inline void write_text_file(const std::filesystem::path &p, const std::string &s) { std::ofstream(p, std::ios::binary) << s; }

inline std::string tiny_config_json(const tiny_dims &d, std::int64_t vocab = 0) {
  return "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n  \"hidden_size\": " +
         std::to_string(d.hidden) + ",\n  \"intermediate_size\": " + std::to_string(d.intermediate) +
         ",\n  \"num_hidden_layers\": " + std::to_string(d.layers) + ",\n  \"num_attention_heads\": " +
         std::to_string(d.heads) + ",\n  \"num_key_value_heads\": " + std::to_string(d.kv_heads) +
         ",\n  \"vocab_size\": " + std::to_string(vocab ? vocab : d.vocab) +
         ",\n  \"torch_dtype\": \"float32\",\n  \"tie_word_embeddings\": false\n}\n";
}

//! A Hugging Face directory of the tiny Llama with values from `seed`.
inline void write_tiny_hf(const std::filesystem::path &dir, std::uint64_t seed, const tiny_dims &d = {},
                          dtype type = dtype::f32, std::uint64_t max_shard_bytes = 5'000'000'000,
                          std::int64_t vocab = 0) {
  hf_checkpoint_writer w({.max_shard_bytes = max_shard_bytes});
  w.set_metadata("format", "pt");
  for (const auto &[name, shape] : tiny_layout(d, vocab)) {
    const auto v = tensor_values(seed, name, numel_of(shape));
    std::vector<std::byte> bytes(v.size() * size_of(type));
    quantize(type == dtype::bf16 ? ggml_type::bf16 : type == dtype::f16 ? ggml_type::f16 : ggml_type::f32, v, bytes);
    w.add(name, type, shape, [bytes](tensor_sink &s) { s.write(std::span<const std::byte>(bytes)); });
  }
  w.add_file("config.json", tiny_config_json(d, vocab));
  w.add_file("tokenizer.json", "{\"version\": \"1.0\", \"seed\": " + std::to_string(seed) + "}\n");
  w.add_file("generation_config.json", "{\"bos_token_id\": 1}\n");
  w.write(dir);
}

//! The values write_tiny_hf stores for `name` (after rounding to `type`).
inline std::vector<float> tiny_values(std::uint64_t seed, const std::string &name, std::size_t n,
                                      dtype type = dtype::f32) {
  auto v = tensor_values(seed, name, n);
  if (type == dtype::bf16)
    for (float &x : v) x = to_f32(to_bf16(x));
  return v;
}

//! A GGUF file of the same weights (GGUF names, Q/K rows permuted as llama.cpp's converter does),
//! stored as `type` (F32 or Q8_0 for matrices; 1-D tensors F32).
inline void write_tiny_gguf(const std::filesystem::path &path, std::uint64_t seed, const tiny_dims &d = {},
                            ggml_type type = ggml_type::f32) {
  gguf_writer w;
  w.set("general.architecture", "llama");
  w.set("general.name", "tiny-" + std::to_string(seed));
  w.set("llama.block_count", static_cast<std::uint32_t>(d.layers));
  w.set("llama.embedding_length", static_cast<std::uint32_t>(d.hidden));
  w.set("llama.feed_forward_length", static_cast<std::uint32_t>(d.intermediate));
  w.set("llama.attention.head_count", static_cast<std::uint32_t>(d.heads));
  w.set("llama.attention.head_count_kv", static_cast<std::uint32_t>(d.kv_heads));
  w.set("tokenizer.ggml.model", "gpt2");
  std::vector<std::string> tokens;
  for (std::int64_t i = 0; i < d.vocab; ++i) tokens.push_back("t" + std::to_string(i));
  w.set("tokenizer.ggml.tokens", gguf_value(tokens));
  w.set("general.file_type", std::uint32_t{type == ggml_type::q8_0 ? 7u : 0u});
  for (const auto &[name, shape] : tiny_layout(d)) {
    auto v = tensor_values(seed, name, numel_of(shape));
    if (auto heads = llama_qk_permute_heads(name, d.heads, d.kv_heads)) {
      std::vector<float> p(v.size());
      permute_qk<float>(v, p, shape[0], shape.size() > 1 ? shape[1] : 1, *heads);
      v = p;
    }
    const ggml_type t = shape.size() >= 2 ? type : ggml_type::f32;
    std::vector<std::byte> bytes(*storage_bytes(t, v.size()));
    quantize(t, v, bytes);
    w.add_tensor(*hf_to_gguf_name(name), t, shape, std::move(bytes));
  }
  w.write(path);
}

//! A PEFT LoRA adapter of rank `r` on q_proj and v_proj of every layer.
inline void write_tiny_lora(const std::filesystem::path &dir, std::uint64_t seed, const tiny_dims &d = {},
                            std::int64_t r = 2, double alpha = 4) {
  std::filesystem::create_directories(dir);
  safetensors_writer w;
  std::vector<std::vector<float>> keep;
  keep.reserve(static_cast<std::size_t>(4 * d.layers)); // spans into it must stay valid until write()
  for (std::int64_t l = 0; l < d.layers; ++l)
    for (const char *m : {"q_proj", "v_proj"}) {
      const std::string mod = "base_model.model.model.layers." + std::to_string(l) + ".self_attn." + m;
      const std::int64_t out = std::string(m) == "q_proj" ? d.hidden : d.kv_heads * d.head_dim();
      keep.push_back(tensor_values(seed, mod + ".A", static_cast<std::size_t>(r * d.hidden)));
      w.add(mod + ".lora_A.weight", dtype::f32, {r, d.hidden}, std::as_bytes(std::span<const float>(keep.back())));
      keep.push_back(tensor_values(seed, mod + ".B", static_cast<std::size_t>(out * r)));
      w.add(mod + ".lora_B.weight", dtype::f32, {out, r}, std::as_bytes(std::span<const float>(keep.back())));
    }
  w.write(dir / "adapter_model.safetensors");
  write_text_file(dir / "adapter_config.json",
                  "{\"peft_type\": \"LORA\", \"r\": " + std::to_string(r) + ", \"lora_alpha\": " + std::to_string(alpha) +
                      ", \"target_modules\": [\"q_proj\", \"v_proj\"], \"bias\": \"none\"}\n");
}

//! Every tensor of a checkpoint directory as f32.
inline std::map<std::string, std::vector<float>> read_hf(const std::filesystem::path &dir) {
  hf_checkpoint c(dir);
  std::map<std::string, std::vector<float>> out;
  for (const auto &n : c.tensor_names()) out[n] = c.to_f32(n);
  return out;
}

} // namespace dms::test
