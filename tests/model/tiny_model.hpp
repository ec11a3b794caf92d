// tests/model/tiny_model.hpp: tiny random Llama/Qwen2 models for the forward-pass tests, written
// as GGUF (llama.cpp layout: Q/K rows permuted for llama) and as an HF directory (config.json +
// safetensors, HF order), and an independent double-precision reference forward pass.
//
// The reference shares no code with dms/model: plain loops over std::vector<double>, HF weight
// order, rotate-half RoPE, full causal attention recomputed from scratch for every call. It reads
// the weights the model will actually see (after a quantization round trip), so the comparison
// measures the forward pass, not the storage type.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "dms/core/dtype.hpp"
#include "dms/core/half.hpp"
#include "dms/formats/gguf_names.hpp"
#include "dms/formats/gguf_writer.hpp"
#include "dms/formats/hf_checkpoint.hpp"
#include "dms/formats/quant.hpp"
#include "dms/formats/safetensors.hpp"

namespace dms::test {

inline std::string slurp_text(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
inline void write_text(const std::filesystem::path &p, const std::string &text) {
  std::ofstream(p, std::ios::binary) << text;
}

struct tiny_config {
  std::string arch = "llama";
  int n_layers = 2;
  std::int64_t n_embd = 64;
  int n_head = 4;
  int n_head_kv = 2;
  std::int64_t n_ff = 96;
  std::int64_t n_vocab = 100;
  int n_ctx_train = 256;
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
  bool tied = false;
  std::uint32_t seed = 7;
  std::int64_t head_dim() const { return n_embd / n_head; }
  std::int64_t q_width() const { return n_head * head_dim(); }
  std::int64_t kv_width() const { return n_head_kv * head_dim(); }
  bool biases() const { return arch == "qwen2"; }
};

//! All weights in HF order, f32, row-major [out][in].
struct tiny_weights {
  tiny_config c;
  std::vector<float> embd, output, output_norm;
  struct layer {
    std::vector<float> attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
  };
  std::vector<layer> layers;

  //! Every matrix, for a storage round trip.
  template <class F> void for_each_matrix(F &&f) {
    f(embd, c.n_vocab, c.n_embd);
    if (!c.tied) f(output, c.n_vocab, c.n_embd);
    for (auto &L : layers) {
      f(L.wq, c.q_width(), c.n_embd);
      f(L.wk, c.kv_width(), c.n_embd);
      f(L.wv, c.kv_width(), c.n_embd);
      f(L.wo, c.n_embd, c.q_width());
      f(L.w_gate, c.n_ff, c.n_embd);
      f(L.w_up, c.n_ff, c.n_embd);
      f(L.w_down, c.n_embd, c.n_ff);
    }
  }
};

inline tiny_weights make_tiny(const tiny_config &c) {
  std::mt19937 gen(c.seed);
  // Scales chosen so that activations stay O(1) through the layers and attention is neither
  // uniform nor one-hot (scores of a few units).
  auto normal = [&](std::size_t n, double sd, double mean = 0.0) {
    std::normal_distribution<float> d(static_cast<float>(mean), static_cast<float>(sd));
    std::vector<float> v(n);
    for (auto &x : v) x = d(gen);
    return v;
  };
  auto mat = [&](std::int64_t rows, std::int64_t cols) {
    return normal(static_cast<std::size_t>(rows * cols), 1.0 / std::sqrt(static_cast<double>(cols)));
  };
  tiny_weights w;
  w.c = c;
  w.embd = normal(static_cast<std::size_t>(c.n_vocab * c.n_embd), 1.0);
  if (!c.tied) w.output = mat(c.n_vocab, c.n_embd);
  w.output_norm = normal(static_cast<std::size_t>(c.n_embd), 0.1, 1.0);
  for (int l = 0; l < c.n_layers; ++l) {
    tiny_weights::layer L;
    L.attn_norm = normal(static_cast<std::size_t>(c.n_embd), 0.1, 1.0);
    L.wq = normal(static_cast<std::size_t>(c.q_width() * c.n_embd), 2.0 / std::sqrt(double(c.n_embd)));
    L.wk = normal(static_cast<std::size_t>(c.kv_width() * c.n_embd), 2.0 / std::sqrt(double(c.n_embd)));
    L.wv = mat(c.kv_width(), c.n_embd);
    L.wo = mat(c.n_embd, c.q_width());
    if (c.biases()) {
      L.bq = normal(static_cast<std::size_t>(c.q_width()), 0.5);
      L.bk = normal(static_cast<std::size_t>(c.kv_width()), 0.5);
      L.bv = normal(static_cast<std::size_t>(c.kv_width()), 0.5);
    }
    L.ffn_norm = normal(static_cast<std::size_t>(c.n_embd), 0.1, 1.0);
    L.w_gate = mat(c.n_ff, c.n_embd);
    L.w_up = mat(c.n_ff, c.n_embd);
    L.w_down = mat(c.n_embd, c.n_ff);
    w.layers.push_back(std::move(L));
  }
  return w;
}

//! Replaces every matrix by what storing it as `type` keeps (quantize, then dequantize).
inline void round_trip(tiny_weights &w, ggml_type type) {
  w.for_each_matrix([&](std::vector<float> &m, std::int64_t, std::int64_t) {
    std::vector<std::byte> bytes(*storage_bytes(type, m.size()));
    quantize(type, m, bytes);
    dequantize(type, bytes, m);
  });
}

inline std::vector<std::byte> encode(ggml_type type, const std::vector<float> &m) {
  std::vector<std::byte> bytes(*storage_bytes(type, m.size()));
  quantize(type, m, bytes);
  return bytes;
}

//! Writes `w` as a GGUF file with matrices stored as `type` and vectors as F32. Llama Q/K rows
//! (and biases) are permuted as convert_hf_to_gguf.py does; qwen2's are not.
inline void write_gguf(const tiny_weights &w, const std::filesystem::path &path, ggml_type type,
                       const std::function<void(gguf_writer &)> &edit = {}) {
  const tiny_config &c = w.c;
  gguf_writer g;
  const std::string a = c.arch;
  g.set("general.architecture", a);
  g.set(a + ".block_count", static_cast<std::uint32_t>(c.n_layers));
  g.set(a + ".context_length", static_cast<std::uint32_t>(c.n_ctx_train));
  g.set(a + ".embedding_length", static_cast<std::uint32_t>(c.n_embd));
  g.set(a + ".feed_forward_length", static_cast<std::uint32_t>(c.n_ff));
  g.set(a + ".attention.head_count", static_cast<std::uint32_t>(c.n_head));
  g.set(a + ".attention.head_count_kv", static_cast<std::uint32_t>(c.n_head_kv));
  g.set(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_eps));
  g.set(a + ".rope.freq_base", static_cast<float>(c.rope_theta));
  g.set(a + ".rope.dimension_count", static_cast<std::uint32_t>(c.head_dim()));
  const bool permute = c.arch == "llama";
  auto matrix = [&](const std::string &name, const std::vector<float> &m, std::int64_t rows, std::int64_t cols,
                    std::int64_t heads = 0) {
    std::vector<float> rows_out = m;
    if (permute && heads > 0) permute_qk<float>(m, rows_out, rows, cols, heads);
    g.add_tensor(name, type, {rows, cols}, encode(type, rows_out));
  };
  auto vec = [&](const std::string &name, const std::vector<float> &v, std::int64_t heads = 0) {
    std::vector<float> out = v;
    if (permute && heads > 0) permute_qk<float>(v, out, static_cast<std::int64_t>(v.size()), 1, heads);
    g.add_tensor(name, {static_cast<std::int64_t>(v.size())}, out);
  };
  matrix("token_embd.weight", w.embd, c.n_vocab, c.n_embd);
  vec("output_norm.weight", w.output_norm);
  if (!c.tied) matrix("output.weight", w.output, c.n_vocab, c.n_embd);
  for (int l = 0; l < c.n_layers; ++l) {
    const auto &L = w.layers[static_cast<std::size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    vec(p + "attn_norm.weight", L.attn_norm);
    matrix(p + "attn_q.weight", L.wq, c.q_width(), c.n_embd, c.n_head);
    matrix(p + "attn_k.weight", L.wk, c.kv_width(), c.n_embd, c.n_head_kv);
    matrix(p + "attn_v.weight", L.wv, c.kv_width(), c.n_embd);
    matrix(p + "attn_output.weight", L.wo, c.n_embd, c.q_width());
    if (c.biases()) {
      vec(p + "attn_q.bias", L.bq, c.n_head);
      vec(p + "attn_k.bias", L.bk, c.n_head_kv);
      vec(p + "attn_v.bias", L.bv);
    }
    vec(p + "ffn_norm.weight", L.ffn_norm);
    matrix(p + "ffn_gate.weight", L.w_gate, c.n_ff, c.n_embd);
    matrix(p + "ffn_up.weight", L.w_up, c.n_ff, c.n_embd);
    matrix(p + "ffn_down.weight", L.w_down, c.n_embd, c.n_ff);
  }
  if (edit) edit(g);
  g.write(path);
}

//! Writes `w` as an HF directory (config.json + safetensors, HF order) with every tensor as
//! `type` (f32, f16 or bf16). A small `max_shard_bytes` gives a sharded checkpoint.
inline void write_hf(const tiny_weights &w, const std::filesystem::path &dir, dtype type,
                     std::uint64_t max_shard_bytes = 5'000'000'000) {
  const tiny_config &c = w.c;
  hf_checkpoint_writer out({.max_shard_bytes = max_shard_bytes});
  std::vector<std::vector<std::byte>> keep; // bytes must outlive write()
  keep.reserve(16 * static_cast<std::size_t>(c.n_layers) + 8);
  auto add = [&](const std::string &name, const std::vector<float> &v, std::vector<std::int64_t> shape) {
    std::vector<std::byte> bytes(v.size() * size_of(type));
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (type == dtype::f32) std::memcpy(bytes.data() + 4 * i, &v[i], 4);
      else if (type == dtype::f16) { const f16_bits h = to_f16(v[i]); std::memcpy(bytes.data() + 2 * i, &h, 2); }
      else { const bf16_bits h = to_bf16(v[i]); std::memcpy(bytes.data() + 2 * i, &h, 2); }
    }
    keep.push_back(std::move(bytes));
    out.add(name, type, std::move(shape), keep.back());
  };
  add("model.embed_tokens.weight", w.embd, {c.n_vocab, c.n_embd});
  add("model.norm.weight", w.output_norm, {c.n_embd});
  if (!c.tied) add("lm_head.weight", w.output, {c.n_vocab, c.n_embd});
  for (int l = 0; l < c.n_layers; ++l) {
    const auto &L = w.layers[static_cast<std::size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", L.attn_norm, {c.n_embd});
    add(p + "self_attn.q_proj.weight", L.wq, {c.q_width(), c.n_embd});
    add(p + "self_attn.k_proj.weight", L.wk, {c.kv_width(), c.n_embd});
    add(p + "self_attn.v_proj.weight", L.wv, {c.kv_width(), c.n_embd});
    add(p + "self_attn.o_proj.weight", L.wo, {c.n_embd, c.q_width()});
    if (c.biases()) {
      add(p + "self_attn.q_proj.bias", L.bq, {c.q_width()});
      add(p + "self_attn.k_proj.bias", L.bk, {c.kv_width()});
      add(p + "self_attn.v_proj.bias", L.bv, {c.kv_width()});
    }
    add(p + "post_attention_layernorm.weight", L.ffn_norm, {c.n_embd});
    add(p + "mlp.gate_proj.weight", L.w_gate, {c.n_ff, c.n_embd});
    add(p + "mlp.up_proj.weight", L.w_up, {c.n_ff, c.n_embd});
    add(p + "mlp.down_proj.weight", L.w_down, {c.n_embd, c.n_ff});
  }
  const std::string model_type = c.arch;
  const std::string arch_class = c.arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  char eps[64], theta[64];
  std::snprintf(eps, sizeof eps, "%.17g", c.rms_eps);
  std::snprintf(theta, sizeof theta, "%.17g", c.rope_theta);
  out.add_file("config.json",
               std::string("{\n") + "  \"architectures\": [\"" + arch_class + "\"],\n" +
                   "  \"model_type\": \"" + model_type + "\",\n" +
                   "  \"hidden_size\": " + std::to_string(c.n_embd) + ",\n" +
                   "  \"intermediate_size\": " + std::to_string(c.n_ff) + ",\n" +
                   "  \"num_hidden_layers\": " + std::to_string(c.n_layers) + ",\n" +
                   "  \"num_attention_heads\": " + std::to_string(c.n_head) + ",\n" +
                   "  \"num_key_value_heads\": " + std::to_string(c.n_head_kv) + ",\n" +
                   "  \"vocab_size\": " + std::to_string(c.n_vocab) + ",\n" +
                   "  \"max_position_embeddings\": " + std::to_string(c.n_ctx_train) + ",\n" +
                   "  \"rms_norm_eps\": " + eps + ",\n" + "  \"rope_theta\": " + theta + ",\n" +
                   "  \"hidden_act\": \"silu\",\n" +
                   "  \"tie_word_embeddings\": " + (c.tied ? "true" : "false") + "\n}\n");
  out.write(dir);
}

// --- the reference ---------------------------------------------------------------------------------

//! Called at every position p of layer l's input (resid_pre) with the residual row; may edit it.
using reference_edit = std::function<void(int layer, int pos, std::vector<double> &row)>;

//! Logits of every position of `tokens` (one sequence from position 0), in double precision.
inline std::vector<std::vector<double>> reference_logits(const tiny_weights &w, const std::vector<int> &tokens,
                                                         const reference_edit &edit = {}) {
  const tiny_config &c = w.c;
  const std::size_t T = tokens.size(), E = static_cast<std::size_t>(c.n_embd);
  const std::size_t hd = static_cast<std::size_t>(c.head_dim()), half = hd / 2;
  const std::size_t Qw = static_cast<std::size_t>(c.q_width()), KVw = static_cast<std::size_t>(c.kv_width());
  const std::size_t F = static_cast<std::size_t>(c.n_ff), V = static_cast<std::size_t>(c.n_vocab);
  using row = std::vector<double>;
  auto matvec = [](const std::vector<float> &m, const row &x, std::size_t rows, std::size_t cols) {
    row y(rows, 0.0);
    for (std::size_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (std::size_t k = 0; k < cols; ++k) s += static_cast<double>(m[r * cols + k]) * x[k];
      y[r] = s;
    }
    return y;
  };
  auto norm = [&](const row &x, const std::vector<float> &g) {
    double ss = 0.0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c.rms_eps);
    row y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * g[i];
    return y;
  };
  // HF rotate_half: pair (i, i + d/2) rotated by pos * theta^(-2i/d).
  auto rope = [&](row &v, std::size_t heads, std::size_t pos) {
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t i = 0; i < half; ++i) {
        const double th = static_cast<double>(pos) * std::pow(c.rope_theta, -2.0 * double(i) / double(hd));
        const double a = v[h * hd + i], b = v[h * hd + i + half];
        v[h * hd + i] = a * std::cos(th) - b * std::sin(th);
        v[h * hd + i + half] = a * std::sin(th) + b * std::cos(th);
      }
  };
  std::vector<row> x(T);
  for (std::size_t t = 0; t < T; ++t) {
    x[t].resize(E);
    for (std::size_t i = 0; i < E; ++i) x[t][i] = w.embd[static_cast<std::size_t>(tokens[t]) * E + i];
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const auto &L = w.layers[static_cast<std::size_t>(l)];
    if (edit)
      for (std::size_t t = 0; t < T; ++t) edit(l, static_cast<int>(t), x[t]);
    std::vector<row> q(T), k(T), v(T);
    for (std::size_t t = 0; t < T; ++t) {
      const row h = norm(x[t], L.attn_norm);
      q[t] = matvec(L.wq, h, Qw, E);
      k[t] = matvec(L.wk, h, KVw, E);
      v[t] = matvec(L.wv, h, KVw, E);
      if (c.biases()) {
        for (std::size_t i = 0; i < Qw; ++i) q[t][i] += L.bq[i];
        for (std::size_t i = 0; i < KVw; ++i) k[t][i] += L.bk[i], v[t][i] += L.bv[i];
      }
      rope(q[t], static_cast<std::size_t>(c.n_head), t);
      rope(k[t], static_cast<std::size_t>(c.n_head_kv), t);
    }
    const std::size_t group = static_cast<std::size_t>(c.n_head / c.n_head_kv);
    for (std::size_t t = 0; t < T; ++t) {
      row o(Qw, 0.0);
      for (std::size_t h = 0; h < static_cast<std::size_t>(c.n_head); ++h) {
        const std::size_t g = h / group;
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (std::size_t j = 0; j <= t; ++j) {
          double d = 0.0;
          for (std::size_t i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[j][g * hd + i];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (auto &e : s) sum += (e = std::exp(e - mx));
        for (std::size_t j = 0; j <= t; ++j)
          for (std::size_t i = 0; i < hd; ++i) o[h * hd + i] += s[j] / sum * v[j][g * hd + i];
      }
      const row att = matvec(L.wo, o, E, Qw);
      for (std::size_t i = 0; i < E; ++i) x[t][i] += att[i];
      const row h = norm(x[t], L.ffn_norm);
      const row g = matvec(L.w_gate, h, F, E), u = matvec(L.w_up, h, F, E);
      row act(F);
      for (std::size_t i = 0; i < F; ++i) act[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const row m = matvec(L.w_down, act, E, F);
      for (std::size_t i = 0; i < E; ++i) x[t][i] += m[i];
    }
  }
  std::vector<row> logits(T);
  const std::vector<float> &out = c.tied ? w.embd : w.output;
  for (std::size_t t = 0; t < T; ++t) logits[t] = matvec(out, norm(x[t], w.output_norm), V, E);
  return logits;
}

} // namespace dms::test
