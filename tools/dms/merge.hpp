// tools/dms/merge.hpp: `dms merge CONFIG.yaml -o OUT`: merge models from a mergekit YAML config.
//
// Thin: parses the options, builds a dms::merge_engine (dms/merge/engine.hpp) with the built-in
// strategy the config names, prints the plan (--dry-run) or runs it with a progress bar on stderr.
// Ctrl-C sets a flag the engine polls: the merge stops, its temporary output is removed, and the
// command exits 130 with nothing written.
#pragma once

#include <atomic>
#include <cctype>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include <dms/core/progress.hpp>
#include <dms/merge/builtin_strategies.hpp>
#include <dms/merge/config.hpp>
#include <dms/merge/engine.hpp>

#include "args.hpp"

namespace dms::cli {

namespace detail {
inline std::atomic<bool> merge_interrupted{false};
extern "C" inline void on_merge_sigint(int) { merge_interrupted.store(true); }

//! "5GB" (10^9, as transformers' max_shard_size), "500MB", "2GiB", "1024": bytes.
inline std::uint64_t parse_size(const std::string &s) {
  std::size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  double v = 0;
  bool ok = i > 0;
  try {
    v = ok ? std::stod(s.substr(0, i)) : 0;
  } catch (...) {
    ok = false;
  }
  std::string unit = s.substr(i);
  for (char &c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mul = 0;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "KB") mul = 1e3;
  else if (unit == "MB") mul = 1e6;
  else if (unit == "GB") mul = 1e9;
  else if (unit == "TB") mul = 1e12;
  else if (unit == "KIB") mul = 1024.0;
  else if (unit == "MIB") mul = 1024.0 * 1024;
  else if (unit == "GIB") mul = 1024.0 * 1024 * 1024;
  require(ok && mul > 0 && v * mul >= 1, errc::invalid_argument, [&] {
    return "--shard-size expects a size such as 5GB, 500MB or 2GiB, got '" + s + "'";
  });
  return static_cast<std::uint64_t>(v * mul);
}

//! Restores the previous SIGINT handler on scope exit.
class sigint_scope {
public:
  sigint_scope() {
    merge_interrupted.store(false);
    previous_ = std::signal(SIGINT, on_merge_sigint);
  }
  ~sigint_scope() { std::signal(SIGINT, previous_); }
  sigint_scope(const sigint_scope &) = delete;
  sigint_scope &operator=(const sigint_scope &) = delete;

private:
  void (*previous_)(int) = SIG_DFL;
};
} // namespace detail

inline command_spec merge_command() {
  std::string methods;
  for (auto n : merge_method_names()) methods += (methods.empty() ? "" : ", ") + std::string(n);
  command_spec c("dms merge",
                 "Merge models as a mergekit YAML config says (merge_method, models or slices, parameters), "
                 "streaming one tensor at a time: memory stays at a few tensors whatever the model size.");
  c.positional({"CONFIG", "mergekit YAML config (merge_method, base_model, models/slices, parameters, dtype, "
                          "out_dtype, tokenizer_source: base; dms's trim_scope: model for whole-model TIES)"})
      .option({"output", 'o', "OUT", "output: a new directory (safetensors) or a new .gguf file; never overwritten", ""})
      .option({"format", 0, "FORMAT", "safetensors or gguf (auto: gguf when OUT ends in .gguf)", "auto"})
      .option({"out-type", 0, "TYPE", "f32, f16, bf16, or q8_0 (GGUF only); default: the config's out_dtype/dtype, "
                                      "else the inputs' type (f32 for quantized inputs)", ""})
      .option({"seed", 0, "S", "seed of the DARE/DELLA random masks (same result on any thread count)", "0"})
      .option({"threads", 0, "N", "threads (0: all cores)", "0"})
      .option({"shard-size", 0, "SIZE", "maximum safetensors shard size, e.g. 5GB, 500MB, 2GiB", "5GB"})
      .option({"vocab-policy", 0, "POLICY", "embedding/lm_head rows differ: truncate (keep common rows) or error",
               "truncate"})
      .option({"dry-run", 0, "", "print the plan (every tensor, inputs, resolved parameters) and exit", ""})
      .epilog("Models are Hugging Face directories of safetensors (sharded or not), .safetensors or .gguf files\n"
              "(dequantized on the fly), or BASE+ADAPTER for a PEFT LoRA adapter applied on BASE. Relative paths\n"
              "are relative to the working directory, as with mergekit-yaml.\n"
              "Methods: " + methods + ".\n"
              "The output appears atomically: on an error or Ctrl-C nothing is left (a run killed with SIGKILL\n"
              "leaves .OUT.dms-tmp-PID-N next to OUT, removed by the next run with the same OUT).\n\n"
              "Example:\n  dms merge ties.yaml -o merged            # safetensors directory + config/tokenizer\n"
              "  dms merge ties.yaml -o merged.gguf --out-type q8_0\n"
              "  dms merge ties.yaml -o merged --dry-run  # what would be merged, and how");
  return c;
}

inline int run_merge(const parsed_args &a) {
  const std::filesystem::path config_path = a.positionals().at(0);
  merge_config config = read_merge_config(config_path);
  const bool dry = a.has("dry-run");
  require(dry || a.has("output"), errc::invalid_argument,
          [] { return std::string("--output (-o) is required (see dms merge --help)"); });
  merge_options o;
  if (auto out = a.find("output")) o.output = *out;
  const std::string format = a.get("format");
  if (format == "gguf" || (format == "auto" && o.output.extension() == ".gguf")) o.format = output_format::gguf;
  else
    require(format == "safetensors" || format == "auto", errc::invalid_argument,
            [&] { return "--format expects safetensors, gguf or auto, got '" + format + "'"; });
  if (auto t = a.find("out-type")) {
    o.out_type = parse_output_type(*t);
    require(o.out_type.has_value(), errc::invalid_argument,
            [&] { return "--out-type expects f32, f16, bf16 or q8_0, got '" + *t + "'"; });
  }
  require(a.get_int("seed") >= 0 && a.get_int("threads") >= 0, errc::invalid_argument,
          [] { return std::string("--seed and --threads must not be negative"); });
  o.seed = static_cast<std::uint64_t>(a.get_int("seed"));
  o.threads = static_cast<std::size_t>(a.get_int("threads"));
  o.max_shard_bytes = detail::parse_size(a.get("shard-size"));
  const std::string vp = a.get("vocab-policy");
  require(vp == "truncate" || vp == "error", errc::invalid_argument,
          [&] { return "--vocab-policy expects truncate or error, got '" + vp + "'"; });
  o.vocab = vp == "error" ? vocab_policy::error : vocab_policy::truncate;
  o.cancel = &detail::merge_interrupted;
  o.progress = progress(terminal_progress_bar{});

  strategy_handle strategy = builtin_strategy(config.merge_method);
  merge_engine engine(std::move(config), std::move(strategy), std::move(o));
  if (dry) {
    std::fputs(engine.plan().describe().c_str(), stdout);
    std::printf("output: %s, %s\n", engine.plan().format == output_format::gguf ? "gguf" : "safetensors",
                format_bytes(engine.output_size()).c_str());
    return 0;
  }
  for (const auto &w : engine.plan().warnings) std::fprintf(stderr, "dms merge: warning: %s\n", w.c_str());
  const detail::sigint_scope sigint;
  try {
    engine.run();
  } catch (const error &e) {
    if (detail::merge_interrupted.load()) {
      std::fprintf(stderr, "\ndms merge: interrupted; nothing was written\n");
      return 130;
    }
    throw;
  }
  for (const auto &[source, threshold] : engine.trim_thresholds())
    std::fprintf(stderr, "dms merge: whole-model trim threshold of %s: |d| >= %.9g\n",
                 engine.plan().sources.at(source).c_str(), static_cast<double>(threshold));
  for (const auto &p : engine.removed_temporaries())
    std::fprintf(stderr, "dms merge: removed %s, left by a merge that was killed\n", p.string().c_str());
  std::printf("%s\n", std::filesystem::path(a.get("output")).string().c_str());
  return 0;
}

} // namespace dms::cli
