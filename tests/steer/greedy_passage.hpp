// A "passage the model recites" for tests on tiny random models: a prefix followed by the model's
// own greedy continuation, so extraction labelling must call it memorized.
#pragma once

#include <cstdint>
#include <vector>

#include "dms/model/generate.hpp"
#include "dms/model/llama.hpp"
#include "dms/steer/labels.hpp"

namespace dms::test {

//! `prefix` followed by the model's own greedy continuation of `n` tokens.
inline std::vector<token_id> greedy_passage(llama_model &m, std::vector<token_id> prefix, std::int32_t n) {
  generation_request r;
  r.prompt = prefix;
  r.sampling.temperature = 0.0f;
  r.max_tokens = n;
  r.stop_at_eog = false;
  const auto out = generate(m, detail::silent_vocab{}, r);
  prefix.insert(prefix.end(), out.tokens.begin(), out.tokens.end());
  return prefix;
}

} // namespace dms::test
