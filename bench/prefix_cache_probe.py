"""Does vLLM's prefix caching work on the pooling runner's classify path for an LLM reranker?

Run: ``.venv/bin/python bench/prefix_cache_probe.py [--docs 50] [--reps 3]``

One engine at a time, each in its own subprocess, same settings but ``enable_prefix_caching``
(on / off / vLLM's default, optionally with another KV ``block_size``, which is the granularity
of prefix reuse). Each repetition sends one query x ``--docs`` documents as Qwen3-Reranker
prompts (system prefix, instruction, a long query, then the document) in one ``LLM.classify``
call; every repetition has a new query, so only the pairs of one call can share the prefix.
Prints the median wall time, the prefix-cache hits vLLM reports (``num_cached_tokens``) and
whether the logits match across the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _models as M  # noqa: E402
import _workloads as W  # noqa: E402

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def prompts(tokenizer, rep: int, docs: int, query_words: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed * 1000 + rep)
    words = W._WORDS
    query = f"q{rep} " + " ".join(rng.choice(words) for _ in range(query_words))
    out = []
    for _ in range(docs):
        doc = " ".join(rng.choice(words) for _ in range(rng.randint(20, 40)))
        body = f"<Instruct>: {INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}"
        out.append(tokenizer(PREFIX + body + SUFFIX, add_special_tokens=False)["input_ids"])
    return out


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM
    from vllm.inputs import TokensPrompt
    from vllm.pooling_params import PoolingParams

    kwargs: dict = dict(
        model=str(M.qwen3_reranker()),
        runner="pooling",
        dtype="float32",
        enforce_eager=True,
        gpu_memory_utilization=0.3,
        **M.engine_kwargs("qwen3_reranker"),
    )
    mode, _, block = args.mode.partition(":")
    if mode != "default":
        kwargs["enable_prefix_caching"] = mode == "on"
    if block:
        kwargs["block_size"] = int(block)
    llm = LLM(**kwargs)
    config = llm.llm_engine.vllm_config
    tok = llm.get_tokenizer()
    result: dict = {
        "mode": args.mode,
        "enable_prefix_caching": config.cache_config.enable_prefix_caching,
        "block_size": config.cache_config.block_size,
        "pooler": str(config.model_config.pooler_config),
        "reps": [],
    }

    def run(rep: int) -> tuple[float, int, int, list[float]]:
        ids = prompts(tok, rep, args.docs, args.query_words, args.seed)
        params = PoolingParams(use_activation=False)
        started = time.perf_counter()
        out = llm.classify(
            [TokensPrompt(prompt_token_ids=x) for x in ids], pooling_params=params, use_tqdm=False
        )
        seconds = time.perf_counter() - started
        cached = sum(o.num_cached_tokens for o in out)
        return seconds, cached, sum(map(len, ids)), [float(o.outputs.probs[0]) for o in out]

    run(-1)  # warm-up, its own query
    for rep in range(args.reps):
        seconds, cached, tokens, logits = run(rep)
        result["reps"].append(
            {"seconds": seconds, "cached_tokens": cached, "tokens": tokens, "logits": logits}
        )
    print("@result@ " + json.dumps(result), flush=True)
    llm.llm_engine.engine_core.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--query-words", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", help="on, off or default, optionally :BLOCK_SIZE (on:32)")
    ap.add_argument("--modes", nargs="+", default=["default", "off", "on:32"])
    args = ap.parse_args()
    if args.mode:
        child(args)
        return
    M.qwen3_reranker()
    results = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--mode", mode, "--docs", str(args.docs)]
        cmd += ["--reps", str(args.reps), "--query-words", str(args.query_words)]
        cmd += ["--seed", str(args.seed)]
        load = os.getloadavg()[0]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("@result@ ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{mode}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        r = json.loads(lines[0][len("@result@ ") :])
        r["load_before"] = load
        results.append(r)
        med = statistics.median(x["seconds"] for x in r["reps"])
        rep0 = r["reps"][0]
        print(
            f"{mode:8} enable_prefix_caching={r['enable_prefix_caching']} "
            f"block={r['block_size']} median {med:.2f} s "
            f"({[round(x['seconds'], 2) for x in r['reps']]}), "
            f"cached {rep0['cached_tokens']}/{rep0['tokens']} tokens, load {load:.1f}",
            flush=True,
        )
    base = results[0]["reps"]
    for r in results[1:]:
        diff = max(
            abs(a - b) for x, y in zip(base, r["reps"]) for a, b in zip(x["logits"], y["logits"])
        )
        print(f"max |logit difference| {results[0]['mode']} vs {r['mode']}: {diff:.2e}")
    print(f"pooler: {results[0]['pooler']}")


if __name__ == "__main__":
    main()
