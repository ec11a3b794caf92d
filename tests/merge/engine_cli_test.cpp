// `dms merge` as a user meets it: help, dry run, a real merge with a built-in method, errors, and
// interruption: SIGINT midway leaves nothing, SIGKILL leaves a temporary that the next run removes.
#include <catch2/catch.hpp>

// Built with dms::merge only (yaml-cpp); the folder also builds without it.
#if defined(DMS_HAS_MERGE)

#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine_fixtures.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"

#if defined(DMS_CLI_PATH)

namespace fs = std::filesystem;
using namespace dms;
using namespace dms::test;

namespace {

const std::string dms_cli = DMS_CLI_PATH;

run_result dms_merge(const std::string &args, const fs::path &dir) { return run(quote(dms_cli) + " merge " + args, dir); }

std::string two_model_linear(const fs::path &a, const fs::path &b, double wa, double wb) {
  return "merge_method: linear\nmodels:\n  - model: '" + a.string() + "'\n    parameters:\n      weight: " +
         std::to_string(wa) + "\n  - model: '" + b.string() + "'\n    parameters:\n      weight: " + std::to_string(wb) + "\n";
}

//! Starts `dms merge CONFIG -o OUT ...` without waiting; returns the pid.
pid_t spawn_merge(const std::vector<std::string> &args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char *> argv;
    std::vector<std::string> all = {dms_cli, "merge"};
    all.insert(all.end(), args.begin(), args.end());
    for (auto &s : all) argv.push_back(s.data());
    argv.push_back(nullptr);
    // Quiet child: progress goes to a file.
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    ::execv(dms_cli.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

//! The first temporary `.out.dms-tmp-*` of `out` holding a file with data, waiting up to 60 s.
std::optional<fs::path> wait_for_partial_output(const fs::path &out, pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return std::nullopt; // finished (too fast)
    std::error_code ec;
    for (const auto &e : fs::directory_iterator(out.parent_path(), ec)) {
      if (!e.path().filename().string().starts_with("." + out.filename().string() + ".dms-tmp-")) continue;
      for (const auto &f : fs::recursive_directory_iterator(e.path(), ec))
        if (f.is_regular_file(ec) && f.file_size(ec) > 0) return e.path();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

} // namespace

TEST_CASE("dms merge: --help answers what it does and how", "[merge][engine][cli]") {
  const auto dir = scratch_dir("dms-cli-merge", "help");
  const auto r = dms_merge("--help", dir);
  REQUIRE(r.rc == 0);
  for (const char *s : {"Usage: dms merge", "CONFIG", "mergekit YAML", "--output", "--format", "--out-type", "--seed",
                        "--dry-run", "--threads", "--shard-size", "--vocab-policy", "BASE+ADAPTER", "Methods: linear",
                        "ties", "Ctrl-C"})
    CHECK_THAT(r.out, Catch::Contains(s));
  const auto top = run(quote(dms_cli) + " --help", dir);
  CHECK_THAT(top.out, Catch::Contains("merge"));
}

TEST_CASE("dms merge: dry run, a real merge, and errors", "[merge][engine][cli]") {
  const auto dir = scratch_dir("dms-cli-merge", "run");
  write_tiny_hf(dir / "a", 1);
  write_tiny_hf(dir / "b", 2);
  write_text_file(dir / "lin.yaml", two_model_linear(dir / "a", dir / "b", 0.25, 0.75));

  auto r = dms_merge(quote((dir / "lin.yaml").string()) + " -o " + quote((dir / "out").string()) + " --dry-run", dir);
  INFO(r.err);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("merge plan: method linear, 30 tensors, 3 layers"));
  CHECK_THAT(r.out, Catch::Contains("model.layers.0.self_attn.q_proj.weight [8, 8] f32 layer 0"));
  CHECK_THAT(r.out, Catch::Contains("weight[0]=0.25 weight[1]=0.75"));
  CHECK(!fs::exists(dir / "out"));

  r = dms_merge(quote((dir / "lin.yaml").string()) + " -o " + quote((dir / "out").string()) + " --threads 2", dir);
  INFO(r.err);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.err, Catch::Contains("merging"));
  const auto out = read_hf(dir / "out");
  for (const auto &[name, shape] : tiny_layout({})) {
    const auto a = tiny_values(1, name, numel_of(shape)), b = tiny_values(2, name, numel_of(shape));
    for (std::size_t i = 0; i < a.size(); ++i)
      REQUIRE(std::abs(out.at(name)[i] - (0.25f * a[i] + 0.75f * b[i])) <= 1e-6f);
  }
  // The output exists now: refused, untouched.
  r = dms_merge(quote((dir / "lin.yaml").string()) + " -o " + quote((dir / "out").string()), dir);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains("refusing to overwrite"));

  write_text_file(dir / "typo.yaml", two_model_linear(dir / "a", dir / "b", 1, 1) + "normalise: true\n");
  r = dms_merge(quote((dir / "typo.yaml").string()) + " -o " + quote((dir / "x").string()), dir);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains("typo.yaml: invalid format: line 9, column 1: unknown key 'normalise'"));

  write_text_file(dir / "method.yaml", "merge_method: tie\nmodels:\n  - model: '" + (dir / "a").string() + "'\n");
  r = dms_merge(quote((dir / "method.yaml").string()) + " -o " + quote((dir / "x").string()), dir);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains("unknown merge method 'tie'") && Catch::Contains("ties"));

  r = dms_merge(quote((dir / "lin.yaml").string()) + " -o " + quote((dir / "x").string()) + " --out-type f8", dir);
  CHECK(r.rc == 2);
  CHECK_THAT(r.err, Catch::Contains("--out-type expects"));
  r = dms_merge(quote((dir / "lin.yaml").string()) + " -o " + quote((dir / "x").string()) + " --shard-size 5XB", dir);
  CHECK(r.rc == 2);
  CHECK_THAT(r.err, Catch::Contains("--shard-size expects"));
  CHECK(!fs::exists(dir / "x"));
}

TEST_CASE("dms merge: SIGINT midway leaves nothing, SIGKILL's leftover is removed by the next run",
          "[merge][engine][cli]") {
  const auto dir = scratch_dir("dms-cli-merge", "kill");
  // ~25 M parameters per model (100 MB in F32): long enough to interrupt while it writes.
  const tiny_dims d{.hidden = 512, .intermediate = 1536, .vocab = 8000, .layers = 8, .heads = 8, .kv_heads = 2};
  write_tiny_hf(dir / "a", 1, d);
  write_tiny_hf(dir / "b", 2, d);
  write_text_file(dir / "lin.yaml", two_model_linear(dir / "a", dir / "b", 1, 1));
  const auto before_a = slurp(dir / "a" / "model.safetensors");
  const std::vector<std::string> args = {(dir / "lin.yaml").string(), "-o", (dir / "out").string(), "--threads", "1",
                                         "--shard-size", "4MB"};

  // SIGINT: the handler cancels, the temporary directory is removed, exit 130.
  pid_t pid = spawn_merge(args);
  auto partial = wait_for_partial_output(dir / "out", pid);
  REQUIRE(partial.has_value()); // the merge was caught while writing
  ::kill(pid, SIGINT);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(!fs::exists(dir / "out"));
  CHECK(!fs::exists(*partial));
  CHECK(count_entries(dir) == 3); // a, b, lin.yaml (+ nothing)

  // SIGKILL: no handler runs; the temporary stays, named after the dead process.
  pid = spawn_merge(args);
  partial = wait_for_partial_output(dir / "out", pid);
  REQUIRE(partial.has_value());
  ::kill(pid, SIGKILL);
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
  CHECK(!fs::exists(dir / "out"));
  CHECK(fs::exists(*partial));
  CHECK_THAT(partial->filename().string(), Catch::StartsWith(".out.dms-tmp-" + std::to_string(pid) + "-"));

  // The next run removes it, says so, and writes the output.
  const auto r = dms_merge(quote((dir / "lin.yaml").string()) + " -o " + quote((dir / "out").string()), dir);
  INFO(r.err);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.err, Catch::Contains("removed") && Catch::Contains(partial->filename().string()));
  CHECK(!fs::exists(*partial));
  CHECK(fs::exists(dir / "out" / "model.safetensors"));
  CHECK(slurp(dir / "a" / "model.safetensors") == before_a); // inputs never touched
  fs::remove_all(dir);
}

#endif

#endif // DMS_HAS_MERGE
