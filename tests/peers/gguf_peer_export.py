#!/usr/bin/env python3
"""Writes what llama.cpp's `gguf` Python package makes of GGUF data, for dms_peer_quant to compare.

    gguf_peer_export.py model PATH.gguf [OUT]   every tensor of a GGUF file: its raw bytes and
                                                gguf.quants.dequantize of them
    gguf_peer_export.py synthetic [OUT]         for each of the 13 types dms decodes: blocks made by
                                                gguf's own quantizers (F32, F16, BF16, Q4_0, Q4_1,
                                                Q5_0, Q5_1, Q8_0) from several kinds of f32 data,
                                                and random valid blocks (random bytes, finite f16
                                                scales) for every type, K-quants included, which
                                                gguf 0.19 can decode but not encode

OUT defaults to standard output, so the test pipes this into the checker and nothing lands on disk
(the model alone dequantizes to 540 MB of f32). The stream, little-endian throughout:

    DMSPEER 1\\n
    tensor NAME TYPE_ID N_ELEMENTS N_BYTES\\n  raw[N_BYTES]  f32[N_ELEMENTS]   (gguf's dequantization)
    quant NAME TYPE_ID N_ELEMENTS N_BYTES\\n   f32[N_ELEMENTS]  raw[N_BYTES]    (input, gguf's quantization)
    end N_RECORDS\\n

NAME has no spaces. The checker fails on a stream without the end line, so a crash here is never a
silent pass.
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

# The 13 types dms decodes, and the offsets of the f16 scale fields inside each block
# (ggml-common.h), which random blocks must hold finite values in.
SCALE_OFFSETS = {
    T.F32: None, T.F16: None, T.BF16: None,
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
GGUF_CAN_QUANTIZE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]


class Writer:
    def __init__(self, out):
        self.out = out
        self.count = 0
        out.write(b"DMSPEER 1\n")

    def _header(self, kind, name, qtype, n_elements, n_bytes):
        self.out.write(f"{kind} {name} {int(qtype)} {n_elements} {n_bytes}\n".encode())
        self.count += 1

    def tensor(self, name, qtype, raw, deq):
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        deq = np.ascontiguousarray(deq, dtype="<f4").reshape(-1)
        self._header("tensor", name, qtype, deq.size, raw.size)
        self.out.write(memoryview(raw))
        self.out.write(memoryview(deq).cast("B"))

    def quant(self, name, qtype, data, raw):
        data = np.ascontiguousarray(data, dtype="<f4").reshape(-1)
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        self._header("quant", name, qtype, data.size, raw.size)
        self.out.write(memoryview(data).cast("B"))
        self.out.write(memoryview(raw))

    def close(self):
        self.out.write(f"end {self.count}\n".encode())
        self.out.flush()


def export_model(path, w):
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        deq = gguf.quants.dequantize(t.data, t.tensor_type)
        assert deq.size == int(t.n_elements), t.name
        w.tensor(t.name, t.tensor_type, t.data, deq)


def finite_f16(rng, n):
    """Finite f16 scales: mostly normal, some subnormal, some zero, both signs."""
    mag = np.exp2(rng.uniform(-12, 2, n)).astype(np.float16)
    kind = rng.integers(0, 20, n)
    mag = np.where(kind == 0, np.float16(0), mag)
    sub = (rng.integers(0, 1024, n).astype(np.uint16)).view(np.float16)
    mag = np.where(kind == 1, sub, mag)
    sign = np.where(rng.integers(0, 2, n) == 1, np.float16(-1), np.float16(1))
    return (mag * sign).astype(np.float16)


def random_blocks(rng, qtype, n_blocks):
    """Random valid storage for n_blocks blocks: random bytes, finite scales / elements."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        return (rng.standard_normal(n_blocks) * np.exp2(rng.integers(-30, 30, n_blocks))).astype(np.float32)
    if qtype == T.F16:
        return finite_f16(rng, n_blocks) * np.float16(100)
    if qtype == T.BF16:
        b = rng.integers(0, 1 << 16, n_blocks, dtype=np.uint32).astype(np.uint16)
        exp_all_ones = (b & 0x7F80) == 0x7F80
        return np.where(exp_all_ones, b & np.uint16(0xBFFF), b).astype(np.uint16).view(np.uint8)  # no inf/NaN
    raw = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        raw[:, off:off + 2] = finite_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw


def sample_data(rng, kind, shape):
    """f32 data for gguf's quantizers: the shapes of data a merge writes, and edge cases."""
    n = int(np.prod(shape))
    if kind == "weights":
        x = rng.standard_normal(n) * 0.02
    elif kind == "offset":
        x = rng.uniform(-3, 5, n)
    elif kind == "wide":
        x = rng.standard_normal(n) * np.exp2(rng.integers(-24, 6, n))
    elif kind == "ties":  # few distinct values: exact .5 cases in x / d + 8.5 and roundf
        x = rng.integers(-3, 4, n).astype(np.float64)
    elif kind == "halves":
        x = (rng.integers(-254, 255, n) / 2.0) * np.exp2(rng.integers(-3, 3, n // 32).repeat(32))
    elif kind == "sparse":  # mostly zero blocks, a few one-hot ones, a few constant ones
        x = np.zeros(n)
        blocks = x.reshape(-1, 32)
        hot = rng.integers(0, len(blocks), len(blocks) // 4)
        blocks[hot, rng.integers(0, 32, len(hot))] = rng.standard_normal(len(hot))
        const = rng.integers(0, len(blocks), len(blocks) // 4)
        blocks[const, :] = rng.standard_normal(len(const))[:, None]
    elif kind == "f16-edges":  # around the f16 range ends and subnormals
        x = np.concatenate([
            rng.uniform(65000, 66000, n // 4) * rng.choice([-1, 1], n // 4),
            np.exp2(rng.uniform(-27, -13, n // 4)) * rng.choice([-1, 1], n // 4),
            rng.standard_normal(n - 2 * (n // 4))])
    else:
        raise ValueError(kind)
    return x.astype(np.float32).reshape(shape)


def export_synthetic(w):
    rng = np.random.default_rng(20240613)
    shape = (64, 512)  # 32768 elements: 1024 blocks of 32, 128 super-blocks of 256
    for qtype in GGUF_CAN_QUANTIZE:
        kinds = ["weights", "offset", "wide", "ties", "halves", "sparse"]
        if qtype in (T.F16, T.BF16, T.F32):
            kinds.append("f16-edges")
        for kind in kinds:
            data = sample_data(rng, kind, shape)
            raw = gguf.quants.quantize(data, qtype)
            name = f"{qtype.name}/quantized-{kind}"
            w.quant(name, qtype, data, raw)
            w.tensor(name, qtype, raw, gguf.quants.dequantize(raw, qtype))
    for qtype in SCALE_OFFSETS:
        block_size, _ = GGML_QUANT_SIZES[qtype]
        n_blocks = 32768 // block_size
        for i in range(2):
            raw = random_blocks(rng, qtype, n_blocks)
            w.tensor(f"{qtype.name}/random-blocks-{i}", qtype, raw, gguf.quants.dequantize(raw, qtype))
    # Every f16 and bf16 bit pattern, NaNs and infinities included.
    all16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    w.tensor("F16/all-bit-patterns", T.F16, all16, gguf.quants.dequantize(all16.view(np.uint8), T.F16))
    w.tensor("BF16/all-bit-patterns", T.BF16, all16, gguf.quants.dequantize(all16.view(np.uint8), T.BF16))


def main(argv):
    if len(argv) < 2 or argv[1] not in ("model", "synthetic"):
        print(__doc__, file=sys.stderr)
        return 2
    path_arg = 3 if argv[1] == "model" else 2
    out = open(argv[path_arg], "wb") if len(argv) > path_arg else sys.stdout.buffer
    w = Writer(out)
    with np.errstate(over="ignore"):  # f16-edges overflow to infinity on purpose
        if argv[1] == "model":
            export_model(argv[2], w)
        else:
            export_synthetic(w)
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
