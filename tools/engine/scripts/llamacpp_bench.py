#!/usr/bin/env python3
"""llama.cpp baseline for `specblock bench`, through llama-cpp-python's low-level ctypes API.

For each GGUF: plain greedy decode tok/s at a short context (16-token prompt, 64 steps) and at ~512 context
(512-token prompt, 64 steps), median of 3; and the verify cost t(N), one llama_decode of N new tokens with
logits for all of them on top of a cached 512-token prefix (cache trimmed back after each pass), median of 7.
Token ids follow `specblock bench`. Also greedy-generates two short chat answers with each model and reports
where each model first disagrees with the first one (a sanity check, not an assertion).

Waits first for an idle machine (other CPU use < 15% over 3 s, up to 2 min), as timings under load are
meaningless on 2 cores, and prints the other CPU use seen during each model's run.

Usage (needs llama-cpp-python==0.3.36 and numpy):
    python tools/engine/scripts/llamacpp_bench.py MODEL.gguf [MODEL2.gguf ...] [--threads 2]
"""
import argparse
import ctypes
import os
import pathlib
import statistics
import sys
import time

import numpy as np
import llama_cpp as L

N_CTX = 1024
PREFIX = 512
DECODE_STEPS = 64
VERIFY_NS = (1, 4, 8, 16, 32, 64)
CHAT_QUESTIONS = ("What is the capital of France?", "Write a short poem about the sea.")
CHAT_TOKENS = 32


# ---- idle gate (/proc/stat) ----

def _cpu_jiffies():
    """(total, busy) jiffies of all CPUs, and this process's own CPU jiffies."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total, idle = sum(v[:8]), v[3] + v[4]  # user..steal; idle + iowait
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return total, total - idle, int(own[11]) + int(own[12])  # utime + stime, all threads


class OtherCpu:
    """Fraction of all CPU time used by other processes between start() and value()."""

    def start(self):
        self.t0 = _cpu_jiffies()
        return self

    def value(self):
        t1 = _cpu_jiffies()
        dt = max(t1[0] - self.t0[0], 1)
        return max(0.0, ((t1[1] - self.t0[1]) - (t1[2] - self.t0[2])) / dt)


def wait_for_idle(max_wait=120.0, window=3.0, limit=0.15):
    start = time.monotonic()
    while True:
        probe = OtherCpu().start()
        time.sleep(window)
        busy = probe.value()
        if busy < limit:
            return busy, True
        if time.monotonic() - start > max_wait:
            print(f"warning: the machine is busy ({busy:.0%} CPU in use by others); numbers will be low",
                  file=sys.stderr)
            return busy, False
        print(f"waiting for an idle machine ({busy:.0%} CPU in use by others)...", file=sys.stderr)


# ---- llama.cpp helpers ----

@L.llama_log_callback
def _log(level, text, _user):
    if level >= 4 and level != 5:  # GGML_LOG_LEVEL_ERROR; 5 is CONT
        sys.stderr.write(text.decode("utf-8", "replace"))


def version_info():
    """llama-cpp-python version plus what the shipped libraries report about themselves."""
    libdir = pathlib.Path(L.__file__).parent / "lib"
    parts = [f"llama-cpp-python {L.__version__}"]
    sonames = sorted(p.name for p in libdir.glob("libllama.so.*"))
    if sonames:
        parts.append(f"libllama {max(sonames, key=len).removeprefix('libllama.so.')}")

    def call(lib_glob, fn):
        for p in sorted(libdir.glob(lib_glob)):
            try:
                f = getattr(ctypes.CDLL(str(p)), fn)
            except (OSError, AttributeError):
                continue
            f.restype = ctypes.c_char_p
            return f().decode()
        return None

    build = call("libllama-common.so*", "llama_build_info")  # only where the common library was built
    if build:
        parts.append(f"llama.cpp build {build}")
    gv, gc = call("libggml-base.so*", "ggml_version"), call("libggml-base.so*", "ggml_commit")
    if gv:
        # ggml is vendored inside llama.cpp's tree, so its commit is the llama.cpp commit.
        parts.append(f"ggml {gv}, llama.cpp commit {gc} (ggml_commit)")
    return ", ".join(parts)


class Engine:
    def __init__(self, path, threads):
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = N_CTX
        cp.n_threads = cp.n_threads_batch = threads
        cp.n_seq_max = 1
        self.flash_attn = L.llama_flash_attn_type_name(cp.flash_attn_type).decode()
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.mem = L.llama_get_memory(self.ctx)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.batch = L.llama_batch_init(PREFIX, 0, 1)
        buf = ctypes.create_string_buffer(128)
        L.llama_model_desc(self.model, buf, len(buf))
        self.desc = buf.value.decode()
        self.size_mb = L.llama_model_size(self.model) / 1e6

    def close(self):
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def decode(self, tokens, pos0, logits="last"):
        """One llama_decode of `tokens` at positions pos0.. on seq 0; returns once the work is done."""
        b = self.batch
        n = len(tokens)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = logits == "all" or (logits == "last" and i == n - 1)
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        L.llama_synchronize(self.ctx)

    def argmax(self, i=-1):
        row = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
        return int(row.argmax())

    def reset(self):
        L.llama_memory_clear(self.mem, True)

    def decode_rate(self, prompt):
        """Prefill `prompt` (timed separately), then greedy-decode DECODE_STEPS tokens; returns (tok/s, prefill s)."""
        self.reset()
        t = time.perf_counter()
        self.decode(prompt, 0)
        prefill = time.perf_counter() - t
        nxt, pos = self.argmax(), len(prompt)
        t = time.perf_counter()
        for _ in range(DECODE_STEPS):
            self.decode([nxt], pos)
            nxt, pos = self.argmax(), pos + 1
        return DECODE_STEPS / (time.perf_counter() - t), prefill

    def verify_ms(self, prefix, ns, repeats):
        self.reset()
        self.decode(prefix, 0)
        out = {}
        for n in ns:
            new = [300 + i for i in range(n)]
            times = []
            for r in range(repeats + 1):  # the first pass (graph set-up for this shape) is not timed
                t = time.perf_counter()
                self.decode(new, len(prefix), logits="all")
                dt = time.perf_counter() - t
                if not L.llama_memory_seq_rm(self.mem, 0, len(prefix), -1):
                    raise RuntimeError("llama_memory_seq_rm failed")
                if r:
                    times.append(dt * 1e3)
            out[n] = statistics.median(times)
        return out

    def chat_greedy(self, question):
        text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n".encode()
        toks = (L.llama_token * 256)()
        n = L.llama_tokenize(self.vocab, text, len(text), toks, len(toks), False, True)
        self.reset()
        self.decode(list(toks[:n]), 0)
        ids, pos = [], n
        for _ in range(CHAT_TOKENS):
            ids.append(self.argmax())
            if L.llama_vocab_is_eog(self.vocab, ids[-1]):
                break
            self.decode([ids[-1]], pos)
            pos += 1
        text, piece = b"", ctypes.create_string_buffer(64)
        for t in ids:
            n = L.llama_token_to_piece(self.vocab, t, piece, len(piece), 0, False)
            text += piece.raw[:max(n, 0)]
        return ids, text.decode("utf-8", "replace")


def run_model(path, threads):
    e = Engine(path, threads)
    try:
        short = [100 + i * 37 for i in range(16)]
        prefix = [200 + (i * 7919) % 40000 for i in range(PREFIX)]
        other = OtherCpu().start()
        e.decode_rate(short)  # warm-up (page in the weights, allocate graphs)
        runs_short = [e.decode_rate(short)[0] for _ in range(3)]
        runs_long = [e.decode_rate(prefix) for _ in range(3)]
        verify = e.verify_ms(prefix, VERIFY_NS, 7)
        busy = other.value()
        chat = [e.chat_greedy(q) for q in CHAT_QUESTIONS]
        return dict(
            name=pathlib.Path(path).name, desc=e.desc, size_mb=e.size_mb, flash_attn=e.flash_attn,
            short=statistics.median(runs_short),
            long=statistics.median(r[0] for r in runs_long),
            prefill=statistics.median(r[1] for r in runs_long),
            verify=verify, busy=busy, chat=chat,
        )
    finally:
        e.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait for an idle machine")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the decode numbers as JSON")
    args = ap.parse_args()

    L.llama_log_set(_log, ctypes.c_void_p(0))
    L.llama_backend_init()
    idle, ok = wait_for_idle(args.max_wait)
    load = os.getloadavg()
    results = [run_model(p, args.threads) for p in args.models]
    load_after = os.getloadavg()

    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"version": version_info(), "threads": args.threads, "idle_gate_passed": ok,
                       "models": [{"name": r["name"], "desc": r["desc"],
                                   "decode_tok_s_short_ctx": r["short"], "decode_tok_s_ctx512": r["long"],
                                   "other_cpu": r["busy"]} for r in results]}, f, indent=2)

    print(f"# llama.cpp benchmark ({version_info()})")
    print(f"{args.threads} threads, n_ctx {N_CTX}, flash attention {results[0]['flash_attn']}, greedy argmax; "
          f"medians. Idle gate: {idle:.0%} other CPU over 3 s ({'passed' if ok else 'NOT passed, waited'}); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before, "
          f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} after.\n")

    print(f"| model | weights | MB | decode tok/s, 16-token ctx | decode tok/s, ctx 512 | prefill 512 ms "
          f"| other CPU during run |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['desc']} | {r['size_mb']:.0f} | {r['short']:.1f} | {r['long']:.1f} "
              f"| {r['prefill'] * 1e3:.0f} | {r['busy']:.0%} |")

    print(f"\nVerify t(N): N new tokens, all with logits, on a cached {PREFIX}-token prefix; median of 7 "
          f"(after 1 untimed pass).\n")
    print("| N | " + " | ".join(f"{r['name']} t(N) ms | t(N)/t(1)" for r in results) + " |")
    print("|---:|" + "---:|---:|" * len(results))
    for n in VERIFY_NS:
        cells = " | ".join(f"{r['verify'][n]:.1f} | {r['verify'][n] / r['verify'][1]:.2f}" for r in results)
        print(f"| {n} | {cells} |")

    print(f"\nGreedy chat check (ChatML, up to {CHAT_TOKENS} tokens; agreement is with the first model):\n")
    for q, question in enumerate(CHAT_QUESTIONS):
        ref = results[0]["chat"][q][0]
        for r in results:
            ids, text = r["chat"][q]
            same = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
            agree = f"{len(ids)} tokens" if r is results[0] else f"first {same} of {len(ids)} tokens agree"
            print(f"- {question!r} {r['name']} ({agree}): {text!r}")


if __name__ == "__main__":
    main()
