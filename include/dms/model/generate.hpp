// dms/model/generate.hpp: the generation loop: prompts in, sampled text out, hooks on every step.
//
// Steering and probing are measured on generated text, so the loop that produces it lives in the
// library, generic over any dms::model_backend and any vocabulary that can spell a token:
//
//   * several requests run as sequences 0..n-1 of one backend: all prompts are prefilled in one
//     forward, then each round decodes one token for every sequence still running, so n requests
//     cost about as many forwards as the longest one alone;
//   * each request has its own sampling settings and its own random stream (dms::sampler keyed
//     by (seed, request index, step)), so a request's tokens do not depend on what else runs;
//   * the hook set goes to every forward (prefill and decode): steering policies plug in here;
//   * text is streamed as it becomes final: bytes that may be the start of a stop string, or the
//     first bytes of a UTF-8 character, are held back until the next token decides them, and a
//     stop string itself is never streamed (the text is cut before it).
//
// Stop rules, checked in this order after each sampled token:
//   eog          stop_at_eog and the vocabulary says the token ends generation
//   stop_token   the token is one of `stop_tokens`
//   stop_string  the text now contains one of `stop_strings`
//   max_tokens   `max_tokens` tokens were generated
//   context_full the sequence holds n_ctx positions: the sampled token cannot be fed back
//   callback     the streaming callback returned false (its answer counts when nothing above hit)
// The stopping token is kept in `tokens` (an eog or stop token adds nothing to `text`).
//
// The callback is called once per sampled token, in sampling order, with the text that became
// final with it (possibly empty; the last call of a request also carries whatever was held back),
// so the pieces of a request concatenate to its `text`, unless the callback itself stopped the
// request: then `text` may hold a few held-back bytes more than were streamed.
//
// Allocation: buffers are sized before the first forward (batch, samplers, histories, output
// tokens); per token the loop allocates only when a request's text outgrows its reserve.
//
// @code
//   dms::generation_request r;
//   r.prompt = tok.encode("The capital of France is");
//   r.sampling.temperature = 0;                       // greedy
//   auto out = dms::generate(model, tok, std::span(&r, 1), hooks,
//       [](std::size_t, dms::token_id, std::string_view piece) { std::cout << piece; return true; });
//   // out[0].text, out[0].tokens, out[0].stop, out[0].decode_seconds ...
// @endcode
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/model/sampler.hpp"

DMS_NAMESPACE_BEGIN

//! What the generation loop needs from a tokenizer: the bytes of a token and whether it ends
//! generation (end of turn, end of text). dms::tokenizer models it.
//! @code
//!   struct my_vocab {
//!     std::vector<std::string> pieces;
//!     std::string_view piece(dms::token_id t) const { return pieces[t]; }
//!     bool is_eog(dms::token_id t) const { return t == 2; }
//!   };
//!   static_assert(dms::vocabulary<my_vocab>);
//! @endcode
template <class V>
concept vocabulary = requires(const V &v, token_id t) {
  { v.piece(t) } -> std::convertible_to<std::string_view>;
  { v.is_eog(t) } -> std::same_as<bool>;
};

enum class stop_reason : std::uint8_t { max_tokens, eog, stop_token, stop_string, context_full, callback };

constexpr std::string_view name_of(stop_reason r) noexcept {
  switch (r) {
  case stop_reason::max_tokens: return "max_tokens";
  case stop_reason::eog: return "eog";
  case stop_reason::stop_token: return "stop_token";
  case stop_reason::stop_string: return "stop_string";
  case stop_reason::context_full: return "context_full";
  case stop_reason::callback: return "callback";
  }
  return "?";
}

struct generation_request {
  std::vector<token_id> prompt;          //!< non-empty; at most the backend's n_ctx tokens
  sampling_params sampling;
  std::int32_t max_tokens = 128;         //!< >= 1
  std::vector<token_id> stop_tokens;     //!< any of these ends the request (kept in tokens, not in text)
  std::vector<std::string> stop_strings; //!< non-empty strings; text is cut before the first one found
  bool stop_at_eog = true;               //!< stop at the vocabulary's end-of-generation tokens
};

struct generation_result {
  std::vector<token_id> tokens; //!< every sampled token, the stopping one included
  std::string text;             //!< their bytes, without eog/stop tokens, cut before a stop string
  stop_reason stop = stop_reason::max_tokens;
  std::int32_t n_prompt = 0;
  //! The prefill forward (shared by every request of the call) and the time from its end until
  //! this request stopped (forwards, sampling, callbacks).
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;

  double prefill_tokens_per_second() const noexcept {
    return prefill_seconds > 0.0 ? n_prompt / prefill_seconds : 0.0;
  }
  double decode_tokens_per_second() const noexcept {
    return decode_seconds > 0.0 ? static_cast<double>(tokens.size()) / decode_seconds : 0.0;
  }
};

//! The callback that streams nothing and never stops a request.
struct no_streaming {
  constexpr bool operator()(std::size_t, token_id, std::string_view) const noexcept { return true; }
};

namespace detail {

//! Number of bytes at the end of `s` that begin a UTF-8 character whose remaining bytes have not
//! arrived yet (0 when `s` ends on a character boundary or with bytes that are not UTF-8: those
//! are passed through rather than held forever).
inline std::size_t incomplete_utf8_tail(std::string_view s) noexcept {
  const std::size_t n = s.size();
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0u) == 0x80u) continue; // continuation byte: look further back
    const std::size_t len = (c & 0xE0u) == 0xC0u ? 2 : (c & 0xF0u) == 0xE0u ? 3 : (c & 0xF8u) == 0xF0u ? 4 : 1;
    return len > back ? back : 0;
  }
  return 0;
}

//! Length of the longest suffix of `s` that is a proper prefix of one of `stops`.
inline std::size_t partial_stop_tail(std::string_view s, const std::vector<std::string> &stops) noexcept {
  std::size_t best = 0;
  for (const auto &stop : stops) {
    const std::size_t most = std::min(s.size(), stop.size() - 1);
    for (std::size_t len = most; len > best; --len)
      if (s.substr(s.size() - len) == std::string_view(stop).substr(0, len)) {
        best = len;
        break;
      }
  }
  return best;
}

//! Per-request state of one generate() call.
struct generation_state {
  sampler sampling;
  std::vector<token_id> history; //!< prompt, then generated tokens (the penalty window)
  std::size_t streamed = 0;      //!< bytes of result.text already handed to the callback
  std::size_t max_stop = 0;      //!< longest stop string
  bool running = true;
};

} // namespace detail

//! Runs `requests` to completion as sequences 0..n-1 of `model` (their caches are cleared first),
//! passing `hooks` to every forward and streaming text through `on_token(request, token, piece)`
//! (return false to stop that request). Results are in request order.
//!
//! Errors (dms::error, nothing generated): no requests; an empty prompt; a prompt longer than
//! model.n_ctx() (the message gives both numbers); a prompt token outside the vocabulary;
//! max_tokens < 1; an empty stop string; invalid sampling settings; a backend whose logits are not
//! in host memory. Backend errors (too many sequences, ...) propagate.
template <model_backend Backend, vocabulary Vocab, hook_set Hooks, class OnToken>
  requires std::is_invocable_r_v<bool, OnToken &, std::size_t, token_id, std::string_view>
std::vector<generation_result> generate(Backend &model, const Vocab &vocab,
                                        std::span<const generation_request> requests, Hooks &hooks,
                                        OnToken &&on_token) {
  using clock = std::chrono::steady_clock;
  const std::size_t n_req = requests.size();
  const auto n_ctx = static_cast<std::int64_t>(model.n_ctx());
  const auto n_vocab = static_cast<std::int64_t>(model.n_vocab());
  require(n_req > 0, errc::invalid_argument, [] { return std::string("generate: no requests"); });
  require(model.space() == memory_space::host, errc::unsupported,
          [] { return std::string("generate: the backend's logits must be in host memory"); });

  std::vector<detail::generation_state> states;
  states.reserve(n_req);
  std::vector<generation_result> results(n_req);
  std::size_t n_prefill = 0;
  for (std::size_t i = 0; i < n_req; ++i) {
    const auto &r = requests[i];
    const auto which = [&] { return "generate: request " + std::to_string(i) + ": "; };
    require(!r.prompt.empty(), errc::invalid_argument, [&] { return which() + "empty prompt"; });
    require(static_cast<std::int64_t>(r.prompt.size()) <= n_ctx, errc::invalid_argument, [&] {
      return which() + "the prompt has " + std::to_string(r.prompt.size()) +
             " tokens, more than the context of " + std::to_string(n_ctx);
    });
    for (token_id t : r.prompt)
      require(t >= 0 && t < n_vocab, errc::invalid_argument, [&] {
        return which() + "prompt token " + std::to_string(t) + " is outside the vocabulary of " +
               std::to_string(n_vocab);
      });
    require(r.max_tokens >= 1, errc::invalid_argument,
            [&] { return which() + "max_tokens must be >= 1, got " + std::to_string(r.max_tokens); });
    std::size_t max_stop = 0;
    for (const auto &s : r.stop_strings) {
      require(!s.empty(), errc::invalid_argument, [&] { return which() + "empty stop string"; });
      max_stop = std::max(max_stop, s.size());
    }
    try {
      states.push_back({sampler(r.sampling, i, static_cast<std::size_t>(n_vocab)), {}, 0, max_stop, true});
    } catch (const error &e) {
      throw error(e.code(), which() + e.message());
    }
    // At most n_ctx - prompt + 1 tokens fit (the last one is never fed back), whatever max_tokens says.
    const auto max_new = std::min(static_cast<std::size_t>(r.max_tokens),
                                  static_cast<std::size_t>(n_ctx) - r.prompt.size() + 1);
    states.back().history.reserve(r.prompt.size() + max_new);
    states.back().history.assign(r.prompt.begin(), r.prompt.end());
    results[i].tokens.reserve(max_new);
    results[i].text.reserve(max_new * 8); // 8 bytes per token covers typical BPE pieces
    results[i].n_prompt = static_cast<std::int32_t>(r.prompt.size());
    n_prefill += r.prompt.size();
  }

  // One batch buffer, large enough for the prefill; decode rounds use a prefix of it.
  std::vector<token_id> batch_tokens;
  std::vector<token_slot> batch_slots;
  std::vector<std::size_t> row_request(n_req); // logits row -> request
  batch_tokens.reserve(std::max(n_prefill, n_req));
  batch_slots.reserve(std::max(n_prefill, n_req));
  for (std::size_t i = 0; i < n_req; ++i) {
    model.clear(static_cast<std::int32_t>(i));
    const auto &p = requests[i].prompt;
    for (std::size_t j = 0; j < p.size(); ++j) {
      batch_tokens.push_back(p[j]);
      batch_slots.push_back({static_cast<std::int32_t>(i), static_cast<std::int32_t>(j), j + 1 == p.size()});
    }
    row_request[i] = i;
  }

  // Streams what is final of request i's text, with token t; `final` flushes everything.
  const auto stream = [&](std::size_t i, token_id t, bool final) {
    auto &st = states[i];
    auto &res = results[i];
    std::size_t end = res.text.size();
    if (!final) {
      const std::string_view pending = std::string_view(res.text).substr(st.streamed);
      end -= std::max(detail::partial_stop_tail(pending, requests[i].stop_strings),
                      detail::incomplete_utf8_tail(pending));
    }
    const std::string_view piece = std::string_view(res.text).substr(st.streamed, end - st.streamed);
    st.streamed = end;
    return static_cast<bool>(on_token(i, t, piece));
  };

  const auto t_start = clock::now();
  auto t_prefill_end = t_start;
  // Samples the next token of request i from `row`, applies the stop rules and streams.
  const auto advance = [&](std::size_t i, std::span<const float> row) {
    auto &st = states[i];
    auto &res = results[i];
    const auto &req = requests[i];
    const token_id t = st.sampling.sample(row, st.history, res.tokens.size());
    res.tokens.push_back(t);
    st.history.push_back(t);
    bool stopped = true;
    if (req.stop_at_eog && vocab.is_eog(t)) {
      res.stop = stop_reason::eog;
    } else if (std::find(req.stop_tokens.begin(), req.stop_tokens.end(), t) != req.stop_tokens.end()) {
      res.stop = stop_reason::stop_token;
    } else {
      const std::size_t before = res.text.size();
      res.text.append(std::string_view(vocab.piece(t)));
      stopped = false;
      if (st.max_stop > 0) {
        // A new match must end inside the new bytes, so it starts at most max_stop - 1 before them.
        const std::size_t from = before >= st.max_stop - 1 ? before - (st.max_stop - 1) : 0;
        std::size_t cut = std::string::npos;
        for (const auto &s : req.stop_strings) cut = std::min(cut, res.text.find(s, from));
        if (cut != std::string::npos) {
          res.text.resize(cut);
          st.streamed = std::min(st.streamed, cut);
          res.stop = stop_reason::stop_string;
          stopped = true;
        }
      }
      if (!stopped) {
        const auto pos_fed_next = static_cast<std::int64_t>(st.history.size()) - 1; // where t would go
        if (res.tokens.size() >= static_cast<std::size_t>(req.max_tokens)) {
          res.stop = stop_reason::max_tokens;
          stopped = true;
        } else if (pos_fed_next >= n_ctx) {
          res.stop = stop_reason::context_full;
          stopped = true;
        }
      }
    }
    const bool go_on = stream(i, t, stopped);
    if (!stopped && !go_on) {
      res.stop = stop_reason::callback;
      stopped = true;
    }
    if (stopped) {
      st.running = false;
      res.decode_seconds = std::chrono::duration<double>(clock::now() - t_prefill_end).count();
    }
  };

  const auto check_rows = [&](const matrix_view<const float> &logits, std::size_t expected) {
    require(static_cast<std::size_t>(logits.rows) == expected && logits.cols == n_vocab, errc::shape_mismatch, [&] {
      return "generate: the backend returned logits of shape [" + std::to_string(logits.rows) + ", " +
             std::to_string(logits.cols) + "], expected [" + std::to_string(expected) + ", " +
             std::to_string(n_vocab) + "]";
    });
  };

  token_batch batch{batch_tokens, batch_slots};
  auto logits = model.forward(batch, hooks);
  t_prefill_end = clock::now();
  const double prefill_seconds = std::chrono::duration<double>(t_prefill_end - t_start).count();
  check_rows(logits, n_req);
  for (std::size_t i = 0; i < n_req; ++i) {
    results[i].prefill_seconds = prefill_seconds;
    advance(i, logits.row_span(static_cast<std::int64_t>(i)));
  }

  for (;;) {
    batch_tokens.clear();
    batch_slots.clear();
    std::size_t rows = 0;
    for (std::size_t i = 0; i < n_req; ++i) {
      if (!states[i].running) continue;
      const auto &h = states[i].history;
      batch_tokens.push_back(h.back());
      batch_slots.push_back({static_cast<std::int32_t>(i), static_cast<std::int32_t>(h.size() - 1), true});
      row_request[rows++] = i;
    }
    if (rows == 0) break;
    batch = {batch_tokens, batch_slots};
    logits = model.forward(batch, hooks);
    check_rows(logits, rows);
    for (std::size_t r = 0; r < rows; ++r) advance(row_request[r], logits.row_span(static_cast<std::int64_t>(r)));
  }
  return results;
}

//! generate() without streaming.
template <model_backend Backend, vocabulary Vocab, hook_set Hooks>
std::vector<generation_result> generate(Backend &model, const Vocab &vocab,
                                        std::span<const generation_request> requests, Hooks &hooks) {
  return generate(model, vocab, requests, hooks, no_streaming{});
}

//! generate() without hooks or streaming.
template <model_backend Backend, vocabulary Vocab>
std::vector<generation_result> generate(Backend &model, const Vocab &vocab,
                                        std::span<const generation_request> requests) {
  no_hooks none;
  return generate(model, vocab, requests, none, no_streaming{});
}

//! One request, without hooks or streaming.
template <model_backend Backend, vocabulary Vocab>
generation_result generate(Backend &model, const Vocab &vocab, const generation_request &request) {
  no_hooks none;
  return std::move(generate(model, vocab, std::span(&request, 1), none, no_streaming{})[0]);
}

DMS_NAMESPACE_END
