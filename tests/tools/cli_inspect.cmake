# `dms inspect` as a user meets it, on the real model (scripts/fetch-model) and on broken copies
# of it. Run by ctest: cmake -DDMS=<dms binary> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch> -P cli_inspect.cmake
# Without the model it prints "SKIPPED: ..." (cmake -P cannot choose its exit code, so the skip is a
# message that ctest's SKIP_REGULAR_EXPRESSION turns into a skip.)
function(run_dms out_var rc_var)
  execute_process(COMMAND ${DMS} ${ARGN} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  set(${out_var} "${out}${err}" PARENT_SCOPE)
  set(${rc_var} "${rc}" PARENT_SCOPE)
endfunction()
# expect("<if() condition>" message): the condition is re-parsed, so it may hold quoted regexes.
include(${CMAKE_CURRENT_LIST_DIR}/cli_common.cmake)

dms_test_model(model)
if(NOT model)
  return()
endif()
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# Text: the summary line and a known tensor row.
run_dms(out rc inspect ${model})
expect("rc EQUAL 0" "inspect exited ${rc}: ${out}")
expect("out MATCHES \"gguf .*33 metadata keys, 272 tensors\"" "summary line missing:\n${out}")
expect("out MATCHES \"llama.block_count = 30\"" "metadata missing")
expect("out MATCHES \"blk.0.attn_q.weight +Q4_1 +\\\\[576, 576\\\\]\"" "tensor row missing")

# JSON: parseable, 272 tensors, shapes row-major.
run_dms(out rc inspect ${model} --json)
expect("rc EQUAL 0" "inspect --json exited ${rc}")
string(JSON n LENGTH "${out}" tensors)
expect("n EQUAL 272" "expected 272 tensors in JSON, got ${n}")
string(JSON name GET "${out}" tensors 0 name)
string(JSON rows GET "${out}" tensors 0 shape 0)
string(JSON vocab GET "${out}" metadata llama.vocab_size)
expect("name STREQUAL token_embd.weight AND rows EQUAL 49152 AND vocab EQUAL 49152" "JSON content: ${name} ${rows}")

# Dump: a Q4_1 matrix dequantized to a float32 .npy (128-byte header + 576*576*4 bytes).
run_dms(out rc inspect ${model} --dump blk.0.attn_q.weight --out ${WORK_DIR}/q.npy)
expect("rc EQUAL 0" "dump failed: ${out}")
file(SIZE ${WORK_DIR}/q.npy size)
expect("size EQUAL 1327232" "q.npy has ${size} bytes")
file(READ ${WORK_DIR}/q.npy head OFFSET 10 LIMIT 118)
expect("head MATCHES \"'descr': '<f4'.*'shape': \\\\(576, 576\\\\)\"" "npy header: ${head}")

# Bad input: a clear one-line error naming the file and a non-zero exit, nothing written.
execute_process(COMMAND head -c 1000 ${model} OUTPUT_FILE ${WORK_DIR}/truncated.gguf)
run_dms(out rc inspect ${WORK_DIR}/truncated.gguf)
expect("rc EQUAL 1" "truncated file: exit ${rc}")
expect("out MATCHES \"truncated.gguf: offset [0-9]+: invalid format\"" "truncated file message: ${out}")
file(WRITE ${WORK_DIR}/wrong.gguf "GGUX not a model at all")
run_dms(out rc inspect ${WORK_DIR}/wrong.gguf)
expect("NOT rc EQUAL 0" "garbage file accepted")
expect("out MATCHES \"wrong.gguf\"" "garbage file message does not name the file: ${out}")
run_dms(out rc inspect ${model} --dump no.such.tensor --out ${WORK_DIR}/x.npy)
expect("NOT rc EQUAL 0 AND out MATCHES \"no tensor named 'no.such.tensor'\"" "missing tensor: ${out}")
expect("NOT EXISTS ${WORK_DIR}/x.npy" "a failed dump left a file behind")
run_dms(out rc inspect ${model} --dump token_embd.weight)
expect("rc EQUAL 2 AND out MATCHES \"--dump needs --out\"" "--dump without --out: ${out}")
message("dms inspect: all checks passed")
