// dms_peer_hidden_states: runs token ids through dms::llama_model and writes, as one .npy of shape
// [n_layers + 1, n_tokens, n_embd], the hidden states in Hugging Face's `output_hidden_states`
// layout: [0] the embeddings (resid_pre of layer 0), [l] the output of block l - 1 (resid_post),
// and [n_layers] the output of the final norm (HF's last hidden state is taken after model.norm).
//   dms_peer_hidden_states MODEL IDS OUT.npy [fast|exact]   IDS: comma-separated token ids;
//   the last argument picks the mat-mul precision (model_options::precision; default fast)
// hidden_states_transformers.py compares it with transformers; this program only records.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "dms/formats/npy.hpp"
#include "dms/model/llama.hpp"

namespace {
struct recorder {
  std::int32_t n_layers;
  std::int64_t n_embd, n_tokens;
  std::vector<float> states; // [n_layers + 1][n_tokens][n_embd]

  bool wants(dms::hook_point p) const noexcept {
    return (p.layer == 0 && p.where == dms::site::resid_pre) ||
           (p.where == dms::site::resid_post && p.layer < n_layers - 1) || p.where == dms::site::final_norm;
  }
  void operator()(dms::activation_block &b) {
    const std::int64_t slot = b.at.where == dms::site::resid_pre    ? 0
                              : b.at.where == dms::site::final_norm ? n_layers
                                                                    : b.at.layer + 1;
    for (std::int64_t r = 0; r < n_tokens; ++r)
      for (std::int64_t c = 0; c < n_embd; ++c) states[(slot * n_tokens + r) * n_embd + c] = b.rows(r, c);
  }
};
} // namespace

int main(int argc, char **argv) try {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s MODEL IDS OUT.npy [fast|exact]\n", argv[0]);
    return 2;
  }
  std::vector<dms::token_id> ids;
  for (const char *p = argv[2]; *p;) {
    char *end = nullptr;
    ids.push_back(static_cast<dms::token_id>(std::strtol(p, &end, 10)));
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p) throw std::runtime_error("bad id list");
  }
  const bool exact = argc == 5 && std::string(argv[4]) == "exact";
  auto model = dms::llama_model::load(
      argv[1], {.n_ctx = 1024,
                .n_seq_max = 1,
                .n_threads = 2,
                .precision = exact ? dms::cpu::matmul_precision::exact : dms::cpu::matmul_precision::fast});
  const auto n = static_cast<std::int64_t>(ids.size());
  std::vector<dms::token_slot> slots(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) slots[i] = {0, static_cast<std::int32_t>(i), i + 1 == ids.size()};
  recorder rec{model.n_layers(), model.n_embd(), n, {}};
  rec.states.resize(static_cast<std::size_t>((rec.n_layers + 1) * n * rec.n_embd));
  model.forward(dms::token_batch{ids, slots}, rec);
  const std::int64_t shape[] = {rec.n_layers + 1, n, rec.n_embd};
  dms::write_npy(argv[3], rec.states, shape);
  return 0;
} catch (const std::exception &e) {
  std::fprintf(stderr, "dms_peer_hidden_states: %s\n", e.what());
  return 1;
}
