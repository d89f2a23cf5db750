"""Per-example latency and output tokens on one student: zero-shot, the PLD prompt, and ChainOfThought.

PLD's promise is zero-shot latency: the rules sit in a constant system prefix whose KV cache the embedded
engine reuses (llama-cpp-python keeps the evaluated prefix between calls), and the student writes only the
label. ChainOfThought writes a rationale first. All three run in one process on the same model, cache off,
each mode as one block of calls (as a deployed prompt would run).

    python benchmarks/latency.py [--rules out/quickstart/rules.json] [--n 20] [--model local/gemma3-270m]

Without --rules, a 25-rule prompt is synthesised (about the size of the paper's StereoSet prompt).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import dspy

from pld_optim.cli.config import load_config
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.factory import engine_of, make_lm
from pld_optim.plan import apply_rules
from pld_optim.rules import RuleSet, render_instructions


def synthetic_rules(n: int = 25) -> list[str]:
    cues = ["women and girls", "a job or trade", "skin colour or nationality", "a faith or its clergy",
            "family roles", "income or class", "an accent or a language"]
    labels = ["gender", "profession", "race", "religion"]
    return [f"If the sentence ties a trait, ability or habit to {cues[i % len(cues)]}, and the context names the "
            f"target by that group rather than by an individual name, prefer the label {labels[i % 4]} even when "
            f"the wording is positive or only implies the trait." for i in range(n)]


def measure(program, examples, lm, adapter=None) -> tuple[list[float], list[int], int]:
    """Seconds and output tokens per example; an answer that does not parse is timed and counted."""
    seconds, tokens, failures = [], [], 0
    with dspy.context(lm=lm, adapter=adapter or LabelAdapter()):
        for ex in examples:
            start = time.perf_counter()
            try:
                program(**ex.inputs())
            except Exception:  # noqa: BLE001 - a weak model's unparsable answer still cost its time
                failures += 1
            seconds.append(time.perf_counter() - start)
            tokens.append(int(lm.history[-1]["usage"].get("completion_tokens") or 0))
    return seconds, tokens, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=Path)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--model", default="local/gemma3-270m")
    parser.add_argument("--cot-max-tokens", type=int, default=256)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cfg = load_config("quickstart")
    examples = load_split(cfg.data, "test")[: args.n]
    base = build_program(cfg.data)
    if args.rules:  # the compiled prompt as it ships: its rules and any worked examples the search chose
        ruleset = RuleSet.load(args.rules)
        pld, rules = apply_rules(base, ruleset), ruleset.active_rules()
    else:
        rules = synthetic_rules()
        pld = dspy.Predict(base.signature.with_instructions(
            render_instructions(base.signature.instructions, rules, "label")))
    lm = make_lm(args.model, max_tokens=args.cot_max_tokens, cache=False)
    engine = engine_of(lm)
    prompt_tokens = engine.count_tokens(LabelAdapter().format_system_message(pld.signature)) if engine else 0
    cot = dspy.ChainOfThought(base.signature)
    modes = {"zero-shot": (base, None), "PLD prompt": (pld, None),
             # CoT under the label grammar: its rationale is bounded to one line of at most ~400 characters.
             "ChainOfThought": (cot, None),
             # CoT as a user would run it: free text until it answers or hits the token cap.
             "ChainOfThought, no grammar": (cot, LabelAdapter(constrain=False))}
    rows = {}
    for name, (program, adapter) in modes.items():
        measure(program, examples[:1], lm, adapter)  # warm-up: model load, first prefix evaluation
        rows[name] = measure(program, examples, lm, adapter)
    print(f"student {args.model}, {len(examples)} examples, PLD prompt: {len(rules)} rules, "
          f"{prompt_tokens or 'n/a'} system-prompt tokens; CoT capped at {args.cot_max_tokens} tokens")
    print("| mode | mean s/example | median s | mean output tokens | unparsable answers |")
    print("|---|---|---|---|---|")
    for name, (secs, toks, bad) in rows.items():
        print(f"| {name} | {statistics.mean(secs):.3f} | {statistics.median(secs):.3f} | {statistics.mean(toks):.1f} "
              f"| {bad} |")
    pld, zero, cot, free = (statistics.mean(rows[k][0]) for k in
                            ("PLD prompt", "zero-shot", "ChainOfThought", "ChainOfThought, no grammar"))
    print(f"PLD / zero-shot = {pld / zero:.2f} (target <= 1.2); PLD / CoT = {pld / cot:.2f}, "
          f"PLD / CoT without grammar = {pld / free:.2f} (target <= 0.2)")


if __name__ == "__main__":
    main()
