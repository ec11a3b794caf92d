# Shared by the cli_*.cmake scripts (include()d; run with cmake -P).
#
# expect("<if() condition>" message): the condition is re-parsed, so it may hold quoted regexes.
# (A function, not a macro: a macro would re-parse the escapes once more.)
function(expect cond message)
  cmake_language(EVAL CODE "if(NOT (${cond}))\n  message(FATAL_ERROR [==[FAIL: ${message}]==])\nendif()")
endfunction()

# dms_test_model(var): the real model ($DMS_MODEL, else scripts/fetch-model), or "" after printing
# "SKIPPED: ..." (cmake -P cannot choose its exit code: ctest's SKIP_REGULAR_EXPRESSION makes the
# message a skip). The caller returns when var is empty.
function(dms_test_model var)
  if(DEFINED ENV{DMS_MODEL})
    set(${var} "$ENV{DMS_MODEL}" PARENT_SCOPE)
    return()
  endif()
  execute_process(COMMAND ${SOURCE_DIR}/scripts/fetch-model OUTPUT_VARIABLE model RESULT_VARIABLE rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0 OR NOT EXISTS "${model}")
    message("SKIPPED: the real model is unavailable (scripts/fetch-model failed)")
    set(model "")
  endif()
  set(${var} "${model}" PARENT_SCOPE)
endfunction()

# run_dms_streams(out err rc ARGS...): runs dms with ARGS; stdout, stderr and the exit code.
function(run_dms_streams out_var err_var rc_var)
  execute_process(COMMAND ${DMS} ${ARGN} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  set(${out_var} "${out}" PARENT_SCOPE)
  set(${err_var} "${err}" PARENT_SCOPE)
  set(${rc_var} "${rc}" PARENT_SCOPE)
endfunction()
