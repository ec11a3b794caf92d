# `dms steer` end to end on the real model (scripts/fetch-model): calibrate a bundle, generate under
# DMS with per-token scores, score prompts, export a control vector, evaluate and write the report.
# Settings are cut down for time (no diversity labels, 4 patching pairs, 6 held-out passages); the
# demo (scripts/demo) runs the full calibration. Run by ctest:
#   cmake -DDMS=<dms binary> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch> -P cli_steer.cmake
include(${CMAKE_CURRENT_LIST_DIR}/cli_common.cmake)

run_dms_streams(out err rc steer --help)
expect("rc EQUAL 0 AND out MATCHES \"dms steer calibrate.*dms steer export-cvec\"" "steer --help: ${out}")
run_dms_streams(out err rc steer frobnicate)
expect("rc EQUAL 2 AND err MATCHES \"unknown command 'dms steer frobnicate'\"" "unknown subcommand: ${err}")
run_dms_streams(out err rc steer generate --bundle ${WORK_DIR}/missing.dms --prompt x)
expect("NOT rc EQUAL 0 AND err MATCHES \"missing.dms\"" "missing bundle: ${err}")
# Optional flags stay optional: without --probe-data calibrate gets as far as opening the model.
run_dms_streams(out err rc steer calibrate -m ${WORK_DIR}/missing.gguf -o ${WORK_DIR}/x.dms)
expect("rc EQUAL 1 AND err MATCHES \"missing.gguf\"" "calibrate without --probe-data: ${err}")

dms_test_model(model)
if(NOT model)
  return()
endif()
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(bundle ${WORK_DIR}/smollm2.dms)
set(common --threads 2)

run_dms_streams(out err rc steer calibrate -m ${model} -o ${bundle} --no-diversity --pairs 4
                --probe-data ${WORK_DIR}/probe.npz ${common} -q)
expect("rc EQUAL 0" "calibrate exited ${rc}: ${err}")
expect("EXISTS \"${bundle}\"" "no bundle written")
expect("EXISTS \"${WORK_DIR}/probe.npz\"" "no probe data written")
expect("out MATCHES \"labels: [0-9]+ of [0-9]+ candidate passages recited\"" "calibrate summary: ${out}")
string(REGEX MATCH "held-out AUC ([0-9.]+)" _ "${out}")
expect("CMAKE_MATCH_1 GREATER 0.8" "probe AUC ${CMAKE_MATCH_1}: ${out}")

# generate --json: per-token scores; a recited sequence scores higher under the probe than prose.
run_dms_streams(out err rc steer generate -b ${bundle} -p "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11," -n 8 --policy dms --json ${common})
expect("rc EQUAL 0" "generate exited ${rc}: ${err}")
string(JSON n LENGTH "${out}" generated_tokens)
string(JSON policy GET "${out}" policy)
string(JSON score GET "${out}" generated_tokens 0 score)
expect("n EQUAL 8 AND policy STREQUAL dms" "generate: ${out}")
expect("score GREATER_EQUAL 0 AND score LESS_EQUAL 1" "score ${score}")

file(WRITE ${WORK_DIR}/prompts.txt "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday,\nMy neighbour painted her fence a colour I had never seen before, and\n")
run_dms_streams(out err rc steer score -b ${bundle} -f ${WORK_DIR}/prompts.txt --json ${common})
expect("rc EQUAL 0" "score exited ${rc}: ${err}")
string(JSON recited GET "${out}" 0 last_score)
string(JSON novel GET "${out}" 1 last_score)
expect("recited GREATER novel" "last-token memorization score: sequence ${recited}, novel sentence ${novel}")

run_dms_streams(out err rc steer export-cvec -b ${bundle} -o ${WORK_DIR}/cvec.gguf)
expect("rc EQUAL 0 AND out MATCHES \"direction\\\\.[0-9]+\"" "export-cvec: ${out} ${err}")
run_dms_streams(out err rc inspect ${WORK_DIR}/cvec.gguf)
expect("rc EQUAL 0 AND out MATCHES \"controlvector\"" "inspect cvec: ${out} ${err}")

run_dms_streams(out err rc steer eval -b ${bundle} -r ${WORK_DIR}/report.html --max-passages 6 --alphas 1.4 --json ${common} -q)
expect("rc EQUAL 0" "eval exited ${rc}: ${err}")
string(JSON n_results LENGTH "${out}" results)
expect("n_results EQUAL 4" "eval rows (none, constant, dms, conditional): ${out}")
string(JSON kl_constant GET "${out}" results 1 mean_kl)
string(JSON kl_dms GET "${out}" results 2 mean_kl)
expect("kl_constant GREATER kl_dms" "KL on neutral prompts: constant ${kl_constant}, dms ${kl_dms}")
file(READ ${WORK_DIR}/report.html html)
string(REGEX MATCHALL "<svg" svgs "${html}")
list(LENGTH svgs n_svg)
expect("n_svg EQUAL 3" "report has ${n_svg} plots")
