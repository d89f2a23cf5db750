"""The one way a program gets rules: a copy whose predictor carries new instructions and demos.

PLD owns only what it put there. The demos a program already carries (hand-written, or another
optimizer's) are kept, before PLD's worked examples; PLD's own are marked (`PLD_DEMO`, which survives
program.json and is never shown to the model: adapters format only the signature's fields), so applying
rules again replaces them and nothing else. A program PLD compiled is mined again from its base
(`base_program`).
"""

from __future__ import annotations

import dspy

from pld_optim.lm.labels import literal_values
from pld_optim.rules import Prompt, RuleSet, render_instructions, split_rule_block

PLD_DEMO = "pld_demo"  # the key that marks a demo as one of PLD's worked examples


def own_demos(predictor: dspy.Predict) -> list:
    """The demos of `predictor` that PLD did not put there: they are kept wherever PLD applies rules."""
    return [d for d in predictor.demos or [] if not d.get(PLD_DEMO)]


def _marked(demo):
    return demo.copy(**{PLD_DEMO: True}) if isinstance(demo, dspy.Example) else {**demo, PLD_DEMO: True}


def with_prompt(program: dspy.Module, predictor_name: str, instructions: str,
                demos: list[dspy.Example] | None = None) -> dspy.Module:
    """A copy of `program` whose predictor carries `instructions`, its own demos, then `demos` (PLD's; any
    PLD put there before are replaced).

    `with_instructions` returns a new signature class; assigning `.instructions` would write the class
    that every deep copy shares, and leak into the user's program.
    """
    compiled = program.deepcopy()
    predictor = dict(compiled.named_predictors())[predictor_name]
    predictor.signature = predictor.signature.with_instructions(instructions)
    predictor.demos = [*own_demos(predictor), *(_marked(d) for d in demos or [])]
    return compiled


def with_rules(program: dspy.Module, predictor_name: str, base: str, prompt: Prompt, label_field: str,
               preamble: str | None = None) -> dspy.Module:
    kwargs = {"preamble": preamble} if preamble else {}
    return with_prompt(program, predictor_name, render_instructions(base, prompt.rules, label_field, **kwargs),
                       prompt.demos)


def base_program(program: dspy.Module, predictor_name: str, label_field: str) -> tuple[dspy.Module, list[str]]:
    """`program` as it was before PLD compiled it: its rule block stripped from the instructions and PLD's
    worked examples dropped (its own demos stay), and the rules that were stripped. `program` itself when
    PLD never compiled it."""
    predictor = dict(program.named_predictors())[predictor_name]
    split = split_rule_block(predictor.signature.instructions, label_field)
    if split is None and len(own_demos(predictor)) == len(predictor.demos or []):
        return program, []
    base, rules = split or (predictor.signature.instructions, [])
    return with_prompt(program, predictor_name, base), rules


def with_rule_set(program: dspy.Module, rules: RuleSet) -> dspy.Module:
    """A copy of `program` whose predictor carries the rule set, once it is known to be for this program's
    predictor, label field and labels. The rules' text and demos are checked against the task by
    `pld_optim.plan.apply_rules`, which every entry point calls (the gates sit above this layer)."""
    predictors = dict(program.named_predictors())
    if rules.predictor not in predictors:
        raise ValueError(f"rules.json is for predictor {rules.predictor!r}; the program has {list(predictors)}")
    predictor = predictors[rules.predictor]
    if rules.label_field not in predictor.signature.output_fields:
        raise ValueError(f"rules.json labels field {rules.label_field!r}, which the program's signature lacks")
    declared = literal_values(predictor.signature.output_fields[rules.label_field].annotation)
    if declared is not None and set(declared) != set(rules.labels):
        raise ValueError(f"rules.json is for labels {rules.labels}; the program's field {rules.label_field!r} "
                         f"has {declared}: it was compiled for another task")
    return with_rules(program, rules.predictor, rules.base_instructions, rules.prompt(), rules.label_field,
                      rules.preamble)

