// tools/dms/generate.hpp: `dms generate --model M --prompt TEXT`: text from a model, as it comes.
//
// The quickest check that a model, its tokenizer and the sampler work end to end, and the
// baseline a steered run is compared with. Text streams to stdout as tokens are sampled; a summary
// (tokens, speed, why it stopped) goes to stderr so that stdout holds only the model's text.
// `--json` prints one JSON object instead, for scripts and tests. `--chat` wraps the prompt in
// the model's chat template (optional system message, then the user's, then the assistant's turn).
// Sampling defaults are llama.cpp's (dms/model/sampler.hpp); `--temp 0` is greedy.
#pragma once

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <dms/model/generate.hpp>
#include <dms/model/llama.hpp>
#include <dms/tokenizer/chat_template.hpp>
#include <dms/tokenizer/tokenizer.hpp>

#include "args.hpp"

namespace dms::cli {

inline command_spec generate_command() {
  const sampling_params d;
  const auto num = [](double v) {
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
    return s;
  };
  return command_spec("dms generate", "Generate text from a GGUF model (weights and tokenizer). Streams the text to "
                                      "stdout and a summary to stderr.")
      .option({"model", 'm', "PATH", "the model (required)", ""})
      .option({"prompt", 'p', "TEXT", "the prompt (required)", ""})
      .option({"chat", 0, "", "apply the model's chat template (user message, then the assistant's turn)", ""})
      .option({"system", 0, "TEXT", "system message for --chat", ""})
      .option({"max-tokens", 'n', "N", "most tokens to generate", "128"})
      .option({"temp", 0, "T", "temperature; 0 = greedy", num(d.temperature)})
      .option({"top-k", 0, "K", "keep the K most likely tokens; 0 = off", std::to_string(d.top_k)})
      .option({"top-p", 0, "P", "nucleus: smallest set with probability >= P; 1 = off", num(d.top_p)})
      .option({"min-p", 0, "P", "drop tokens below P times the most likely one; 0 = off", num(d.min_p)})
      .option({"repeat-penalty", 0, "R", "penalty on the last 64 tokens; 1 = off", num(d.repeat_penalty)})
      .option({"seed", 's', "S", "random seed (with the same seed, the same text)", std::to_string(d.seed)})
      .option({"threads", 't', "N", "CPU threads; 0 = all cores", "0"})
      .option({"ctx", 'c', "N", "context size in tokens; 0 = min(the model's, 4096)", "0"})
      .option({"json", 0, "", "print one JSON object at the end instead of streaming", ""})
      .epilog("Example:\n  dms generate -m SmolLM2-135M-Instruct.Q4_1.gguf --chat -p \"What is 2+2?\" --temp 0");
}

namespace detail {
//! `name`'s integer value, checked to fit an int32 within [lo, hi].
inline std::int32_t int_option(const parsed_args &a, std::string_view name, std::int64_t lo,
                               std::int64_t hi = std::numeric_limits<std::int32_t>::max()) {
  const std::int64_t v = a.get_int(name);
  require(v >= lo && v <= hi, errc::invalid_argument, [&] {
    return "--" + std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
           std::to_string(v);
  });
  return static_cast<std::int32_t>(v);
}
} // namespace detail

inline int run_generate(const parsed_args &a) {
  generation_request req;
  req.max_tokens = detail::int_option(a, "max-tokens", 1);
  auto &s = req.sampling;
  s.temperature = static_cast<float>(a.get_double("temp"));
  s.top_k = detail::int_option(a, "top-k", 0);
  s.top_p = static_cast<float>(a.get_double("top-p"));
  s.min_p = static_cast<float>(a.get_double("min-p"));
  s.repeat_penalty = static_cast<float>(a.get_double("repeat-penalty"));
  const std::int64_t seed = a.get_int("seed");
  require(seed >= 0, errc::invalid_argument, [&] { return "--seed must be >= 0, got " + std::to_string(seed); });
  s.seed = static_cast<std::uint64_t>(seed);
  s.validate(); // before the model loads: a typo should not cost a load
  require(!a.has("system") || a.has("chat"), errc::invalid_argument,
          [] { return std::string("--system needs --chat"); });

  model_options opts;
  opts.n_ctx = detail::int_option(a, "ctx", 0);
  opts.n_threads = detail::int_option(a, "threads", 0);
  opts.n_seq_max = 1;
  const std::string &model_path = a.get("model");
  const std::string &prompt = a.get("prompt");
  auto model = llama_model::load(model_path, opts);
  require(model.gguf() != nullptr, errc::unsupported, [] {
    return std::string("dms generate needs a GGUF model (its tokenizer is read from the GGUF metadata)");
  }, {model_path});
  const tokenizer tok = tokenizer::from_gguf(*model.gguf());

  if (a.has("chat")) {
    std::vector<chat_message> messages;
    if (a.has("system")) messages.push_back({"system", a.get("system")});
    messages.push_back({"user", prompt});
    const std::string text = apply_chat_template(tok.chat_template(), messages, true);
    // The template writes its special tokens as text; BOS only when the model wants one and the
    // template did not already write it.
    const bool has_bos = tok.bos() >= 0 && text.starts_with(tok.piece(tok.bos(), true));
    req.prompt = tok.encode(text, !has_bos, true);
  } else {
    req.prompt = tok.encode(prompt, true, false);
  }

  const bool json = a.has("json");
  no_hooks none;
  const auto results = generate(model, tok, std::span(&req, 1), none,
                                [json](std::size_t, token_id, std::string_view piece) {
                                  if (!json && !piece.empty()) {
                                    std::fwrite(piece.data(), 1, piece.size(), stdout);
                                    std::fflush(stdout);
                                  }
                                  return true;
                                });
  const generation_result &r = results[0];
  if (json) {
    nlohmann::ordered_json j;
    j["model"] = model_path;
    j["prompt_tokens"] = r.n_prompt;
    j["prompt_ids"] = req.prompt;
    j["generated_tokens"] = r.tokens.size();
    j["generated_ids"] = r.tokens;
    j["text"] = r.text;
    j["stop_reason"] = std::string(name_of(r.stop));
    j["prefill_seconds"] = r.prefill_seconds;
    j["decode_seconds"] = r.decode_seconds;
    j["prefill_tokens_per_second"] = r.prefill_tokens_per_second();
    j["decode_tokens_per_second"] = r.decode_tokens_per_second();
    j["threads"] = model.n_threads();
    const std::string out = j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    std::printf("%s\n", out.c_str());
  } else {
    std::printf("\n");
    std::fprintf(stderr, "dms generate: prompt %d tokens (%.1f tokens/s), generated %zu tokens (%.1f tokens/s), stop: %s\n",
                 r.n_prompt, r.prefill_tokens_per_second(), r.tokens.size(), r.decode_tokens_per_second(),
                 std::string(name_of(r.stop)).c_str());
  }
  return 0;
}

} // namespace dms::cli
