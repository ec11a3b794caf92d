// dms/tokenizer/chat_template.hpp: turning a conversation into the prompt text a chat model was
// trained on, as llama.cpp's llm_chat_apply_template does.
//
// llama.cpp's built-in formatter does not run Jinja: it recognises the template's family from
// marker strings in `tokenizer.chat_template` (or from a family name such as "chatml") and writes
// that family's format by hand. dms does the same for the families below, with the same
// detection order and the same output byte for byte (expected strings in tests/tokenizer come
// from llama.cpp's tests/test-chat-template.cpp):
//   chatml (<|im_start|>, SmolLM2, Qwen), phi4 (<|im_sep|>), smolvlm (<end_of_utterance>),
//   mistral-v7 ([SYSTEM_PROMPT]), mistral-v1/v3/v3-tekken, llama2 (+ -sys, -sys-bos, -sys-strip)
//   ([INST]), phi3 (<|assistant|> + <|end|>), falcon3, zephyr, gemma (<start_of_turn>),
//   llama3 (<|start_header_id|>).
// A template of another family is an error that names the families dms knows. The BOS token is
// never written: tokenizing with add_special adds it when the model wants one.
//
// @code
//   std::vector<dms::chat_message> chat{{"system", "Be brief."}, {"user", "Hi"}};
//   std::string prompt = dms::apply_chat_template(tok.chat_template(), chat, true);
//   // "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
// @endcode
#pragma once

#include <cctype>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

struct chat_message {
  std::string role, content;
};

//! The families apply_chat_template formats (a subset of llama.cpp's llm_chat_template).
enum class chat_family {
  chatml, phi4, smolvlm, mistral_v7, mistral_v7_tekken, mistral_v1, mistral_v3, mistral_v3_tekken,
  llama2, llama2_sys, llama2_sys_bos, llama2_sys_strip, phi3, falcon3, zephyr, gemma, llama3,
};

namespace detail {
struct chat_family_name {
  std::string_view name;
  chat_family family;
};
inline constexpr chat_family_name chat_family_names[] = {
    {"chatml", chat_family::chatml},
    {"phi4", chat_family::phi4},
    {"smolvlm", chat_family::smolvlm},
    {"mistral-v7", chat_family::mistral_v7},
    {"mistral-v7-tekken", chat_family::mistral_v7_tekken},
    {"mistral-v1", chat_family::mistral_v1},
    {"mistral-v3", chat_family::mistral_v3},
    {"mistral-v3-tekken", chat_family::mistral_v3_tekken},
    {"llama2", chat_family::llama2},
    {"llama2-sys", chat_family::llama2_sys},
    {"llama2-sys-bos", chat_family::llama2_sys_bos},
    {"llama2-sys-strip", chat_family::llama2_sys_strip},
    {"phi3", chat_family::phi3},
    {"falcon3", chat_family::falcon3},
    {"zephyr", chat_family::zephyr},
    {"gemma", chat_family::gemma},
    {"llama3", chat_family::llama3},
};

// llama-chat.cpp's trim(): ASCII isspace at both ends.
inline std::string trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// Families llama.cpp detects between the ones dms formats; a template of theirs must not fall
// through to a later, wrong family.
inline std::optional<std::string_view> unsupported_family(std::string_view t) {
  const auto has = [t](std::string_view s) { return t.find(s) != std::string_view::npos; };
  if (has("[gMASK]<sop>")) return "chatglm4";
  if ((has("<|assistant|>") && has("<|user|>") && !has("</s>")) ||
      (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")))
    return "glmedge";
  if (has("bos_token + message['role']")) return "monarch";
  return std::nullopt;
}
} // namespace detail

//! "chatml, phi4, ..." for messages.
inline std::string known_chat_families() {
  std::string s;
  for (const auto &n : detail::chat_family_names) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

//! The family of `template_text` (a Jinja template or a family name), as llm_chat_detect_template
//! decides it; nullopt when it is none of the families dms formats.
inline std::optional<chat_family> detect_chat_family(std::string_view t) {
  for (const auto &n : detail::chat_family_names)
    if (n.name == t) return n.family;
  const auto has = [t](std::string_view s) { return t.find(s) != std::string_view::npos; };
  if (has("<|im_start|>")) {
    if (has("<|im_sep|>")) return chat_family::phi4;
    if (has("<end_of_utterance>")) return chat_family::smolvlm;
    return chat_family::chatml;
  }
  if (t.rfind("mistral", 0) == 0 || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) return chat_family::mistral_v7;
    if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
      if (has(" [INST]")) return chat_family::mistral_v1;
      if (has("\"[INST]\"")) return chat_family::mistral_v3_tekken;
      return chat_family::mistral_v3;
    }
    if (has("content.strip()")) return chat_family::llama2_sys_strip;
    if (has("bos_token + '[INST]")) return chat_family::llama2_sys_bos;
    if (has("<<SYS>>")) return chat_family::llama2_sys;
    return chat_family::llama2;
  }
  if (has("<|assistant|>") && has("<|end|>")) return chat_family::phi3;
  if (has("[gMASK]<sop>")) return std::nullopt; // chatglm4
  if (has("<|assistant|>") && has("<|user|>")) {
    if (has("</s>")) return chat_family::falcon3;
    return std::nullopt; // glmedge
  }
  if (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")) return std::nullopt; // glmedge
  if (has("<|user|>") && has("<|endoftext|>")) return chat_family::zephyr;
  if (has("bos_token + message['role']")) return std::nullopt; // monarch
  if (has("<start_of_turn>")) return chat_family::gemma;
  // llama.cpp checks orion, openchat, vicuna, deepseek and command-r before llama3.
  if (has("'\\n\\nAssistant: ' + eos_token") || has("GPT4 Correct ") || (has("USER: ") && has("ASSISTANT: ")) ||
      (has("### Instruction:") && has("<|EOT|>")) || (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")))
    return std::nullopt;
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return chat_family::llama3;
  return std::nullopt;
}

//! The prompt for `messages` in the format of `template_text`'s family; with
//! `add_generation_prompt`, ends with the opening of an assistant turn (families that have one).
inline std::string format_chat(chat_family family, std::span<const chat_message> messages, bool add_generation_prompt) {
  using detail::trim;
  std::string s;
  switch (family) {
  case chat_family::chatml:
    for (const auto &m : messages) s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    if (add_generation_prompt) s += "<|im_start|>assistant\n";
    break;
  case chat_family::phi4:
    for (const auto &m : messages) s += "<|im_start|>" + m.role + "<|im_sep|>" + m.content + "<|im_end|>";
    if (add_generation_prompt) s += "<|im_start|>assistant<|im_sep|>";
    break;
  case chat_family::smolvlm:
    s += "<|im_start|>";
    for (const auto &m : messages) {
      if (m.role == "system") s += m.content + "\n\n";
      else if (m.role == "user") s += "User: " + m.content + "<end_of_utterance>\n";
      else s += "Assistant: " + m.content + "<end_of_utterance>\n";
    }
    if (add_generation_prompt) s += "Assistant:";
    break;
  case chat_family::mistral_v7:
  case chat_family::mistral_v7_tekken: {
    const std::string sp = family == chat_family::mistral_v7 ? " " : "";
    for (const auto &m : messages) {
      if (m.role == "system") s += "[SYSTEM_PROMPT]" + sp + m.content + "[/SYSTEM_PROMPT]";
      else if (m.role == "user") s += "[INST]" + sp + m.content + "[/INST]";
      else s += sp + m.content + "</s>";
    }
    break;
  }
  case chat_family::mistral_v1:
  case chat_family::mistral_v3:
  case chat_family::mistral_v3_tekken: {
    const std::string lead = family == chat_family::mistral_v1 ? " " : "";
    const std::string trail = family == chat_family::mistral_v3_tekken ? "" : " ";
    bool inside_turn = false;
    for (const auto &m : messages) {
      if (!inside_turn) {
        s += lead + "[INST]" + trail;
        inside_turn = true;
      }
      if (m.role == "system") {
        s += m.content + "\n\n";
      } else if (m.role == "user") {
        s += m.content + lead + "[/INST]";
      } else {
        s += trail + (family == chat_family::mistral_v3 ? trim(m.content) : m.content) + "</s>";
        inside_turn = false;
      }
    }
    break;
  }
  case chat_family::llama2:
  case chat_family::llama2_sys:
  case chat_family::llama2_sys_bos:
  case chat_family::llama2_sys_strip: {
    const bool system_supported = family != chat_family::llama2;
    const bool bos_inside = family == chat_family::llama2_sys_bos;
    const bool strip = family == chat_family::llama2_sys_strip;
    bool inside_turn = true; // the leading BOS is the tokenizer's
    s += "[INST] ";
    for (const auto &m : messages) {
      const std::string content = strip ? trim(m.content) : m.content;
      if (!inside_turn) {
        inside_turn = true;
        s += bos_inside ? "<s>[INST] " : "[INST] ";
      }
      if (m.role == "system") {
        s += system_supported ? "<<SYS>>\n" + content + "\n<</SYS>>\n\n" : content + "\n";
      } else if (m.role == "user") {
        s += content + " [/INST]";
      } else {
        s += content + "</s>";
        inside_turn = false;
      }
    }
    break;
  }
  case chat_family::phi3:
    for (const auto &m : messages) s += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
    if (add_generation_prompt) s += "<|assistant|>\n";
    break;
  case chat_family::falcon3:
    for (const auto &m : messages) s += "<|" + m.role + "|>\n" + m.content + "\n";
    if (add_generation_prompt) s += "<|assistant|>\n";
    break;
  case chat_family::zephyr:
    for (const auto &m : messages) s += "<|" + m.role + "|>\n" + m.content + "<|endoftext|>\n";
    if (add_generation_prompt) s += "<|assistant|>\n";
    break;
  case chat_family::gemma: {
    // Gemma has no system turn: the system text opens the next user turn.
    std::string system_prompt;
    for (const auto &m : messages) {
      if (m.role == "system") {
        system_prompt += trim(m.content);
        continue;
      }
      const std::string role = m.role == "assistant" ? "model" : m.role;
      s += "<start_of_turn>" + role + "\n";
      if (!system_prompt.empty() && role != "model") {
        s += system_prompt + "\n\n";
        system_prompt.clear();
      }
      s += trim(m.content) + "<end_of_turn>\n";
    }
    if (add_generation_prompt) s += "<start_of_turn>model\n";
    break;
  }
  case chat_family::llama3:
    for (const auto &m : messages)
      s += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
    if (add_generation_prompt) s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    break;
  }
  return s;
}

//! Detects the family of `template_text` and formats `messages` with it. Throws
//! errc::unsupported naming the known families when the template is of none of them.
inline std::string apply_chat_template(std::string_view template_text, std::span<const chat_message> messages,
                                       bool add_generation_prompt) {
  require(!template_text.empty(), errc::invalid_argument, [] {
    return "empty chat template (the model has no tokenizer.chat_template; pass a family name: " + known_chat_families() + ")";
  });
  const auto family = detect_chat_family(template_text);
  require(family.has_value(), errc::unsupported, [&] {
    std::string what = std::string(template_text.substr(0, 80));
    for (char &c : what)
      if (c == '\n') c = ' ';
    const auto other = detail::unsupported_family(template_text);
    return "chat template not recognised" + (other ? " (llama.cpp family '" + std::string(*other) + "')" : std::string()) +
           ": '" + what + (template_text.size() > 80 ? "...'" : "'") + "; dms formats these families: " +
           known_chat_families();
  });
  return format_chat(*family, messages, add_generation_prompt);
}

DMS_NAMESPACE_END
