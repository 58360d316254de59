#!/usr/bin/env python3
"""The llama.cpp side of `warden bench`: the same prompts (token ids from the
Rust report), the same shapes and thread counts, through llama-cpp-python.

    bench/llamacpp.py --ours report.json [--model PATH] [--threads 1,2] [--json]

Installs llama-cpp-python from PyPI into a venv under ~/.cache/warden/ the
first time (it compiles llama.cpp for this CPU: several minutes), then
re-runs itself with that venv's Python. With --ours it also prints the
ratios against the Rust figures.
"""

import argparse
import json
import os
import subprocess
import sys
import time

VERSION = "0.3.36"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "warden")
VENV = os.path.join(CACHE, "llamacpp-venv")
VENV_PY = os.path.join(VENV, "bin", "python")


def ensure_llama_cpp():
    """Re-executes under the venv's Python, creating it if needed."""
    try:
        import llama_cpp  # noqa: F401

        return
    except ImportError:
        pass
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        if not os.path.exists(VENV_PY):
            print(f"creating {VENV}", file=sys.stderr)
            subprocess.check_call([sys.executable, "-m", "venv", VENV])
        probe = subprocess.run([VENV_PY, "-c", "import llama_cpp"], capture_output=True)
        if probe.returncode != 0:
            install()
        os.execv(VENV_PY, [VENV_PY] + sys.argv)
    install()
    os.execv(VENV_PY, [VENV_PY] + sys.argv)


def install():
    print(
        f"installing llama-cpp-python {VERSION} into {VENV} (compiles llama.cpp; several minutes)",
        file=sys.stderr,
    )
    env = dict(os.environ)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    subprocess.check_call([VENV_PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], env=env)
    subprocess.check_call(
        [VENV_PY, "-m", "pip", "install", "-q", f"llama-cpp-python=={VERSION}"], env=env
    )


def default_model():
    base = os.environ.get("WARDEN_MODEL_DIR", os.path.join(CACHE, "models"))
    return os.path.join(base, "SmolLM2-135M-Instruct.Q4_1.gguf")


def measure(model_path, threads, prompts, repeats):
    """Best-of-`repeats` figures at one thread count, as the Rust bench does."""
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    prefill = prompts["prefill"]
    guard = prompts["guard"]
    prefix = prompts["guard_prefix"]
    count = prompts["decode_tokens"]
    # n_batch=512: Llama.eval feeds a longer prompt (the ~600-token guard) as
    # 512 + rest, each chunk a llama_decode at consecutive positions.
    llm = Llama(
        model_path=model_path,
        n_ctx=2048,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    n_vocab = llm.n_vocab()

    def cold():
        # Llama.reset() only rewinds n_tokens (it clears llama.cpp's memory for
        # recurrent models only); the KV cells must go too, or the next eval
        # lands on positions the cache still holds.
        llm.reset()
        llm._ctx.kv_cache_clear()

    def last_logits():
        # Llama.eval keeps no logits unless logits_all=True (which would also
        # compute them for every prompt token), so read the last row directly.
        return np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
        )

    def timed_eval(tokens):
        t = time.perf_counter()
        llm.eval(tokens)
        return time.perf_counter() - t

    # Warm-up: page in the weights, start the threads.
    cold()
    llm.eval(prefill[:64])

    best = {"threads": threads, "prefill_tok_s": 0.0, "decode_tok_s": 0.0,
            "guard_cold_ms": float("inf"), "guard_cached_ms": float("inf")}
    for _ in range(repeats):
        cold()
        t = timed_eval(prefill)
        best["prefill_tok_s"] = max(best["prefill_tok_s"], len(prefill) / t)

        # Greedy, one token per eval, after a 16-token prompt.
        cold()
        llm.eval(prefill[:16])
        nxt = int(np.argmax(last_logits()))
        t = time.perf_counter()
        for _ in range(count):
            llm.eval([nxt])
            nxt = int(np.argmax(last_logits()))
        best["decode_tok_s"] = max(best["decode_tok_s"], count / (time.perf_counter() - t))

        cold()
        t = timed_eval(guard)
        best["guard_cold_ms"] = min(best["guard_cold_ms"], t * 1e3)

    # Cached guard: the prefix is evaluated once; each run drops only the
    # positions past it from sequence 0 and evaluates the rest.
    cold()
    llm.eval(guard[:prefix])
    for _ in range(repeats):
        if not llm._ctx.kv_cache_seq_rm(0, prefix, -1):
            raise RuntimeError("llama.cpp cannot truncate this model's memory")
        llm.n_tokens = prefix
        t = timed_eval(guard[prefix:])
        best["guard_cached_ms"] = min(best["guard_cached_ms"], t * 1e3)
    llm.close()
    return best


def ratio(a, b):
    return a / b if b else float("nan")


def compare(ours, theirs):
    """Lines of the side-by-side table and the targets of issue #3."""
    lines = []
    head = f"{'threads':>7} {'':>10} {'prefill t/s':>12} {'decode t/s':>11} {'guard cold ms':>14} {'cached ms':>10} {'cold/cached':>11}"
    lines.append(head)
    by_threads = {r["threads"]: r for r in theirs}
    summary = []
    for r in ours["runs"]:
        t = by_threads.get(r["threads"])
        for name, f in (("warden", r), ("llama.cpp", t)):
            if f is None:
                continue
            lines.append(
                f"{f['threads']:>7} {name:>10} {f['prefill_tok_s']:>12.1f} {f['decode_tok_s']:>11.1f} "
                f"{f['guard_cold_ms']:>14.1f} {f['guard_cached_ms']:>10.1f} "
                f"{ratio(f['guard_cold_ms'], f['guard_cached_ms']):>10.1f}x"
            )
        if t is not None:
            summary.append((r["threads"], ratio(r["decode_tok_s"], t["decode_tok_s"]),
                            ratio(r["prefill_tok_s"], t["prefill_tok_s"]),
                            ratio(r["guard_cold_ms"], r["guard_cached_ms"]),
                            ratio(t["guard_cold_ms"], r["guard_cold_ms"])))
    lines.append("")
    lines.append("ratios (target):")
    for threads, dec, pre, cached, cold_vs in summary:
        lines.append(
            f"  {threads} thread(s): decode {dec:.2f}x llama.cpp (>=1.0), prefill {pre:.2f}x llama.cpp (>=1.0), "
            f"guard cached {cached:.1f}x faster than cold (>=5), guard cold {cold_vs:.2f}x llama.cpp"
        )
    if ours.get("rss_load_bytes"):
        lines.append(
            f"  resident memory from loading {ratio(ours['rss_load_bytes'], ours['file_bytes']):.2f}x the file (<=1.5)"
        )
    c = ours.get("concurrent")
    if c:
        lines.append(
            f"  {c['streams']} streams at {c['threads']} threads: {c['aggregate_tok_s']:.1f} tok/s aggregate, "
            f"{ratio(c['aggregate_tok_s'], c['sequential_tok_s']):.2f}x single stream (>=1.5)"
        )
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", help="JSON report of `warden bench --json` (gives the prompts)")
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", default=None, help="e.g. 1,2 (default: the report's)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--theirs", help="a saved --json output: print the ratios without measuring")
    ap.add_argument("--install-only", action="store_true", help="only make sure llama.cpp is installed")
    args = ap.parse_args()
    if args.theirs and args.ours:
        with open(args.ours) as f, open(args.theirs) as g:
            print("\n".join(compare(json.load(f), json.load(g)["runs"])))
        return
    ensure_llama_cpp()
    if args.install_only:
        return
    if not args.ours:
        sys.exit("give --ours REPORT.json (from `warden bench --json`) for the prompts")
    with open(args.ours) as f:
        ours = json.load(f)
    threads = (
        [int(t) for t in args.threads.split(",")]
        if args.threads
        else [r["threads"] for r in ours["runs"]]
    )
    theirs = []
    for i, t in enumerate(threads):
        print(f"llama.cpp: {t} thread(s) ({i + 1}/{len(threads)})", file=sys.stderr)
        theirs.append(measure(args.model, t, ours["prompts"], args.repeats))
    if args.json:
        print(json.dumps({"llama_cpp_version": VERSION, "runs": theirs}, indent=2))
    else:
        print("\n".join(compare(ours, theirs)))


if __name__ == "__main__":
    main()
