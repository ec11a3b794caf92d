# `dms generate` as a user meets it, on the real model (scripts/fetch-model). Run by ctest:
#   cmake -DDMS=<dms binary> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch> -P cli_generate.cmake
# Without the model it prints "SKIPPED: ..." (ctest's SKIP_REGULAR_EXPRESSION makes it a skip).
include(${CMAKE_CURRENT_LIST_DIR}/cli_common.cmake)

dms_test_model(model)
if(NOT model)
  return()
endif()
set(common --model ${model} --threads 2 --ctx 256)

# --json, greedy: one parseable object; the same ids on a second run.
run_dms_streams(out err rc generate ${common} --prompt "The capital of France is" --temp 0 -n 16 --json)
expect("rc EQUAL 0" "generate --json exited ${rc}: ${err}")
string(JSON n_prompt GET "${out}" prompt_tokens)
string(JSON n_gen GET "${out}" generated_tokens)
string(JSON ids GET "${out}" generated_ids)
string(JSON text GET "${out}" text)
string(JSON stop GET "${out}" stop_reason)
string(JSON decode_tps GET "${out}" decode_tokens_per_second)
expect("n_prompt EQUAL 5" "prompt_tokens: ${n_prompt}")
expect("n_gen EQUAL 16 AND stop STREQUAL max_tokens" "generated ${n_gen}, stop ${stop}")
expect("text MATCHES \"Paris\"" "greedy continuation: '${text}'")
expect("decode_tps GREATER 0" "decode speed ${decode_tps}")
run_dms_streams(out2 err2 rc generate ${common} --prompt "The capital of France is" --temp 0 -n 16 --json)
string(JSON ids2 GET "${out2}" generated_ids)
expect("ids STREQUAL ids2" "greedy runs differ:\n${ids}\n${ids2}")

# Streaming: stdout is the text (plus a final newline), the summary goes to stderr.
run_dms_streams(streamed err rc generate ${common} --prompt "The capital of France is" --temp 0 -n 16)
expect("rc EQUAL 0" "generate exited ${rc}: ${err}")
expect("streamed STREQUAL \"${text}\n\"" "streamed text '${streamed}' differs from the JSON text '${text}'")
expect("err MATCHES \"prompt 5 tokens .* generated 16 tokens .* stop: max_tokens\"" "summary: ${err}")

# --chat: the template's special tokens are tokens; the answer ends the turn itself.
run_dms_streams(out err rc generate ${common} --chat --system "You are a helpful assistant."
        --prompt "What is the capital of France?" --temp 0 -n 96 --json)
expect("rc EQUAL 0" "generate --chat exited ${rc}: ${err}")
string(JSON first GET "${out}" prompt_ids 0)
string(JSON text GET "${out}" text)
string(JSON stop GET "${out}" stop_reason)
expect("first EQUAL 1" "chat prompt does not start with <|im_start|> (id 1): ${first}")
expect("stop STREQUAL eog AND text MATCHES \"Paris\"" "chat answer (${stop}): '${text}'")

# Seeded sampling: the same seed, the same text.
run_dms_streams(a err rc generate ${common} --prompt "Once upon a time" --seed 11 --temp 1.1 -n 24 --json)
run_dms_streams(b err rc generate ${common} --prompt "Once upon a time" --seed 11 --temp 1.1 -n 24 --json)
string(JSON a GET "${a}" generated_ids)
string(JSON b GET "${b}" generated_ids)
expect("a STREQUAL b" "seeded runs differ")

# Mistakes: one clear line and exit 2 (usage) before anything loads, or 1/2 from the library.
run_dms_streams(out err rc generate ${common} --prompt "x" --top-p 2)
expect("rc EQUAL 2 AND err MATCHES \"top_p must be in .0, 1. .1 = off., got 2[^.0-9]\"" "bad --top-p (${rc}): ${err}")
run_dms_streams(out err rc generate ${common} --prompt "x" --temp hot)
expect("rc EQUAL 2 AND err MATCHES \"--temp expects a number, got 'hot'\"" "bad --temp (${rc}): ${err}")
run_dms_streams(out err rc generate --model ${model} --ctx 4 --prompt "one two three four five six seven")
expect("rc EQUAL 2 AND err MATCHES \"the prompt has [0-9]+ tokens, more than the context of 4\"" "long prompt (${rc}): ${err}")
run_dms_streams(out err rc generate --prompt "x")
expect("rc EQUAL 2 AND err MATCHES \"--model is required\"" "missing --model (${rc}): ${err}")
run_dms_streams(out err rc generate --model ${SOURCE_DIR}/no-such-model.gguf --prompt "x")
expect("NOT rc EQUAL 0 AND err MATCHES \"no-such-model.gguf\"" "missing file (${rc}): ${err}")
message("dms generate: all checks passed")
