# `dms tokenize` / `dms detokenize` as a user meets them: --help always, the real model when
# scripts/fetch-model can provide it (else "SKIPPED: ..."). Run by ctest:
#   cmake -DDMS=<dms binary> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch> -P cli_tokenize.cmake
function(run_dms out_var rc_var input)
  execute_process(COMMAND ${DMS} ${ARGN} INPUT_FILE ${input} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  set(${out_var} "${out}${err}" PARENT_SCOPE)
  set(${rc_var} "${rc}" PARENT_SCOPE)
endfunction()
include(${CMAKE_CURRENT_LIST_DIR}/cli_common.cmake)

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
file(WRITE ${WORK_DIR}/empty.txt "")

run_dms(out rc ${WORK_DIR}/empty.txt tokenize --help)
expect("rc EQUAL 0 AND out MATCHES \"Usage: dms tokenize.*--model MODEL.*--no-bos.*--special.*--pieces\"" "tokenize --help: ${out}")
run_dms(out rc ${WORK_DIR}/empty.txt detokenize --help)
expect("rc EQUAL 0 AND out MATCHES \"Usage: dms detokenize.*--model MODEL.*--special\"" "detokenize --help: ${out}")
run_dms(out rc ${WORK_DIR}/empty.txt tokenize)
expect("rc EQUAL 2 AND out MATCHES \"--model is required\"" "tokenize without --model: ${out}")
run_dms(out rc ${WORK_DIR}/empty.txt tokenize --model ${WORK_DIR}/no-such.gguf)
expect("NOT rc EQUAL 0 AND out MATCHES \"no-such.gguf\"" "missing model file: ${out}")

dms_test_model(model)
if(NOT model)
  return()
endif()

# Known ids (llama.cpp gives the same): "Hello world" -> 19556 905.
file(WRITE ${WORK_DIR}/hello.txt "Hello world")
run_dms(out rc ${WORK_DIR}/hello.txt tokenize --model ${model})
expect("rc EQUAL 0 AND out STREQUAL \"19556 905\n\"" "tokenize Hello world: '${out}'")
run_dms(out rc ${WORK_DIR}/hello.txt tokenize --model ${model} --pieces)
expect("rc EQUAL 0 AND out STREQUAL \"19556\tHello\n905\t world\n\"" "tokenize --pieces: '${out}'")

# Special tokens: parsed only with --special.
file(WRITE ${WORK_DIR}/chat.txt "<|im_start|>user\nHi 12345<|im_end|>")
run_dms(out rc ${WORK_DIR}/chat.txt tokenize --model ${model} --special)
expect("rc EQUAL 0 AND out STREQUAL \"1 4093 198 26843 216 33 34 35 36 37 2\n\"" "tokenize --special: '${out}'")
run_dms(out rc ${WORK_DIR}/chat.txt tokenize --model ${model})
expect("rc EQUAL 0 AND NOT out MATCHES \"^1 \"" "tokenize without --special parsed a special token: '${out}'")

# Round trip through detokenize, control tokens rendered only with --special.
file(WRITE ${WORK_DIR}/ids.txt "1 4093 198 26843 216 33 34 35 36 37 2\n")
run_dms(out rc ${WORK_DIR}/ids.txt detokenize --model ${model} --special)
expect("rc EQUAL 0 AND out STREQUAL \"<|im_start|>user\nHi 12345<|im_end|>\"" "detokenize --special: '${out}'")
run_dms(out rc ${WORK_DIR}/ids.txt detokenize --model ${model})
expect("rc EQUAL 0 AND out STREQUAL \"user\nHi 12345\"" "detokenize: '${out}'")
file(WRITE ${WORK_DIR}/bad.txt "19556 abc")
run_dms(out rc ${WORK_DIR}/bad.txt detokenize --model ${model})
expect("rc EQUAL 2 AND out MATCHES \"'abc' on stdin is not a token id\"" "bad id text: ${out}")
file(WRITE ${WORK_DIR}/big.txt "99999999")
run_dms(out rc ${WORK_DIR}/big.txt detokenize --model ${model})
expect("NOT rc EQUAL 0 AND out MATCHES \"token id 99999999 is out of range\"" "out-of-range id: ${out}")
message("dms tokenize/detokenize: all checks passed")
