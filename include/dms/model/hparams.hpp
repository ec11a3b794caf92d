// dms/model/hparams.hpp: the hyper-parameters of a Llama-family model, read from GGUF metadata or
// from a Hugging Face config.json.
//
// Both sources describe the same numbers under different keys: GGUF says
// `llama.attention.head_count_kv`, config.json says `num_key_value_heads`. llama_hparams is the one
// shape the forward pass reads, so the loader is the only place that knows about either spelling.
// Values a forward pass cannot honour (partial rotary dimensions, YaRN scaling, an architecture
// other than the supported ones) are refused here with a dms::error naming the file and the key,
// rather than producing wrong logits later.
//
// @code
//   dms::gguf_file f("SmolLM2-135M-Instruct.Q4_1.gguf");
//   dms::llama_hparams hp = dms::llama_hparams::from_gguf(f);   // 30 layers, n_embd 576, ...
// @endcode
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <string_view>
#include <vector>

#include "dms/backend/cpu/matmul.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/formats/hf_checkpoint.hpp"

DMS_NAMESPACE_BEGIN

//! How a model is run: sizes of the KV cache and of the thread pool.
struct model_options {
  std::int32_t n_ctx = 0;     //!< positions per sequence; 0: min(the model's context, 4096)
  std::int32_t n_seq_max = 4; //!< sequences the KV cache holds at once (ids 0 .. n_seq_max - 1)
  std::int32_t n_threads = 0; //!< participants of the model's thread pool; 0: default_thread_count()
  //! fast: activations meet quantized weights as 8-bit blocks (as llama.cpp; batches of 64+ tokens
  //! run in f32); exact: always f32 on dequantized weights, so activations do not depend on how
  //! tokens are batched and match an f32 reference (slower decode). See backend/cpu/matmul.hpp.
  cpu::matmul_precision precision = cpu::matmul_precision::fast;
};

//! Which pairs of a head's dimensions RoPE rotates together.
enum class rope_style : std::uint8_t {
  adjacent,   //!< (x[2i], x[2i+1]): llama.cpp's "norm" mode, for GGUF llama (Q/K rows permuted)
  half_split, //!< (x[i], x[i + d/2]): "NEOX" / HF rotate_half, for qwen2 and HF checkpoints
};

//! The architectures the forward pass implements, as GGUF and config.json name them.
inline constexpr std::string_view supported_architectures[] = {"llama", "qwen2"};

inline std::string supported_architecture_list() {
  std::string s;
  for (std::string_view a : supported_architectures) s += (s.empty() ? "" : ", ") + std::string(a);
  return s;
}

//! Hyper-parameters of a Llama-family transformer. Widths in elements.
struct llama_hparams {
  std::string arch;            //!< "llama" or "qwen2"
  std::int32_t n_layers = 0;   //!< transformer blocks
  std::int32_t n_head = 0;     //!< query heads
  std::int32_t n_head_kv = 0;  //!< key/value heads (GQA: n_head is a multiple of it)
  std::int32_t n_ctx_train = 0; //!< context the model was trained for (0 when unknown)
  std::int64_t n_embd = 0;     //!< residual width
  std::int64_t n_ff = 0;       //!< MLP width
  std::int64_t n_vocab = 0;    //!< rows of the embedding (and of the output matrix)
  std::int64_t head_dim = 0;   //!< width of one head (n_embd / n_head unless the model says)
  float rope_theta = 10000.0f; //!< RoPE base
  float rope_freq_scale = 1.0f; //!< linear position scaling: positions are multiplied by this
  std::vector<float> rope_freq_factors; //!< llama3 scaling: theta_i is divided by factor i (empty: none)
  rope_style rope = rope_style::adjacent;
  float rms_eps = 1e-5f;       //!< epsilon inside the RMS norm
  bool attn_bias = false;      //!< q/k/v projections have biases (qwen2)
  bool tied_output = false;    //!< the output matrix is the token embedding

  std::int64_t q_width() const noexcept { return n_head * head_dim; }
  std::int64_t kv_width() const noexcept { return n_head_kv * head_dim; }

  //! Reads `<arch>.*` metadata of a GGUF file. Tensor-derived facts (n_vocab, tied_output,
  //! attn_bias, rope_freq_factors) are filled in by the weight loader.
  static llama_hparams from_gguf(const gguf_file &f) {
    llama_hparams hp;
    const error_context file{f.path()};
    require(f.contains("general.architecture"), errc::invalid_format,
            [] { return std::string("missing metadata key 'general.architecture'"); }, file);
    hp.arch = std::string(f.architecture());
    check_arch(hp.arch, f.path(), "general.architecture");
    const std::string p = hp.arch + ".";
    auto where = [&](const std::string &key) {
      const gguf_kv *kv = f.find_kv(key);
      return error_context{f.path(), kv ? std::optional<std::uint64_t>(kv->offset) : std::nullopt, {}};
    };
    auto positive = [&](const std::string &key) -> std::int64_t {
      const auto v = f.get_integer<std::int64_t>(key);
      require(v > 0, errc::invalid_format,
              [&] { return "metadata key '" + key + "' = " + std::to_string(v) + " (expected > 0)"; }, where(key));
      return v;
    };
    hp.n_layers = static_cast<std::int32_t>(positive(p + "block_count"));
    hp.n_embd = positive(p + "embedding_length");
    hp.n_ff = positive(p + "feed_forward_length");
    hp.n_head = static_cast<std::int32_t>(positive(p + "attention.head_count"));
    hp.n_head_kv = f.contains(p + "attention.head_count_kv")
                       ? static_cast<std::int32_t>(positive(p + "attention.head_count_kv"))
                       : hp.n_head;
    hp.n_ctx_train = f.contains(p + "context_length")
                         ? static_cast<std::int32_t>(positive(p + "context_length")) : 0;
    if (f.contains(p + "attention.key_length")) {
      hp.head_dim = positive(p + "attention.key_length");
      if (f.contains(p + "attention.value_length"))
        require(positive(p + "attention.value_length") == hp.head_dim, errc::unsupported,
                [&] { return "attention.value_length differs from attention.key_length (dms needs equal head widths)"; },
                where(p + "attention.value_length"));
    } else {
      require(hp.n_embd % hp.n_head == 0, errc::invalid_format, [&] {
        return "embedding_length " + std::to_string(hp.n_embd) + " is not a multiple of head_count " +
               std::to_string(hp.n_head) + " and attention.key_length is absent";
      }, where(p + "attention.head_count"));
      hp.head_dim = hp.n_embd / hp.n_head;
    }
    if (const gguf_value *v = f.find(p + "attention.layer_norm_rms_epsilon"))
      hp.rms_eps = static_cast<float>(v->to_double(p + "attention.layer_norm_rms_epsilon", where(p + "attention.layer_norm_rms_epsilon")));
    if (const gguf_value *v = f.find(p + "rope.freq_base"))
      hp.rope_theta = static_cast<float>(v->to_double(p + "rope.freq_base", where(p + "rope.freq_base")));
    if (f.contains(p + "rope.dimension_count")) {
      const auto n_rot = positive(p + "rope.dimension_count");
      require(n_rot == hp.head_dim, errc::unsupported, [&] {
        return "rope.dimension_count " + std::to_string(n_rot) + " differs from the head width " +
               std::to_string(hp.head_dim) + " (partial rotary embeddings are not supported)";
      }, where(p + "rope.dimension_count"));
    }
    // Rope scaling: llama.cpp reads rope.scaling.type/factor, and the older rope.scale_linear.
    std::string scaling = "none";
    if (const gguf_value *v = f.find(p + "rope.scaling.type"))
      scaling = std::string(v->string(p + "rope.scaling.type", where(p + "rope.scaling.type")));
    double factor = 0.0;
    if (const gguf_value *v = f.find(p + "rope.scaling.factor"))
      factor = v->to_double(p + "rope.scaling.factor", where(p + "rope.scaling.factor"));
    else if (const gguf_value *v2 = f.find(p + "rope.scale_linear")) {
      factor = v2->to_double(p + "rope.scale_linear", where(p + "rope.scale_linear"));
      if (!f.contains(p + "rope.scaling.type")) scaling = "linear";
    }
    if (scaling == "linear") {
      if (factor > 0.0) hp.rope_freq_scale = static_cast<float>(1.0 / factor);
    } else {
      require(scaling == "none", errc::unsupported, [&] {
        return "rope.scaling.type '" + scaling + "' (dms supports none and linear; llama3 scaling comes "
               "as the rope_freqs tensor)";
      }, where(p + "rope.scaling.type"));
    }
    hp.rope = hp.arch == "qwen2" ? rope_style::half_split : rope_style::adjacent;
    hp.check(f.path());
    return hp;
  }

  //! Reads a config.json (parsed by dms/formats/hf_checkpoint.hpp). HF checkpoints keep Q/K rows
  //! in HF order, so RoPE rotates half-split pairs whatever the architecture.
  static llama_hparams from_hf(const hf_model_config &c, const std::string &file) {
    llama_hparams hp;
    hp.arch = c.model_type;
    if (hp.arch.empty() && !c.architectures.empty()) {
      if (c.architectures[0] == "LlamaForCausalLM") hp.arch = "llama";
      else if (c.architectures[0] == "Qwen2ForCausalLM") hp.arch = "qwen2";
      else hp.arch = c.architectures[0];
    }
    check_arch(hp.arch, file, "model_type");
    require(c.hidden_act == "silu", errc::unsupported,
            [&] { return "hidden_act '" + c.hidden_act + "' (dms implements silu)"; }, {file});
    auto narrow = [&](std::int64_t v, const char *key) {
      require(v > 0 && v <= INT32_MAX, errc::invalid_format,
              [&] { return std::string(key) + " = " + std::to_string(v) + " out of range"; }, {file});
      return static_cast<std::int32_t>(v);
    };
    hp.n_layers = narrow(c.num_hidden_layers, "num_hidden_layers");
    hp.n_head = narrow(c.num_attention_heads, "num_attention_heads");
    hp.n_head_kv = narrow(c.num_key_value_heads, "num_key_value_heads");
    hp.n_ctx_train = c.max_position_embeddings ? narrow(*c.max_position_embeddings, "max_position_embeddings") : 0;
    hp.n_embd = c.hidden_size;
    hp.n_ff = c.intermediate_size;
    hp.n_vocab = c.vocab_size;
    hp.head_dim = c.head_dim;
    hp.rope_theta = static_cast<float>(c.rope_theta);
    hp.rms_eps = static_cast<float>(c.rms_norm_eps);
    hp.tied_output = c.tie_word_embeddings;
    hp.attn_bias = hp.arch == "qwen2";
    hp.rope = rope_style::half_split;
    if (c.rope_scaling) {
      const rope_scaling_config &rs = *c.rope_scaling;
      if (rs.rope_type == "linear") {
        require(rs.factor && *rs.factor > 0, errc::invalid_format,
                [] { return std::string("rope_scaling: linear scaling needs a positive 'factor'"); }, {file});
        hp.rope_freq_scale = static_cast<float>(1.0 / *rs.factor);
      } else if (rs.rope_type == "llama3") {
        hp.rope_freq_factors = llama3_freq_factors(rs, hp, file);
      } else {
        require(rs.rope_type == "default", errc::unsupported, [&] {
          return "rope_scaling type '" + rs.rope_type + "' (dms supports default, linear and llama3)";
        }, {file});
      }
    }
    hp.check(file);
    return hp;
  }

  //! Consistency every source must satisfy; errors name `file`.
  void check(const std::string &file) const {
    require(n_head % n_head_kv == 0, errc::invalid_format, [&] {
      return "head count " + std::to_string(n_head) + " is not a multiple of the KV head count " +
             std::to_string(n_head_kv);
    }, {file});
    require(head_dim % 2 == 0 && head_dim <= max_head_dim, errc::unsupported, [&] {
      return "head width " + std::to_string(head_dim) + " (dms needs an even width <= " +
             std::to_string(max_head_dim) + ")";
    }, {file});
    require(rms_eps > 0 && std::isfinite(rms_eps) && rope_theta > 0 && std::isfinite(rope_theta),
            errc::invalid_format, [&] {
              return "rms epsilon " + std::to_string(rms_eps) + " / rope base " + std::to_string(rope_theta) +
                     " (expected positive finite numbers)";
            }, {file});
  }

  //! Widest head the attention kernel accepts: it keeps one head's accumulator on the stack.
  static constexpr std::int64_t max_head_dim = 512;

private:
  static void check_arch(const std::string &arch, const std::string &file, const char *key) {
    for (std::string_view a : supported_architectures)
      if (a == arch) return;
    throw error(errc::unsupported,
                "architecture '" + arch + "' (from " + key + ") is not supported; supported: " +
                    supported_architecture_list(),
                {file});
  }

  //! Per-frequency divisors of Llama 3.1's rope scaling (transformers' _compute_llama3_parameters,
  //! which llama.cpp's converter stores as the rope_freqs tensor): long wavelengths are slowed
  //! down by `factor`, short ones kept, and the band between interpolated.
  static std::vector<float> llama3_freq_factors(const rope_scaling_config &rs, const llama_hparams &hp,
                                                const std::string &file) {
    require(rs.factor && rs.low_freq_factor && rs.high_freq_factor && rs.original_max_position_embeddings,
            errc::invalid_format, [] {
              return std::string("rope_scaling: llama3 needs factor, low_freq_factor, high_freq_factor and "
                                 "original_max_position_embeddings");
            }, {file});
    const double factor = *rs.factor, lo = *rs.low_freq_factor, hi = *rs.high_freq_factor;
    const double old_ctx = static_cast<double>(*rs.original_max_position_embeddings);
    const double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
    std::vector<float> out(static_cast<std::size_t>(hp.head_dim / 2));
    for (std::size_t i = 0; i < out.size(); ++i) {
      const double freq = std::pow(static_cast<double>(hp.rope_theta), -2.0 * static_cast<double>(i) /
                                                                           static_cast<double>(hp.head_dim));
      const double wavelen = 2.0 * std::numbers::pi / freq;
      double scaled = freq;
      if (wavelen > lo_wavelen) scaled = freq / factor;
      else if (wavelen >= hi_wavelen) {
        const double smooth = (old_ctx / wavelen - lo) / (hi - lo);
        scaled = (1.0 - smooth) * freq / factor + smooth * freq;
      }
      out[i] = static_cast<float>(freq / scaled);
    }
    return out;
  }
};

DMS_NAMESPACE_END
