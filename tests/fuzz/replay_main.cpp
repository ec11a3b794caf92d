// A main() for fuzz targets built without libFuzzer (g++, or DMS_BUILD_FUZZERS=OFF): feeds every
// file named on the command line, or found under a directory named there, to
// LLVMFuzzerTestOneInput once. ctest runs it on the seed corpus, so every build compiles the
// harnesses and checks that the seeds go through them cleanly; finding new inputs needs clang
// (scripts/fuzz).
//   fuzz_gguf_replay build/fuzz/seeds/fuzz_gguf [more files or directories...]
// Exit status: 0 when every input ran, 77 (ctest's "skipped") when there was none to run.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size);

namespace {
void run_one(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  // A heap copy of exactly the input's size, so AddressSanitizer catches a read one past the end.
  std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(copy.data(), copy.size());
}
} // namespace

int main(int argc, char **argv) {
  namespace fs = std::filesystem;
  std::size_t n = 0;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg = argv[i];
    if (fs::is_directory(arg)) {
      std::vector<fs::path> files;
      for (const auto &e : fs::recursive_directory_iterator(arg))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end()); // a stable order, for reproducible output
      for (const auto &f : files) run_one(f), ++n;
    } else if (fs::is_regular_file(arg)) {
      run_one(arg), ++n;
    } else {
      std::fprintf(stderr, "%s: no such file or directory (skipped)\n", argv[i]);
    }
  }
  std::printf("%s: %zu inputs ran without a finding\n", argc > 0 ? argv[0] : "replay", n);
  return n == 0 ? 77 : 0;
}
