// tests/support/external.hpp: what tests need from outside the repository, and how they skip.
//
// Tests that need the peer venv (scripts/peers) or the real model (scripts/fetch-model) are hidden
// Catch2 cases tagged [.peer] or [.model]; tests/CMakeLists.txt registers them under the ctest
// labels `peer` and `model` with SKIP_RETURN_CODE 77. When what a test needs is missing it calls
// skip(why): prints "SKIPPED: <why>" and exits 77, so ctest lists it as skipped, not passed.
#pragma once

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <sys/wait.h>

namespace dms::test {

namespace fs = std::filesystem;

[[noreturn]] inline void skip(const std::string &why) {
  std::cout << "SKIPPED: " << why << std::endl;
  std::fflush(stdout);
  std::_Exit(77); // ctest's SKIP_RETURN_CODE; _Exit: nothing of the half-run test case unwinds
}

inline std::string quote(const std::string &s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}
inline std::string slurp(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct run_result {
  int rc;
  std::string out, err;
};
//! Runs a shell command, capturing stdout and stderr in files of `dir`.
inline run_result run(const std::string &command, const fs::path &dir) {
  const auto out = dir / "stdout.txt", err = dir / "stderr.txt";
  const int status = std::system((command + " >" + quote(out.string()) + " 2>" + quote(err.string())).c_str());
  const int rc = status == -1 ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return {rc, slurp(out), slurp(err)};
}

//! The peer venv's python, or a skip when the venv or one of `modules` (a Python import list) is missing.
inline std::string peer_python(const fs::path &dir, const std::string &modules = "gguf, numpy") {
  const char *env = std::getenv("DMS_PEERS_VENV");
  const char *home = std::getenv("HOME");
  const fs::path venv = env ? fs::path(env) : fs::path(home ? home : "/root") / ".cache/dms/peers-venv";
  const fs::path python = venv / "bin/python";
  if (!fs::exists(python)) skip("peers venv missing at " + venv.string() + " (run scripts/peers)");
  const auto r = run(quote(python.string()) + " -c 'import " + modules + "'", dir);
  if (r.rc != 0) skip("the peers venv cannot import " + modules + " (run scripts/peers): " + r.err);
  return python.string();
}

//! Runs `script` (Python source) with the peer python; the test fails on a non-zero exit.
inline std::string run_python(const std::string &python, const std::string &script,
                       const std::vector<std::string> &args, const fs::path &dir) {
  const auto file = dir / "script.py";
  std::ofstream(file) << script;
  std::string cmd = quote(python) + " " + quote(file.string());
  for (const auto &a : args) cmd += " " + quote(a);
  const auto r = run(cmd, dir);
  INFO("python stderr:\n" << r.err);
  REQUIRE(r.rc == 0);
  return r.out;
}

//! The default model: $DMS_MODEL (or $DMS_PEER_MODEL, which tests/peers reads), else what
//! scripts/fetch-model prints (it downloads the model once into the cache); a skip when neither
//! works.
inline std::string model_path(const fs::path &dir) {
  for (const char *var : {"DMS_MODEL", "DMS_PEER_MODEL"}) {
    if (const char *env = std::getenv(var)) {
      INFO(var << "=" << env);
      REQUIRE(fs::exists(env)); // set explicitly: a wrong path is an error, not a skip
      return env;
    }
  }
  const fs::path repo = fs::path(__FILE__).parent_path().parent_path().parent_path(); // tests/support/..
  const fs::path fetch = repo / "scripts/fetch-model";
  if (!fs::exists(fetch)) skip("no DMS_MODEL and no " + fetch.string());
  auto r = run(quote(fetch.string()), dir);
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
  if (r.rc != 0 || r.out.empty() || !fs::exists(r.out)) {
    std::string why = r.err; // its last line says why
    while (!why.empty() && why.back() == '\n') why.pop_back();
    why = why.substr(why.find_last_of('\n') == std::string::npos ? 0 : why.find_last_of('\n') + 1);
    skip("the model is unavailable (" + why + "); set DMS_MODEL or run scripts/fetch-model");
  }
  return r.out;
}

} // namespace dms::test
