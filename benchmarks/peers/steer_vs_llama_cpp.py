"""Steering speed of dms against llama.cpp with a control vector, and probe fitting against
scikit-learn, on SmolLM2-135M-Instruct, in one run.

    steer_vs_llama_cpp.py --dms DMS_CLI --bench DMS_BENCH_CPU_STEER [--model M.gguf] [--work DIR]
                          [--threads 2] [--repeats 2] [--reuse] [--probe-only]

1. Calibration: `dms steer calibrate` on the model (no diversity labels, as scripts/demo), timed;
   it also writes the probe's training rows (--probe-data).
2. Decode tokens/s, for 1 and 2 threads, alternating dms and llama.cpp runs: dms with no policy,
   constant, DMS and conditional (the bundle's vector and alpha); llama.cpp (llama-cpp-python, the
   same GGUF) unsteered and with the bundle's vector exported by `dms steer export-cvec --scale
   alpha` and applied at its one layer (a constant policy, llama.cpp's control vectors). dms's
   DMS overhead is also measured step by step (BM_decode_paired: unsteered and steered steps
   alternating in one process).
3. Probe fitting on the calibration rows: dms's fit_logistic (Newton, tol 1e-8 as calibrate
   uses, and tol 1e-4, scikit-learn's default on the same quantity) against
   StandardScaler + LogisticRegression(lbfgs, C = 1, class_weight = balanced, its default tol
   1e-4), both timed on the training rows, both scored on the sweep's held-out rows.
Prints markdown tables for BENCHMARKS.md. --reuse keeps an existing bundle in --work (no
calibration timing); --probe-only runs step 3 alone. Run it on an otherwise idle machine.
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

import numpy as np

N_PROMPT, N_DECODE, N_CTX = 64, 128, 1024


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def calibrate(dms, model, work, threads):
    bundle, probe = os.path.join(work, "smollm2.dms"), os.path.join(work, "probe.npz")
    t0 = time.perf_counter()
    out = run([dms, "steer", "calibrate", "-m", model, "-o", bundle, "--probe-data", probe, "--no-diversity",
               "-t", str(threads), "-q"]).stdout
    wall = time.perf_counter() - t0
    return bundle, probe, wall, out


def bench(binary, model, bundle, probe, flt, min_time):
    out = run([binary, f"--benchmark_filter={flt}", "--benchmark_format=json", f"--benchmark_min_time={min_time}"],
              env={**os.environ, "DMS_MODEL": model, "DMS_BUNDLE": bundle, "DMS_PROBE_DATA": probe}).stdout
    return {b["name"]: b for b in json.loads(out)["benchmarks"]}


def bundle_alpha(path):
    """The bundle's DMS alpha, from its safetensors header (__metadata__["dms.bundle"])."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return float(json.loads(header["__metadata__"]["dms.bundle"])["steering"]["alpha"])


def cvec_layer_and_buffer(cvec_path, n_embd):
    import gguf
    r = gguf.GGUFReader(cvec_path)
    dirs = {int(t.name.split(".")[1]): np.array(t.data, dtype=np.float32) for t in r.tensors}
    (layer, v), = dirs.items()
    buf = np.zeros(layer * n_embd, dtype=np.float32)  # layer 1 first, as llama.cpp's loader lays it out
    buf[(layer - 1) * n_embd:] = v
    return layer, buf


def llama_cpp_decode(model, threads, cvec_path):
    """Decode tokens/s unsteered and with the control vector (same context, same tokens)."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    n_vocab, n_embd = llm.n_vocab(), llm.n_embd()
    rng = np.random.default_rng(7)
    prompt = [int(x) for x in rng.integers(0, n_vocab, size=N_PROMPT)]
    steps = [int(x) for x in rng.integers(0, n_vocab, size=N_DECODE)]
    apply = getattr(llama_cpp, "llama_set_adapter_cvec", None) or getattr(llama_cpp, "llama_apply_adapter_cvec")
    layer, buf = cvec_layer_and_buffer(cvec_path, n_embd)
    ctx = llm._ctx.ctx
    rates = {}
    for mode in ("plain", "cvec"):
        if mode == "cvec":  # only the vector's own layer, as dms steers one layer
            rc = apply(ctx, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), buf.size, n_embd, layer, layer)
            assert rc == 0, f"llama.cpp refused the control vector ({rc})"
        llm.reset()
        llm.eval(prompt)
        t0 = time.perf_counter()
        for tok in steps:
            llm.eval([tok])
        rates[mode] = N_DECODE / (time.perf_counter() - t0)
    del llm
    return rates["plain"], rates["cvec"]


def sklearn_fit(probe_path, repeats):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.preprocessing import StandardScaler
    z = np.load(probe_path)
    x, y, held = z["x"].astype(np.float32), z["y"].astype(int), z["heldout"] != 0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        scaler = StandardScaler().fit(x[~held])
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10000).fit(scaler.transform(x[~held]), y[~held])
        best = min(best, time.perf_counter() - t0)
    p = clf.predict_proba(scaler.transform(x[held]))[:, 1]
    return {"seconds": best, "accuracy": accuracy_score(y[held], p >= 0.5), "auc": roc_auc_score(y[held], p),
            "iterations": int(clf.n_iter_[0]), "train_rows": int((~held).sum()), "features": x.shape[1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dms", required=True, help="the dms CLI (Release build)")
    ap.add_argument("--bench", required=True, help="dms_bench_cpu_steer (Release build)")
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/dms/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--work", default="/tmp/dms-steer-bench")
    ap.add_argument("--threads", type=int, default=2, help="threads of the calibration")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep an existing bundle and probe data in --work")
    ap.add_argument("--probe-only", action="store_true", help="only the probe fit against scikit-learn")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    import llama_cpp
    import sklearn
    print(f"model {os.path.basename(a.model)}, llama-cpp-python {llama_cpp.__version__}, scikit-learn "
          f"{sklearn.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start\n")

    bundle, probe = os.path.join(a.work, "smollm2.dms"), os.path.join(a.work, "probe.npz")
    if not (a.reuse and os.path.exists(bundle) and os.path.exists(probe)):
        bundle, probe, wall, out = calibrate(a.dms, a.model, a.work, a.threads)
        print(f"calibration ({a.threads} threads, no diversity labels): {wall:.1f} s wall\n")
        print("\n".join("    " + line for line in out.strip().splitlines()) + "\n")
    if not a.probe_only:
        decode_tables(a, bundle, probe)
    probe_table(a, bundle, probe)


def decode_tables(a, bundle, probe):
    alpha = bundle_alpha(bundle)
    cvec = os.path.join(a.work, "cvec.gguf")
    run([a.dms, "steer", "export-cvec", "-b", bundle, "-o", cvec, "--scale", str(alpha)])

    names = {0: "none", 1: "constant", 2: "dms", 3: "conditional"}
    in_policy = {}
    print("| threads | dms: none | constant | DMS | conditional | DMS overhead (paired steps) "
          "| llama.cpp: none | control vector | dms none / llama.cpp none | dms DMS / llama.cpp cvec |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for threads in (1, 2):
        best = {k: 0.0 for k in names.values()}
        paired, lp, lc = [], 0.0, 0.0
        inside = {k: [] for k in (1, 2, 3, 4)}
        for _ in range(a.repeats):
            r = bench(a.bench, a.model, bundle, probe, f"BM_decode_(policy|paired)/[0-9]/{threads}/", 2)
            for k, name in names.items():
                best[name] = max(best[name], r[f"BM_decode_policy/{k}/{threads}/real_time"]["tokens/s"])
            paired.append(r[f"BM_decode_paired/2/{threads}/real_time"]["overhead_pct"])
            for k in (1, 2, 3, 4):
                inside[k].append(r[f"BM_decode_paired/{k}/{threads}/real_time"]["in_policy_pct"])
            p, c = llama_cpp_decode(a.model, threads, cvec)
            lp, lc = max(lp, p), max(lc, c)
        print(f"| {threads} | {best['none']:.1f} | {best['constant']:.1f} | {best['dms']:.1f} | "
              f"{best['conditional']:.1f} | {', '.join(f'{x:+.2f}%' for x in paired)} | {lp:.1f} | {lc:.1f} | "
              f"{best['none'] / lp:.2f}x | {best['dms'] / lc:.2f}x |")
        in_policy[threads] = inside
    print("\nDMS overhead (paired steps): median steered step / median unsteered step - 1, alternating steps, "
          "per repeat.\n")
    print("| threads | time inside the hooks, % of a decode step: constant | DMS | conditional | one read-only hook |")
    print("|---|---|---|---|---|")
    for threads, inside in in_policy.items():
        print(f"| {threads} | " + " | ".join(f"{max(inside[k]):.4f}%" for k in (1, 2, 3, 4)) + " |")
    print("(largest of the repeats)\n")


def probe_table(a, bundle, probe):
    runs = bench(a.bench, a.model, bundle, probe, "BM_probe_fit/[12]/[48]", 1)
    sk = sklearn_fit(probe, max(3, a.repeats))
    print("| probe fit | stops at max gradient | train rows x features | time (ms) | iterations | held-out accuracy "
          "| held-out AUC |")
    print("|---|---|---|---|---|---|---|")
    dms_s = {}
    for t in (8, 4):
        for threads in (1, 2):
            r = runs[f"BM_probe_fit/{threads}/{t}/real_time"]
            dms_s[threads, t] = r["real_time"] / 1e3  # ms -> s
            print(f"| dms fit_logistic (Newton), {threads} thread{'s' if threads > 1 else ''} | 1e-{t} | "
                  f"{int(r['train_rows'])} x {int(r['features'])} | {1e3 * dms_s[threads, t]:.2f} | "
                  f"{int(r['iterations'])} | {r['heldout_accuracy']:.4f} | {r['heldout_auc']:.4f} |")
    print(f"| scikit-learn (StandardScaler + lbfgs) | 1e-4 | {sk['train_rows']} x {sk['features']} | "
          f"{1e3 * sk['seconds']:.2f} | {sk['iterations']} | {sk['accuracy']:.4f} | {sk['auc']:.4f} |")
    for t, what in ((8, "dms's default tolerance, 1e-8"), (4, "scikit-learn's tolerance, 1e-4, for both")):
        print(f"\nscikit-learn / dms fit time at {what}: {sk['seconds'] / dms_s[1, t]:.1f}x (1 thread), "
              f"{sk['seconds'] / dms_s[2, t]:.1f}x (2 threads)")


if __name__ == "__main__":
    main()
