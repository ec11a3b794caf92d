// Chat templates: family detection and formatting, with the templates and expected outputs of
// llama.cpp's tests/test-chat-template.cpp (its `expected_output`, the non-Jinja formatter).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <dms/tokenizer/chat_template.hpp>

using dms::chat_message;

namespace {
const std::vector<chat_message> conversation{
    {"system", "You are a helpful assistant"}, {"user", "Hello"},       {"assistant", "Hi there"},
    {"user", "Who are you"},                   {"assistant", "   I am an assistant   "}, {"user", "Another question"},
};
std::string apply(const std::string &tmpl, bool add_ass = true) {
  return dms::apply_chat_template(tmpl, conversation, add_ass);
}
} // namespace

TEST_CASE("chat template: ChatML (SmolLM2, OpenHermes)", "[tokenizer][chat]") {
  const std::string tmpl =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
      "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  CHECK(apply(tmpl) ==
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
        "Hi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   "
        "<|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n");
  // Without the generation prompt the text ends after the last message.
  const std::vector<chat_message> one{{"user", "Hi"}};
  CHECK(dms::apply_chat_template(tmpl, one, false) == "<|im_start|>user\nHi<|im_end|>\n");
  CHECK(dms::apply_chat_template("chatml", one, true) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(dms::detect_chat_family(tmpl) == dms::chat_family::chatml);
}

TEST_CASE("chat template: Llama-3", "[tokenizer][chat]") {
  const std::string tmpl =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
      "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% "
      "set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ "
      "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}";
  CHECK(apply(tmpl) ==
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_"
        "header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_"
        "id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an "
        "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>"
        "assistant<|end_header_id|>\n\n");
}

TEST_CASE("chat template: Gemma merges the system message into the first user turn", "[tokenizer][chat]") {
  const std::string tmpl =
      "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message "
      "in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles "
      "must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set "
      "role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
      "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt "
      "%}{{'<start_of_turn>model\\n'}}{% endif %}";
  CHECK(apply(tmpl) ==
        "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi "
        "there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an "
        "assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n");
}

TEST_CASE("chat template: Llama-2 family variants", "[tokenizer][chat]") {
  // mistralai/Mistral-7B-Instruct-v0.2: no <<SYS>>.
  const std::string mistral =
      "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
      "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
      "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
      "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are "
      "supported!') }}{% endif %}{% endfor %}";
  CHECK(apply(mistral) == "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am "
                          "an assistant   </s>[INST] Another question [/INST]");
  // TheBloke/FusionNet_34Bx2_MoE-AWQ: <<SYS>> and a BOS inside the history.
  const std::string fusion =
      "{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' -%}\n{%- if idx > 1 -%}\n{{- "
      "bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}\n{%- else -%}\n{{- messages[idx]['content'] + ' "
      "[/INST]' -}}\n{%- endif -%}\n{% elif messages[idx]['role'] == 'system' %}\n{{- '[INST] <<SYS>>\\n' + "
      "messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n{%- elif messages[idx]['role'] == 'assistant' -%}\n{{- ' '  + "
      "messages[idx]['content'] + ' ' + eos_token -}}\n{% endif %}\n{% endfor %}";
  CHECK(apply(fusion) == "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] Who "
                         "are you [/INST]   I am an assistant   </s><s>[INST] Another question [/INST]");
  // bofenghuang/vigogne-2-70b-chat: content.strip().
  CHECK(dms::detect_chat_family("{{ '[INST] ' + content.strip() + ' [/INST]' }}<<SYS>>") == dms::chat_family::llama2_sys_strip);
  CHECK(dms::format_chat(dms::chat_family::llama2_sys_strip, conversation, true) ==
        "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]I am "
        "an assistant</s>[INST] Another question [/INST]");
}

TEST_CASE("chat template: Phi-3", "[tokenizer][chat]") {
  const std::string tmpl =
      "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + "
      "'<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";
  CHECK(apply(tmpl) == "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
                       "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
                       "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n");
}

TEST_CASE("chat template: unknown families are errors naming the known ones", "[tokenizer][chat][errors]") {
  CHECK_THROWS_WITH(apply("{{ messages }} USER: x ASSISTANT: y"),
                    Catch::Contains("chat template not recognised") && Catch::Contains("chatml") && Catch::Contains("llama3"));
  CHECK_THROWS_WITH(apply("[gMASK]<sop>{% for item in messages %}"), Catch::Contains("chatglm4"));
  CHECK_THROWS_WITH(apply(""), Catch::Contains("empty chat template"));
}
