// GGUF <-> Hugging Face tensor names for Llama models, and the Q/K row permutation of
// convert_hf_to_gguf.py.
#include <catch2/catch.hpp>

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "dms/formats/gguf_names.hpp"

using Catch::Matchers::Contains;

TEST_CASE("gguf names: every Llama tensor maps both ways", "[formats][gguf][names]") {
  const std::pair<const char *, const char *> pairs[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
      {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight"},
      {"blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight"},
      {"blk.7.attn_output.weight", "model.layers.7.self_attn.o_proj.weight"},
      {"blk.12.ffn_norm.weight", "model.layers.12.post_attention_layernorm.weight"},
      {"blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"},
      {"blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"},
      {"blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"},
      {"blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"},
      {"blk.3.ffn_down.bias", "model.layers.3.mlp.down_proj.bias"},
      {"blk.100.attn_v.bias", "model.layers.100.self_attn.v_proj.bias"},
  };
  for (const auto &[g, h] : pairs) {
    INFO(g << " <-> " << h);
    CHECK(dms::gguf_to_hf_name(g) == std::optional<std::string>(h));
    CHECK(dms::hf_to_gguf_name(h) == std::optional<std::string>(g));
  }
  // Every block entry of the table, weight and bias, round-trips.
  for (const auto &p : dms::llama_block_tensor_names)
    for (const char *suffix : {".weight", ".bias"}) {
      const std::string g = "blk.5." + std::string(p.gguf) + suffix;
      const auto h = dms::gguf_to_hf_name(g);
      REQUIRE(h.has_value());
      CHECK(dms::hf_to_gguf_name(*h) == g);
    }
}

TEST_CASE("gguf names: unknown and malformed names do not map", "[formats][gguf][names]") {
  for (const char *name : {"blk.0.attn_q", "blk.0.attn_qkv.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight",
                           "blk.-1.attn_q.weight", "blk..attn_q.weight", "blk.0.weight", "rope_freqs.weight",
                           "model.layers.0.self_attn.q_proj.weight", "", ".weight", "blk.9999999999.attn_q.weight"})
    CHECK_FALSE(dms::gguf_to_hf_name(name).has_value());
  for (const char *name : {"model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.0.self_attn.q_proj",
                           "blk.0.attn_q.weight", "model.embed_tokens", "lm_head.bias.weight"})
    CHECK_FALSE(dms::hf_to_gguf_name(name).has_value());
}

TEST_CASE("gguf names: layer index in either scheme", "[formats][gguf][names]") {
  CHECK(dms::layer_index("blk.0.attn_q.weight") == 0);
  CHECK(dms::layer_index("blk.29.ffn_up.weight") == 29);
  CHECK(dms::layer_index("model.layers.12.mlp.up_proj.weight") == 12);
  CHECK(dms::layer_index("model.layers.3.self_attn.rotary_emb.inv_freq") == 3);
  CHECK_FALSE(dms::layer_index("token_embd.weight").has_value());
  CHECK_FALSE(dms::layer_index("blk.x.attn_q.weight").has_value());
  CHECK_FALSE(dms::layer_index("blk.01.attn_q.weight").has_value());
  CHECK_FALSE(dms::layer_index("blk.5").has_value());
  static_assert(dms::layer_index("blk.7.ffn_norm.weight") == 7);
}

TEST_CASE("gguf names: which tensors convert_hf_to_gguf permutes, with which head count", "[formats][gguf][names]") {
  CHECK(dms::llama_qk_permute_heads("blk.0.attn_q.weight", 9, 3) == 9);
  CHECK(dms::llama_qk_permute_heads("blk.0.attn_k.weight", 9, 3) == 3);
  CHECK(dms::llama_qk_permute_heads("model.layers.4.self_attn.q_proj.weight", 9, 3) == 9);
  CHECK(dms::llama_qk_permute_heads("model.layers.4.self_attn.k_proj.bias", 9, 3) == 3);
  CHECK_FALSE(dms::llama_qk_permute_heads("blk.0.attn_v.weight", 9, 3).has_value());
  CHECK_FALSE(dms::llama_qk_permute_heads("model.layers.0.self_attn.o_proj.weight", 9, 3).has_value());
  CHECK_FALSE(dms::llama_qk_permute_heads("token_embd.weight", 9, 3).has_value());
}

TEST_CASE("gguf names: Q/K permutation matches the reshape/swapaxes formula", "[formats][gguf][names]") {
  // 2 heads of head_dim 4 (halves of 2), 3 columns; element value = 10 * row + col.
  const std::int64_t rows = 8, cols = 3, n_head = 2;
  std::vector<float> hf(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) hf[static_cast<std::size_t>(r * cols + c)] = static_cast<float>(10 * r + c);
  std::vector<float> gg(hf.size()), back(hf.size());
  dms::permute_qk<float>(hf, gg, rows, cols, n_head);
  // reshape(2, 2, 2, 3).swapaxes(1, 2): head 0 rows (0, 2, 1, 3), head 1 rows (4, 6, 5, 7).
  const std::int64_t expected_rows[] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      CHECK(gg[static_cast<std::size_t>(r * cols + c)] == static_cast<float>(10 * expected_rows[r] + c));
  dms::unpermute_qk<float>(gg, back, rows, cols, n_head);
  CHECK(back == hf);
}

TEST_CASE("gguf names: permute and unpermute are inverse, on any element type and raw rows", "[formats][gguf][names]") {
  // SmolLM2's K projection: 3 KV heads of 64 -> 192 rows of 576; and a wider head count.
  for (const auto &[rows, cols, heads] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{192, 576, 3}, {576, 8, 9}, {6, 1, 3}}) {
    std::vector<std::uint16_t> x(static_cast<std::size_t>(rows * cols));
    std::iota(x.begin(), x.end(), std::uint16_t{0});
    std::vector<std::uint16_t> p(x.size()), u(x.size()), pu(x.size());
    dms::permute_qk<std::uint16_t>(x, p, rows, cols, heads);
    dms::unpermute_qk<std::uint16_t>(p, u, rows, cols, heads);
    CHECK(u == x);
    dms::unpermute_qk<std::uint16_t>(x, pu, rows, cols, heads);
    dms::permute_qk<std::uint16_t>(pu, u, rows, cols, heads);
    CHECK(u == x);
    CHECK((rows <= 2 * heads || p != x)); // it is not the identity (except one row per half)
    // The byte-row form (for quantized rows) agrees with the typed one.
    std::vector<std::uint16_t> pb(x.size());
    dms::permute_qk_rows(std::as_bytes(std::span(x)), std::as_writable_bytes(std::span(pb)), rows,
                         static_cast<std::size_t>(cols) * 2, heads);
    CHECK(pb == p);
  }
}

TEST_CASE("gguf names: permutation argument errors", "[formats][gguf][names]") {
  std::vector<float> a(24), b(24);
  CHECK_THROWS_WITH(dms::permute_qk<float>(a, b, 8, 3, 3),
                    Contains("8 rows cannot be split into 3 heads") && Contains("expected rows to be a multiple of 2 * n_head = 6"));
  CHECK_THROWS_WITH(dms::permute_qk<float>(a, b, 8, 3, 0), Contains("cannot be split into 0 heads"));
  CHECK_THROWS_WITH(dms::permute_qk<float>(a, std::span<float>(b).first(20), 8, 3, 2),
                    Contains("buffers of 96 and 80 bytes (expected 96"));
  CHECK_THROWS_WITH(dms::permute_qk<float>(a, a, 8, 3, 2), Contains("must not overlap"));
}
