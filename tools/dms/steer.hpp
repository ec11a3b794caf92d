// tools/dms/steer.hpp: `dms steer calibrate|generate|score|eval|export-cvec`, Dynamic Mode
// Steering from the command line.
//
//   calibrate    model + data/calibration -> one bundle file (labels, probe, layer sweep,
//                patching, vector, CAST condition): dms/steer/calibrate.hpp
//   generate     text under a policy (none, constant, dms, conditional); --json adds the
//                probe's memorization score of every token
//   score        per-prompt and per-token memorization scores of prompts, one per line
//   eval         the held-out evaluation (regurgitation, KL on neutral prompts, perplexity,
//                arithmetic, alpha sweep) and the HTML report
//   export-cvec  the steering vector as a llama.cpp control vector (GGUF)
// The bundle names its model; --model overrides where it is looked for (see find_model).
// Progress bars go to stderr, results to stdout.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <dms/core/progress.hpp>
#include <dms/formats/mapped_file.hpp>
#include <dms/model/generate.hpp>
#include <dms/model/llama.hpp>
#include <dms/steer/bundle.hpp>
#include <dms/steer/calibrate.hpp>
#include <dms/steer/composite_policy.hpp>
#include <dms/steer/constant_policy.hpp>
#include <dms/steer/evaluation.hpp>
#include <dms/steer/policy_hooks.hpp>
#include <dms/steer/probe_data.hpp>
#include <dms/steer/report.hpp>
#include <dms/steer/vector_io.hpp>
#include <dms/tokenizer/chat_template.hpp>
#include <dms/tokenizer/tokenizer.hpp>

#include "args.hpp"
#include "generate.hpp"

namespace dms::cli {

namespace steer_detail {

namespace fs = std::filesystem;

inline fs::path default_data_dir() {
#ifdef DMS_SOURCE_DIR
  return fs::path(DMS_SOURCE_DIR) / "data" / "calibration";
#else
  return "data/calibration";
#endif
}

//! The model a bundle was calibrated on: --model if given; else the path recorded at calibration,
//! the bundle's directory, $DMS_CACHE and ~/.cache/dms, in that order, by the recorded file name.
inline fs::path find_model(const steering_bundle &b, const fs::path &bundle_path, const parsed_args &a) {
  if (a.has("model")) return a.get("model");
  std::vector<fs::path> tries;
  if (b.extras.contains("model_path") && b.extras["model_path"].is_string())
    tries.emplace_back(b.extras["model_path"].get<std::string>());
  tries.push_back(bundle_path.parent_path() / b.model.file_name);
  if (const char *c = std::getenv("DMS_CACHE")) tries.push_back(fs::path(c) / b.model.file_name);
  if (const char *h = std::getenv("HOME")) tries.push_back(fs::path(h) / ".cache" / "dms" / b.model.file_name);
  std::string looked;
  for (const auto &p : tries) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
    looked += "\n  " + p.string();
  }
  throw error(errc::io, "the bundle's model '" + b.model.file_name + "' was not found; looked in:" + looked +
                            "\n(pass --model PATH)",
              {bundle_path.string()});
}

inline model_options steer_model_options(const parsed_args &a) {
  model_options o;
  o.n_ctx = detail::int_option(a, "ctx", 64);
  o.n_threads = detail::int_option(a, "threads", 0);
  o.n_seq_max = detail::int_option(a, "parallel", 1, 64);
  return o;
}

//! A loaded bundle with its model and tokenizer, checked against each other.
struct steering_session {
  steering_bundle bundle;
  fs::path model_path;
  llama_model model;
  tokenizer tok;

  static steering_session open(const parsed_args &a) {
    const fs::path bundle_path = a.get("bundle");
    steering_bundle b = load_bundle(bundle_path);
    fs::path mp = find_model(b, bundle_path, a);
    auto m = llama_model::load(mp, steer_model_options(a));
    require(m.gguf() != nullptr, errc::unsupported,
            [] { return std::string("dms steer needs a GGUF model (its tokenizer is in the GGUF metadata)"); }, {mp.string()});
    check_bundle_matches(b, static_cast<std::int32_t>(m.n_layers()), m.n_embd(), bundle_path.string());
    tokenizer t = tokenizer::from_gguf(*m.gguf());
    return {std::move(b), std::move(mp), std::move(m), std::move(t)};
  }
};

inline progress progress_bar(const parsed_args &a) {
  return a.has("quiet") ? progress() : progress(terminal_progress_bar{});
}

//! Runs `fn(hooks, scores_of)` with the hooks of policy `kind` at strength `alpha`, plus a probe
//! reader that records every token's memorization score: scores_of(seq) is the trace of
//! sequence `seq` (score at each position; NaN where no token was scored).
template <class Fn>
void with_policy(const steering_bundle &b, const llama_model &m, std::string_view kind, float alpha, Fn &&fn) {
  const auto n_seq = static_cast<std::size_t>(m.n_seq_max());
  const auto n_ctx = static_cast<std::size_t>(m.n_ctx());
  const std::size_t max_rows = n_seq * n_ctx;
  dms_policy<> reader(b.probe, b.probe_at(), {b.probe_at().layer, b.probe_at().where,
                                               std::vector<float>(static_cast<std::size_t>(m.n_embd()), 0.0f)},
                      0.0f);
  std::vector<std::vector<float>> traces(n_seq, std::vector<float>(n_ctx, std::numeric_limits<float>::quiet_NaN()));
  auto scores_of = [&](std::size_t seq) -> const std::vector<float> & { return traces[seq]; };
  auto run = [&](const auto &policy) {
    using Policy = std::decay_t<decltype(policy)>;
    policy.validate(static_cast<std::int32_t>(m.n_layers()), m.n_embd());
    std::vector<typename Policy::state_type> states(n_seq);
    for (std::size_t s = 0; s < n_seq; ++s) std::get<0>(states[s]).trace = traces[s];
    std::vector<float> scratch(policy_hooks<Policy>::scratch_floats(policy, max_rows));
    policy_hooks<Policy> hooks(policy, std::span(states), std::span(scratch));
    fn(hooks, scores_of);
  };
  if (kind == "none") {
    run(composite_policy(reader));
  } else if (kind == "constant") {
    run(composite_policy(reader, constant_policy(b.steering_at(), b.steering.vector.values, alpha)));
  } else if (kind == "dms") {
    run(composite_policy(reader, dms_policy<>(b.probe, b.probe_at(), b.steering.vector, alpha)));
  } else if (kind == "conditional") {
    require(b.condition.has_value(), errc::invalid_argument,
            [] { return std::string("--policy conditional: the bundle has no CAST condition"); });
    const auto &c = *b.condition;
    run(composite_policy(reader, conditional_policy(c.at, c.vector, c.threshold, c.compare, b.steering.vector,
                                                    alpha, c.mode)));
  } else {
    throw error(errc::invalid_argument,
                "--policy must be none, constant, dms or conditional, got '" + std::string(kind) + "'");
  }
}

inline float alpha_of(const parsed_args &a, const steering_bundle &b) {
  if (!a.has("alpha") || a.get("alpha").empty()) return b.steering.alpha;
  const double v = a.get_double("alpha");
  require(std::isfinite(v), errc::invalid_argument, [] { return std::string("--alpha must be finite"); });
  return static_cast<float>(v);
}

inline std::string json_text(const nlohmann::ordered_json &j) {
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

//! The patching row of `layer` (its mean effect; NaN when the layer was not patched).
inline double patching_effect(const std::vector<bundle_patching_row> &rows, std::int32_t layer) {
  for (const auto &r : rows)
    if (r.layer == layer) return r.effect;
  return std::numeric_limits<double>::quiet_NaN();
}

inline nlohmann::ordered_json score_json(float x) {
  return std::isnan(x) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(std::round(x * 1e4) / 1e4);
}

} // namespace steer_detail

// --- calibrate ------------------------------------------------------------------------------------

inline command_spec steer_calibrate_command() {
  return command_spec("dms steer calibrate",
                      "Calibrate Dynamic Mode Steering on a model: label the calibration passages by the model's "
                      "own behaviour (greedy extraction, output diversity), sweep a probe over every layer, find "
                      "the causal layer by activation patching, build the generalization vector and a CAST "
                      "condition; write them to one bundle file.")
      .option({"model", 'm', "PATH", "the model, GGUF (required)", ""})
      .option({"data", 'd', "DIR", "calibration data (memorized.jsonl, generalization.jsonl)",
               steer_detail::default_data_dir().string()})
      .option({"out", 'o', "PATH", "the bundle to write (required)", ""})
      .option({"labels", 0, "SOURCE", "which labelling trains the probe: extraction or diversity", "extraction"})
      .option({"no-diversity", 0, "", "skip diversity labelling (faster; no agreement figure)", ""})
      .option({"method", 0, "M", "steering vector: mean_difference, pca or probe_direction", "mean_difference"})
      .option({"probe-site", 0, "SITE", "where the probe sweep reads each layer", "resid_post"})
      .option({"patch-site", 0, "SITE", "where patching measures each layer's effect: attn_out, mlp_out", "mlp_out"})
      .option({"alpha", 'a', "A", "the bundle's default DMS strength", "1.4"})
      .option({"pairs", 0, "N", "patching pairs (recited passages)", "16"})
      .option({"seed", 's', "S", "seed of the splits and samples", "0"})
      .option({"threads", 't', "N", "CPU threads; 0 = all cores", "0"})
      .option({"parallel", 0, "N", "sequences per forward", "8"})
      .option({"ctx", 'c', "N", "context size per sequence", "256"})
      .option({"probe-data", 0, "PATH", "also write the probe's training rows as .npz (x: activations at the probe "
               "point, y: labels, heldout: the sweep's split), to fit other probes on the same data", ""})
      .option({"quiet", 'q', "", "no progress bars", ""})
      .epilog("Example:\n  dms steer calibrate -m SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2.dms");
}

inline int run_steer_calibrate(const parsed_args &a) {
  namespace fs = std::filesystem;
  calibration_options o;
  const std::string labels = a.get("labels");
  require(labels == "extraction" || labels == "diversity", errc::invalid_argument,
          [&] { return "--labels must be extraction or diversity, got '" + labels + "'"; });
  o.labels = labels == "extraction" ? label_source::extraction : label_source::diversity;
  o.with_diversity = !a.has("no-diversity");
  const auto method = parse_vector_method(a.get("method"));
  require(method.has_value(), errc::invalid_argument,
          [&] { return "--method must be mean_difference, pca or probe_direction, got '" + a.get("method") + "'"; });
  o.method = *method;
  const auto ps = parse_site(a.get("probe-site")), pt = parse_site(a.get("patch-site"));
  require(ps.has_value() && pt.has_value(), errc::invalid_argument, [] {
    return std::string("--probe-site / --patch-site: expected resid_pre, attn_out, resid_mid, mlp_out or resid_post");
  });
  o.probe_site = *ps;
  o.patch_site = *pt;
  o.alpha = static_cast<float>(a.get_double("alpha"));
  require(std::isfinite(o.alpha), errc::invalid_argument, [] { return std::string("--alpha must be finite"); });
  o.max_patching_pairs = detail::int_option(a, "pairs", 1, 1024);
  const std::int64_t seed = a.get_int("seed");
  require(seed >= 0, errc::invalid_argument, [] { return std::string("--seed must be >= 0"); });
  o.seed = static_cast<std::uint64_t>(seed);
  o.report = steer_detail::progress_bar(a);
  const fs::path out = a.get("out");

  const auto items = load_calibration_items(a.get("data")); // before the model: a bad path fails fast
  const fs::path model_path = a.get("model");
  auto model = llama_model::load(model_path, steer_detail::steer_model_options(a));
  require(model.gguf() != nullptr, errc::unsupported,
          [] { return std::string("dms steer needs a GGUF model (its tokenizer is in the GGUF metadata)"); },
          {model_path.string()});
  const tokenizer tok = tokenizer::from_gguf(*model.gguf());
  auto r = calibrate(model, tok, items, o);
  auto &b = r.bundle;
  b.model.file_name = model_path.filename().string();
  b.model.file_size = fs::file_size(model_path);
  b.model.arch = model.hparams().arch;
  b.extras["model_path"] = fs::absolute(model_path).string();
  b.calibration.settings["data"] = a.get("data");
  save_bundle(out, b);
  if (const auto rows = a.find("probe-data")) write_probe_data(*rows, r);

  std::size_t by_extraction = 0;
  for (const auto &l : r.extraction) by_extraction += l.memorized;
  std::printf("bundle: %s\n", out.string().c_str());
  std::printf("labels: %zu of %zu candidate passages recited (extraction)", by_extraction, r.extraction.size());
  if (!r.diversity.empty()) {
    const auto agree = label_agreement(r.extraction, r.diversity);
    std::printf("; diversity agrees on %.1f%% (kappa %.2f)", 100 * agree.rate(), agree.kappa());
  }
  std::printf("\nprobe: %s, held-out AUC %.3f\n", to_string(b.probe_at()).c_str(),
              b.probe_sweep[static_cast<std::size_t>(b.probe_at().layer)].heldout.roc_auc);
  std::printf("steering: %s (patching effect %.3f over %d pairs), |v| = %.3f, alpha %.2f\n",
              to_string(b.steering_at()).c_str(),
              steer_detail::patching_effect(b.patching, b.steering_at().layer), r.n_patching_pairs, b.steering.norm(),
              b.steering.alpha);
  std::printf("wall time: %.1f s\n", b.calibration.wall_seconds);
  return 0;
}

// --- generate -------------------------------------------------------------------------------------

inline command_spec steer_generate_command() {
  return command_spec("dms steer generate",
                      "Generate text under a steering policy from a bundle. --json adds the memorization score "
                      "(the probe's p) of every prompt and generated token.")
      .option({"bundle", 'b', "PATH", "the bundle from `dms steer calibrate` (required)", ""})
      .option({"prompt", 'p', "TEXT", "the prompt (required)", ""})
      .option({"policy", 0, "P", "none, constant, dms or conditional", "dms"})
      .option({"alpha", 'a', "A", "steering strength; default: the bundle's", ""})
      .option({"chat", 0, "", "apply the model's chat template", ""})
      .option({"max-tokens", 'n', "N", "most tokens to generate", "64"})
      .option({"temp", 0, "T", "temperature; 0 = greedy", "0"})
      .option({"seed", 's', "S", "random seed", "0"})
      .option({"model", 'm', "PATH", "the model, if not where the bundle says", ""})
      .option({"threads", 't', "N", "CPU threads; 0 = all cores", "0"})
      .option({"parallel", 0, "N", "sequences per forward", "1"})
      .option({"ctx", 'c', "N", "context size", "1024"})
      .option({"json", 0, "", "print one JSON object with per-token scores", ""})
      .epilog("Example:\n  dms steer generate -b smollm2.dms -p \"Four score and seven years ago\" --policy dms --json");
}

inline int run_steer_generate(const parsed_args &a) {
  auto s = steer_detail::steering_session::open(a);
  const float alpha = steer_detail::alpha_of(a, s.bundle);
  generation_request req;
  req.max_tokens = detail::int_option(a, "max-tokens", 1);
  req.sampling.temperature = static_cast<float>(a.get_double("temp"));
  req.sampling.seed = static_cast<std::uint64_t>(std::max<std::int64_t>(0, a.get_int("seed")));
  req.sampling.validate();
  if (a.has("chat")) {
    const std::vector<chat_message> chat{{"user", a.get("prompt")}};
    const std::string text = apply_chat_template(s.tok.chat_template(), chat, true);
    const bool has_bos = s.tok.bos() >= 0 && text.starts_with(s.tok.piece(s.tok.bos(), true));
    req.prompt = s.tok.encode(text, !has_bos, true);
  } else {
    req.prompt = s.tok.encode(a.get("prompt"), true, false);
  }
  const bool json = a.has("json");
  const std::string policy = a.get("policy");
  steer_detail::with_policy(s.bundle, s.model, policy, alpha, [&](auto &hooks, auto scores_of) {
    const auto r = generate(s.model, s.tok, std::span(&req, 1), hooks,
                            [json](std::size_t, token_id, std::string_view piece) {
                              if (!json && !piece.empty()) {
                                std::fwrite(piece.data(), 1, piece.size(), stdout);
                                std::fflush(stdout);
                              }
                              return true;
                            })[0];
    const auto &trace = scores_of(0);
    const auto n_prompt = static_cast<std::size_t>(r.n_prompt);
    if (!json) {
      double sum = 0;
      for (std::size_t k = 0; k < r.tokens.size(); ++k) sum += trace[n_prompt + k - 1];
      std::printf("\n");
      std::fprintf(stderr, "dms steer generate: policy %s, alpha %.2f, %zu tokens, mean memorization score %.3f\n",
                   policy.c_str(), alpha, r.tokens.size(), r.tokens.empty() ? 0.0 : sum / static_cast<double>(r.tokens.size()));
      return;
    }
    nlohmann::ordered_json j;
    j["policy"] = policy;
    j["alpha"] = alpha;
    j["probe"] = to_string(s.bundle.probe_at());
    j["steering"] = to_string(s.bundle.steering_at());
    j["text"] = r.text;
    j["stop_reason"] = std::string(name_of(r.stop));
    auto &pt = j["prompt_tokens"] = nlohmann::ordered_json::array();
    for (std::size_t i = 0; i < n_prompt; ++i)
      pt.push_back({{"id", req.prompt[i]}, {"text", s.tok.piece(req.prompt[i], true)},
                    {"score", steer_detail::score_json(trace[i])}});
    // A generated token's score is p at the position that predicted it (the previous one): the
    // value the policy scaled its steering by when choosing that token.
    auto &gt = j["generated_tokens"] = nlohmann::ordered_json::array();
    double sum = 0;
    for (std::size_t k = 0; k < r.tokens.size(); ++k) {
      const float p = trace[n_prompt + k - 1];
      sum += p;
      gt.push_back({{"id", r.tokens[k]}, {"text", s.tok.piece(r.tokens[k], true)}, {"score", steer_detail::score_json(p)}});
    }
    j["mean_generated_score"] = r.tokens.empty() ? 0.0 : sum / static_cast<double>(r.tokens.size());
    j["decode_tokens_per_second"] = r.decode_tokens_per_second();
    std::printf("%s\n", steer_detail::json_text(j).c_str());
  });
  return 0;
}

// --- score ----------------------------------------------------------------------------------------

inline command_spec steer_score_command() {
  return command_spec("dms steer score",
                      "Memorization scores of prompts (one per line of a file, '-' for stdin): the probe's p at "
                      "every token and the mean per prompt, with no steering.")
      .option({"bundle", 'b', "PATH", "the bundle (required)", ""})
      .option({"prompts", 'f', "FILE", "prompts, one per line (required)", ""})
      .option({"model", 'm', "PATH", "the model, if not where the bundle says", ""})
      .option({"threads", 't', "N", "CPU threads; 0 = all cores", "0"})
      .option({"parallel", 0, "N", "sequences per forward", "1"})
      .option({"ctx", 'c', "N", "context size", "1024"})
      .option({"json", 0, "", "JSON with per-token scores (default: one line per prompt: mean score, prompt)", ""});
}

inline int run_steer_score(const parsed_args &a) {
  std::vector<std::string> prompts;
  {
    const std::string file = a.get("prompts");
    std::ifstream f;
    std::istream *in = &std::cin;
    if (file != "-") {
      f.open(file);
      require(static_cast<bool>(f), errc::io, [&] { return "cannot open " + file; });
      in = &f;
    }
    for (std::string line; std::getline(*in, line);)
      if (!line.empty()) prompts.push_back(line);
    require(!prompts.empty(), errc::invalid_argument, [&] { return "no prompts in " + file; });
  }
  auto s = steer_detail::steering_session::open(a);
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  steer_detail::with_policy(s.bundle, s.model, "none", 0.0f, [&](auto &hooks, auto scores_of) {
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const auto ids = s.tok.encode(prompts[i], true, false);
      require(!ids.empty() && static_cast<std::int64_t>(ids.size()) <= s.model.n_ctx(), errc::invalid_argument,
              [&] { return "prompt " + std::to_string(i + 1) + " has " + std::to_string(ids.size()) +
                           " tokens (context " + std::to_string(s.model.n_ctx()) + ")"; });
      std::vector<token_slot> slots(ids.size());
      for (std::size_t t = 0; t < ids.size(); ++t) slots[t] = {0, static_cast<std::int32_t>(t), false};
      slots.back().want_logits = true;
      s.model.clear(0);
      s.model.forward({ids, slots}, hooks);
      s.model.clear(0);
      const auto &trace = scores_of(0);
      double sum = 0;
      nlohmann::ordered_json toks = nlohmann::ordered_json::array();
      for (std::size_t t = 0; t < ids.size(); ++t) {
        sum += trace[t];
        toks.push_back({{"id", ids[t]}, {"text", s.tok.piece(ids[t], true)}, {"score", steer_detail::score_json(trace[t])}});
      }
      const double mean = sum / static_cast<double>(ids.size());
      if (a.has("json"))
        out.push_back({{"prompt", prompts[i]}, {"mean_score", mean}, {"last_score", steer_detail::score_json(trace[ids.size() - 1])},
                       {"tokens", toks}});
      else
        std::printf("%.4f\t%s\n", mean, prompts[i].c_str());
    }
  });
  if (a.has("json")) std::printf("%s\n", steer_detail::json_text(out).c_str());
  return 0;
}

// --- export-cvec ----------------------------------------------------------------------------------

inline command_spec steer_export_command() {
  return command_spec("dms steer export-cvec",
                      "Write the bundle's steering vector as a llama.cpp control vector (GGUF, direction.N), "
                      "scaled by --scale; llama.cpp adds it at every token (a constant policy).")
      .option({"bundle", 'b', "PATH", "the bundle (required)", ""})
      .option({"out", 'o', "PATH", "the .gguf to write (required)", ""})
      .option({"scale", 0, "S", "multiply the vector by S (llama.cpp's --control-vector-scaled does the same)", "1"})
      .epilog("Example:\n  dms steer export-cvec -b smollm2.dms -o smollm2-generalize.gguf\n"
              "  llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf --control-vector smollm2-generalize.gguf");
}

inline int run_steer_export(const parsed_args &a) {
  const auto b = load_bundle(a.get("bundle"));
  const double scale = a.get_double("scale");
  require(std::isfinite(scale), errc::invalid_argument, [] { return std::string("--scale must be finite"); });
  const steering_vector &v = b.steering.vector;
  export_control_vector(a.get("out"), std::span(&v, 1), b.model.arch.empty() ? "llama" : b.model.arch,
                        static_cast<float>(scale), b.model.n_layers);
  std::printf("%s: direction.%d (%s), |v| = %.4f\n", a.get("out").c_str(), control_vector_layer(v.at()),
              to_string(v.at()).c_str(), b.steering.norm() * std::abs(scale));
  return 0;
}

// --- eval -----------------------------------------------------------------------------------------

inline command_spec steer_eval_command() {
  return command_spec("dms steer eval",
                      "Evaluate a bundle on the held-out split: verbatim regurgitation (a continuation reproducing "
                      ">= 50 characters of the reference), mean per-token KL(steered || unsteered) on neutral "
                      "prompts, perplexity of a neutral text, arithmetic exact match; for no policy, constant, "
                      "DMS and conditional steering, and an alpha sweep of constant vs DMS. Writes a "
                      "self-contained HTML report.")
      .option({"bundle", 'b', "PATH", "the bundle (required)", ""})
      .option({"data", 'd', "DIR", "calibration data (its held-out split is used)",
               steer_detail::default_data_dir().string()})
      .option({"report", 'r', "PATH", "the HTML report to write", "dms-steer-report.html"})
      .option({"alphas", 0, "LIST", "comma-separated alphas of the sweep", "0.5,1,1.4,2,3"})
      .option({"max-passages", 0, "N", "use at most N held-out passages (0 = all)", "0"})
      .option({"max-tokens", 'n', "N", "tokens generated per passage (regurgitation) and in the report", "64"})
      .option({"model", 'm', "PATH", "the model, if not where the bundle says", ""})
      .option({"threads", 't', "N", "CPU threads; 0 = all cores", "0"})
      .option({"parallel", 0, "N", "sequences per forward", "8"})
      .option({"ctx", 'c', "N", "context size per sequence", "256"})
      .option({"json", 0, "", "print the results as JSON instead of a table", ""})
      .option({"quiet", 'q', "", "no progress bars", ""})
      .epilog("Example:\n  dms steer eval -b smollm2.dms -r report.html");
}

namespace steer_detail {

inline std::vector<float> parse_alphas(const std::string &list) {
  std::vector<float> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    char *end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    require(!item.empty() && end == item.c_str() + item.size() && std::isfinite(v), errc::invalid_argument,
            [&] { return "--alphas: '" + item + "' is not a number"; });
    out.push_back(static_cast<float>(v));
  }
  require(!out.empty(), errc::invalid_argument, [] { return std::string("--alphas is empty"); });
  return out;
}

//! Greedy continuation of `prefix` under a policy, each generated token with the score of the
//! position that predicted it.
inline std::vector<report_token> traced_continuation(steering_session &s, std::string_view kind, float alpha,
                                                     const std::vector<token_id> &prefix, std::int32_t max_tokens) {
  std::vector<report_token> out;
  with_policy(s.bundle, s.model, kind, alpha, [&](auto &hooks, auto scores_of) {
    generation_request req;
    req.prompt = prefix;
    req.max_tokens = max_tokens;
    req.sampling.temperature = 0;
    const auto r = generate(s.model, s.tok, std::span(&req, 1), hooks)[0];
    const auto &trace = scores_of(0);
    for (std::size_t k = 0; k < r.tokens.size(); ++k)
      out.push_back({std::string(s.tok.piece(r.tokens[k], true)), trace[prefix.size() + k - 1]});
  });
  return out;
}

} // namespace steer_detail

inline int run_steer_eval(const parsed_args &a) {
  namespace fs = std::filesystem;
  const auto alphas = steer_detail::parse_alphas(a.get("alphas"));
  const auto items = load_calibration_items(a.get("data"));
  const auto max_passages = static_cast<std::size_t>(detail::int_option(a, "max-passages", 0));
  auto s = steer_detail::steering_session::open(a);
  const progress bar = steer_detail::progress_bar(a);
  const auto &b = s.bundle;
  const float alpha = b.steering.alpha;
  const std::int32_t prefix_tokens = b.calibration.settings.value("prefix_tokens", 32);

  // The held-out split, never seen by calibration.
  std::vector<std::vector<token_id>> passages, neutral;
  std::vector<arithmetic_item> arithmetic;
  for (const auto &it : items) {
    if (it.split != "heldout") continue;
    if (it.kind == "memorized") {
      passages.push_back(s.tok.encode(it.text, true));
    } else {
      neutral.push_back(s.tok.encode(it.text, true));
      if (!it.answer.empty()) arithmetic.push_back({it.text, it.answer});
    }
  }
  if (max_passages > 0 && passages.size() > max_passages) { // evenly spaced: every category keeps its share
    std::vector<std::vector<token_id>> kept;
    for (std::size_t i = 0; i < max_passages; ++i) kept.push_back(std::move(passages[i * passages.size() / max_passages]));
    passages = std::move(kept);
  }
  std::string neutral_text;
  {
    std::ifstream f(fs::path(a.get("data")) / "neutral.txt");
    require(static_cast<bool>(f), errc::io, [&] { return "cannot open " + (fs::path(a.get("data")) / "neutral.txt").string(); });
    std::stringstream ss;
    ss << f.rdbuf();
    neutral_text = ss.str();
  }
  for (std::size_t pos = 0; pos < neutral_text.size();) { // each paragraph is a neutral prompt too
    const auto end = std::min(neutral_text.find("\n\n", pos), neutral_text.size());
    if (end > pos + 1) neutral.push_back(s.tok.encode(neutral_text.substr(pos, end - pos), true));
    pos = end + 2;
  }
  const auto neutral_ids = s.tok.encode(neutral_text, true);
  // Reference: the whole rest of the passage (>= 33 tokens), and up to --max-tokens generated: 32
  // tokens of a digit sequence (SmolLM2 spells numbers digit by digit) are fewer than the 50
  // characters the rule asks for.
  const std::int32_t max_tokens = detail::int_option(a, "max-tokens", 1);
  std::vector<regurgitation_case> cases;
  for (const auto &p : passages) {
    const auto c = make_regurgitation_cases(s.tok, std::span(&p, 1), prefix_tokens,
                                            static_cast<std::int32_t>(p.size()) - prefix_tokens);
    cases.push_back(c.front());
  }
  regurgitation_options ropt;
  ropt.max_tokens = max_tokens;

  struct config {
    std::string policy;
    float alpha;
    bool full; // also perplexity and arithmetic
  };
  // The sweep's row at the bundle's alpha is also the full comparison row of its policy.
  std::vector<config> configs{{"none", 0.0f, true}};
  for (const char *kind : {"constant", "dms"}) {
    bool has_default = false;
    for (float x : alphas) {
      configs.push_back({kind, x, x == alpha});
      has_default = has_default || x == alpha;
    }
    if (!has_default) configs.push_back({kind, alpha, true});
  }
  if (b.condition) configs.push_back({"conditional", alpha, true});

  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  steering_report rep = report_from_bundle(b);
  rep.model = s.model_path.filename().string();
  std::vector<report_sweep_series> sweep{{"constant", {}}, {"dms", {}}};
  std::vector<regurgitation_outcome> baseline_cases;
  if (!a.has("json"))
    std::printf("%-12s %6s %14s %10s %11s %11s\n", "policy", "alpha", "regurgitation", "KL (nats)", "perplexity",
                "arithmetic");
  for (const auto &c : configs) {
    report_policy_row row;
    row.policy = c.policy;
    row.alpha = c.alpha;
    steer_detail::with_policy(b, s.model, c.policy, c.alpha, [&](auto &hooks, auto) {
      const auto reg = measure_regurgitation(s.model, s.tok, cases, ropt, hooks, bar);
      row.regurgitation_rate = reg.rate();
      if (c.policy == "none") baseline_cases = reg.cases;
      row.mean_kl = c.policy == "none" ? 0.0 : mean_token_kl(s.model, neutral, hooks, {}, bar).mean_kl;
      if (c.full) {
        row.perplexity = perplexity(s.model, neutral_ids, hooks, {}, bar).perplexity;
        row.arithmetic_accuracy = arithmetic.empty() ? std::numeric_limits<double>::quiet_NaN()
                                                     : arithmetic_exact_match(s.model, s.tok, arithmetic, {}, hooks, bar).rate();
      }
    });
    nlohmann::ordered_json j{{"policy", c.policy}, {"alpha", c.alpha}, {"regurgitation", row.regurgitation_rate},
                             {"mean_kl", row.mean_kl}};
    if (c.full) {
      j["perplexity"] = row.perplexity;
      j["arithmetic_exact_match"] = row.arithmetic_accuracy;
      rep.policies.push_back(row);
    }
    if (c.policy == "constant" || c.policy == "dms")
      sweep[c.policy == "constant" ? 0 : 1].points.push_back({c.alpha, row.mean_kl, row.regurgitation_rate});
    results.push_back(j);
    if (!a.has("json"))
      std::printf("%-12s %6.2f %13.1f%% %10.4f %11s %11s\n", c.policy.c_str(), c.alpha, 100 * row.regurgitation_rate,
                  row.mean_kl, c.full ? std::to_string(row.perplexity).substr(0, 7).c_str() : "-",
                  c.full && !std::isnan(row.arithmetic_accuracy)
                      ? (std::to_string(100 * row.arithmetic_accuracy).substr(0, 5) + "%").c_str()
                      : "-");
  }
  rep.alpha_sweep = sweep;

  // The passage the unsteered model recites most, shown token by token without and with DMS.
  std::size_t shown = 0;
  for (std::size_t i = 1; i < baseline_cases.size(); ++i)
    if (baseline_cases[i].common_chars > baseline_cases[shown].common_chars) shown = i;
  report_generation g;
  g.prompt = s.tok.decode(cases[shown].prefix);
  g.unsteered = steer_detail::traced_continuation(s, "none", 0.0f, cases[shown].prefix, max_tokens);
  g.steered = steer_detail::traced_continuation(s, "dms", alpha, cases[shown].prefix, max_tokens);
  g.steered_label = "DMS, alpha " + std::to_string(alpha).substr(0, 4);
  rep.generations.push_back(std::move(g));
  rep.summary.emplace_back("held-out passages", std::to_string(cases.size()));
  rep.summary.emplace_back("neutral prompts", std::to_string(neutral.size()));
  rep.summary.emplace_back("arithmetic problems", std::to_string(arithmetic.size()));
  rep.generated_at = utc_timestamp();
  write_report(a.get("report"), rep);

  if (a.has("json")) {
    nlohmann::ordered_json j{{"bundle", a.get("bundle")}, {"report", a.get("report")},
                             {"n_passages", cases.size()}, {"n_neutral", neutral.size()},
                             {"n_arithmetic", arithmetic.size()}, {"results", results}};
    std::printf("%s\n", steer_detail::json_text(j).c_str());
  } else {
    std::printf("report: %s\n", a.get("report").c_str());
  }
  return 0;
}

} // namespace dms::cli
