#!/usr/bin/env python3
"""Peer test: dms's safetensors, npy and npz readers and writers against Python's.

    safetensors_peer_check.py PROGRAM WORKDIR

PROGRAM is dms_safetensors_peer (safetensors_peer_check.cpp). The test
  1. runs `PROGRAM write WORKDIR` and checks, with safetensors (safetensors.numpy.load_file,
     safe_open, deserialize) and numpy (np.load), that every file dms wrote loads with identical
     values and metadata, including a sharded checkpoint and its index;
  2. writes files with safetensors (save_file, serialize_file with bf16) and numpy (np.save in
     several dtypes and orders, np.savez, np.savez_compressed), plus the Rust crate's
     serialization of exactly what dms wrote, and runs `PROGRAM check WORKDIR`, which reads them
     with dms and also compares bytes (dms's safetensors and .npy writers must reproduce the
     peers' bytes).
Exit status: 0 pass, 1 mismatch, 77 skipped (no peer venv; ctest's SKIP_RETURN_CODE).
It runs under the peer venv's Python (scripts/peers; DMS_PEERS_VENV, default
~/.cache/dms/peers-venv), re-executing itself there when started by another interpreter.
"""
import json
import os
import subprocess
import sys

SKIP = 77


def reexec_in_venv():
    venv = os.environ.get("DMS_PEERS_VENV", os.path.expanduser("~/.cache/dms/peers-venv"))
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if not os.access(python, os.X_OK):
        print(f"SKIPPED: no peer venv at {venv} (create it with scripts/peers)")
        sys.exit(SKIP)
    if os.environ.get("DMS_PEER_REEXEC"):
        print(f"SKIPPED: could not start the peer venv's Python at {python}")
        sys.exit(SKIP)
    os.environ["DMS_PEER_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


reexec_in_venv()
try:
    import numpy as np
    import safetensors
    import safetensors.numpy as stnp
except ImportError as e:
    print(f"SKIPPED: the peer venv cannot import numpy and safetensors ({e}); recreate it with scripts/peers")
    sys.exit(SKIP)

# The same table as in safetensors_peer_check.cpp: (name, safetensors dtype, shape, seed).
TENSORS = [
    ("model.embed_tokens.weight", "float32", (7, 5), 1),
    ("model.layers.0.self_attn.q_proj.weight", "bfloat16", (4, 6), 2),
    ("model.layers.0.mlp.down_proj.weight", "float16", (3, 5), 3),
    ("double", "float64", (5,), 4),
    ("ids", "int64", (2, 3), 5),
    ("i32", "int32", (4,), 6),
    ("i16", "int16", (3, 1), 7),
    ("i8", "int8", (9,), 8),
    ("u8", "uint8", (2, 2, 2), 9),
    ("mask", "bool", (5,), 10),
    ("scalar", "float32", (), 11),
    ("empty", "float32", (0, 3), 12),
]
NOTE = 'dms peer \u00e9 "quoted"'
failures = []


def expect(ok, what):
    if not ok:
        failures.append(what)
        print(f"MISMATCH: {what}")


def k_of(n, seed):
    i = np.arange(n, dtype=np.int64)
    return (37 * i + 11 * seed) % 255 - 127


def floats(shape, seed):
    n = int(np.prod(shape, dtype=np.int64))
    return (k_of(n, seed).astype(np.float32) / np.float32(16)).reshape(shape)


def array(dtype, shape, seed):
    """The tensor as numpy holds it; bf16 as its uint16 bits (values are exact in bf16)."""
    n = int(np.prod(shape, dtype=np.int64))
    k = k_of(n, seed)
    i = np.arange(n, dtype=np.int64)
    if dtype in ("float32", "float64", "float16"):
        a = floats(shape, seed).astype(dtype)
    elif dtype == "bfloat16":
        a = (floats(shape, seed).view(np.uint32) >> 16).astype(np.uint16)
    elif dtype == "int64":
        a = k * (1 << 33)
    elif dtype == "int32":
        a = (k * 65536).astype(np.int32)
    elif dtype == "int16":
        a = (k * 64).astype(np.int16)
    elif dtype == "int8":
        a = k.astype(np.int8)
    elif dtype == "uint8":
        a = ((37 * i + seed) % 256).astype(np.uint8)
    elif dtype == "bool":
        a = (7 * i + seed) % 3 == 0
    return np.array(a.reshape(shape), order="C", copy=True)  # (ascontiguousarray makes 0-d arrays 1-d)


def spec(dtype, a):
    return safetensors.TensorSpec(dtype=dtype, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)


def check_dms_files(work):
    # safetensors.numpy.load_file: values, dtypes, shapes (no bf16: numpy has none).
    path = os.path.join(work, "dms_np.safetensors")
    loaded = stnp.load_file(path)
    want = {n: array(d, s, seed) for n, d, s, seed in TENSORS if d != "bfloat16"}
    expect(sorted(loaded) == sorted(want), "dms_np.safetensors: tensor names")
    for n, a in want.items():
        b = loaded.get(n)
        expect(b is not None and b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b),
               f"dms_np.safetensors: {n}")
    with safetensors.safe_open(path, framework="numpy") as f:
        expect(f.metadata() == {"format": "pt"}, f"dms_np.safetensors: metadata {f.metadata()}")

    # Every dtype, bf16 included, through the Rust deserializer's raw bytes.
    path = os.path.join(work, "dms_all.safetensors")
    with open(path, "rb") as fh:
        raw = fh.read()
    got = dict(safetensors.deserialize(raw))
    for n, d, s, seed in TENSORS:
        t = got.get(n)
        expect(t is not None and list(t["shape"]) == list(s) and bytes(t["data"]) == array(d, s, seed).tobytes(),
               f"dms_all.safetensors: {n}")
    with safetensors.safe_open(path, framework="numpy") as f:
        expect(f.metadata() == {"format": "pt", "note": NOTE}, f"dms_all.safetensors: metadata {f.metadata()}")

    # The sharded checkpoint: the index names every tensor once, each shard holds its tensors.
    ckpt = os.path.join(work, "dms_sharded")
    with open(os.path.join(ckpt, "model.safetensors.index.json")) as fh:
        index = json.load(fh)
    expect(sorted(index["weight_map"]) == sorted(n for n, *_ in TENSORS), "dms_sharded: weight_map names")
    total = 0
    for n, d, s, seed in TENSORS:
        shard = index["weight_map"][n]
        with open(os.path.join(ckpt, shard), "rb") as fh:
            t = dict(safetensors.deserialize(fh.read())).get(n)
        a = array(d, s, seed)
        total += a.nbytes
        expect(t is not None and bytes(t["data"]) == a.tobytes(), f"dms_sharded: {n} in {shard}")
    expect(index["metadata"]["total_size"] == total, "dms_sharded: total_size")
    expect(len(set(index["weight_map"].values())) > 1, "dms_sharded: expected several shards")

    # npy and npz.
    expect(np.array_equal(np.load(os.path.join(work, "dms_f32.npy")), floats((7, 5), 1)), "dms_f32.npy")
    with open(os.path.join(work, "dms_f32.npy"), "rb") as fh:
        import io
        buf = io.BytesIO()
        np.save(buf, floats((7, 5), 1))
        expect(fh.read() == buf.getvalue(), "dms_f32.npy: bytes differ from np.save")
    s = np.load(os.path.join(work, "dms_scalar.npy"))
    expect(s.shape == () and s == floats((), 11), "dms_scalar.npy")
    for name in ("dms_stored.npz", "dms_deflated.npz", "dms_zip64.npz"):
        with np.load(os.path.join(work, name)) as z:
            expect(sorted(z.files) == ["W_enc", "b_enc", "threshold"], f"{name}: files {z.files}")
            expect(np.array_equal(z["W_enc"], floats((35,), 1).reshape(5, 7)), f"{name}: W_enc")
            expect(np.array_equal(z["b_enc"], floats((7,), 2)), f"{name}: b_enc")
            expect(z["threshold"].shape == (0,), f"{name}: threshold")


def write_python_files(work):
    keep = []
    arrays = {n: array(d, s, seed) for n, d, s, seed in TENSORS if d != "bfloat16"}
    stnp.save_file(arrays, os.path.join(work, "py_np.safetensors"), metadata={"format": "pt", "source": "python"})
    # The Rust crate's bytes for exactly what dms wrote to dms_np.safetensors.
    stnp.save_file(arrays, os.path.join(work, "py_np_same.safetensors"), metadata={"format": "pt"})
    specs = {}
    for n, d, s, seed in TENSORS:
        a = array(d, s, seed)
        keep.append(a)
        specs[n] = spec(d, a)
    safetensors.serialize_file(specs, os.path.join(work, "py_all.safetensors"), {"format": "pt", "note": NOTE})

    np.save(os.path.join(work, "py_f32.npy"), floats((7, 5), 1))
    np.save(os.path.join(work, "py_f64.npy"), floats((5,), 4).astype(np.float64))
    np.save(os.path.join(work, "py_f16.npy"), floats((3, 5), 3).astype(np.float16))
    np.save(os.path.join(work, "py_fortran.npy"), np.asfortranarray(floats((3, 4), 13)))
    np.save(os.path.join(work, "py_big_endian.npy"), floats((2, 2), 14).astype(">f4"))
    np.save(os.path.join(work, "py_scalar.npy"), floats((), 11))
    z = dict(W_enc=floats((35,), 1).reshape(5, 7), b_enc=floats((7,), 2), threshold=floats((0,), 3))
    np.savez(os.path.join(work, "py_savez.npz"), **z)
    np.savez_compressed(os.path.join(work, "py_savez_compressed.npz"), **z)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    program, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    for f in os.listdir(work):  # a clean directory (the sharded writer refuses to overwrite)
        p = os.path.join(work, f)
        if os.path.isdir(p):
            import shutil
            shutil.rmtree(p)
        else:
            os.remove(p)
    print(f"peer: safetensors {safetensors.__version__}, numpy {np.__version__}")
    subprocess.run([program, "write", work], check=True)
    check_dms_files(work)
    print("Python read the dms-written files: " + ("MISMATCHES" if failures else "all equal"))
    write_python_files(work)
    rc = subprocess.run([program, "check", work]).returncode
    if failures or rc != 0:
        print("FAILED")
        return 1
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
