// tools/dms/main.cpp: the `dms` command-line tool. Thin by design: each subcommand parses its
// arguments and calls the library; all logic lives in the headers under include/dms/.
//
// Exit codes: 0 success, 1 a dms::error (bad input, bad file: one line on stderr), 2 a usage
// error (unknown command or option), 3 anything unexpected.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include <dms/dms.hpp>

#include "args.hpp"
#include "tokenize.hpp"
#if defined(DMS_HAS_CPU_BACKEND) && defined(DMS_HAS_IO)
#include "inspect.hpp"
#define DMS_CLI_HAS_INSPECT 1
#include "generate.hpp"
#define DMS_CLI_HAS_GENERATE 1
#include "steer.hpp"
#define DMS_CLI_HAS_STEER 1
#endif
#if defined(DMS_HAS_MERGE) && defined(DMS_HAS_IO)
#include "merge.hpp"
#define DMS_CLI_HAS_MERGE 1
#endif

namespace {

struct subcommand {
  dms::cli::command_spec spec;
  std::function<int(const dms::cli::parsed_args &)> run;
};

std::vector<subcommand> subcommands() {
  std::vector<subcommand> list;
  list.push_back({dms::cli::command_spec("dms version", "Print the dms version and build configuration."),
                  [](const dms::cli::parsed_args &) {
                    std::printf("dms %s\n", dms::version.string);
#if defined(DMS_HAS_CPU_BACKEND)
                    std::printf("cpu backend: yes\n");
#else
                    std::printf("cpu backend: no\n");
#endif
                    return 0;
                  }});
#if defined(DMS_CLI_HAS_INSPECT)
  list.push_back({dms::cli::inspect_command(), dms::cli::run_inspect});
#endif
#if defined(DMS_CLI_HAS_GENERATE)
  list.push_back({dms::cli::generate_command(), dms::cli::run_generate});
#endif
#if defined(DMS_CLI_HAS_STEER)
  list.push_back({dms::cli::steer_calibrate_command(), dms::cli::run_steer_calibrate});
  list.push_back({dms::cli::steer_generate_command(), dms::cli::run_steer_generate});
  list.push_back({dms::cli::steer_score_command(), dms::cli::run_steer_score});
  list.push_back({dms::cli::steer_eval_command(), dms::cli::run_steer_eval});
  list.push_back({dms::cli::steer_export_command(), dms::cli::run_steer_export});
#endif
#if defined(DMS_CLI_HAS_MERGE)
  list.push_back({dms::cli::merge_command(), dms::cli::run_merge});
#endif
  list.push_back({dms::cli::tokenize_command(), dms::cli::run_tokenize});
  list.push_back({dms::cli::detokenize_command(), dms::cli::run_detokenize});
  return list;
}

std::string top_level_help(const std::vector<subcommand> &cmds) {
  std::string s = "Usage: dms <command> [OPTIONS]\n\n"
                  "dms: Dynamic Mode Steering, probing and merging for LLM inference engines.\n\nCommands:\n";
  for (const auto &c : cmds) {
    std::string name = c.spec.name().substr(4); // drop "dms "
    name.resize(std::max<std::size_t>(name.size() + 2, 14), ' ');
    std::string summary = c.spec.summary();
    summary = summary.substr(0, summary.find(". ") == std::string::npos ? summary.size() : summary.find(". ") + 1);
    s += "  " + name + summary + "\n";
  }
  s += "\nOptions:\n  -h, --help    show this help (or `dms <command> --help` for a command)\n"
       "  --version     print the version and exit\n";
  return s;
}

} // namespace

int main(int argc, char **argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const auto cmds = subcommands();
  try {
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      if (args.size() >= 2 && args[0] == "help") {
        for (const auto &c : cmds)
          if (c.spec.name() == "dms " + args[1]) {
            std::fputs(c.spec.help_text().c_str(), stdout);
            return 0;
          }
      }
      std::fputs(top_level_help(cmds).c_str(), args.empty() ? stderr : stdout);
      return args.empty() ? 2 : 0;
    }
    if (args[0] == "--version") {
      std::printf("dms %s\n", dms::version.string);
      return 0;
    }
    // Two-word commands ("dms steer eval") first, then one-word ones.
    const bool two_words = args.size() >= 2 && !args[1].starts_with("-");
    const std::string name2 = two_words ? "dms " + args[0] + " " + args[1] : std::string();
    for (const auto &c : cmds) {
      const std::size_t words = two_words && c.spec.name() == name2 ? 2 : c.spec.name() == "dms " + args[0] ? 1 : 0;
      if (words == 0) continue;
      const auto parsed = c.spec.parse(std::span(args).subspan(words));
      if (parsed.has("help")) {
        std::fputs(c.spec.help_text().c_str(), stdout);
        return 0;
      }
      return c.run(parsed);
    }
    // A command group ("dms steer") alone or with an unknown subcommand: list its commands.
    std::string group;
    for (const auto &c : cmds)
      if (c.spec.name().starts_with("dms " + args[0] + " ")) group += "  " + c.spec.name() + "\n";
    if (!group.empty()) {
      const bool asked = args.size() == 1 || args[1] == "--help" || args[1] == "-h";
      if (!asked) std::fprintf(stderr, "dms: unknown command 'dms %s %s'\n", args[0].c_str(), args[1].c_str());
      std::fprintf(asked ? stdout : stderr, "Commands of 'dms %s' (see dms %s <command> --help):\n%s", args[0].c_str(),
                   args[0].c_str(), group.c_str());
      return asked && args.size() > 1 ? 0 : 2;
    }
    std::fprintf(stderr, "dms: unknown command '%s' (see dms --help)\n", args[0].c_str());
    return 2;
  } catch (const dms::error &e) {
    std::fprintf(stderr, "dms: %s\n", e.what());
    return e.code() == dms::errc::invalid_argument ? 2 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dms: unexpected error: %s\n", e.what());
    return 3;
  }
}
