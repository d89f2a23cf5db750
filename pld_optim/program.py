"""The one way a program gets rules: a copy whose predictor carries new instructions and demos."""

from __future__ import annotations

import dspy

from pld_optim.lm.labels import literal_values
from pld_optim.rules import Prompt, RuleSet, render_instructions


def with_prompt(program: dspy.Module, predictor_name: str, instructions: str,
                demos: list[dspy.Example] | None = None) -> dspy.Module:
    """A copy of `program` whose predictor carries `instructions` (and `demos`, when given).

    `with_instructions` returns a new signature class; assigning `.instructions` would write the class
    that every deep copy shares, and leak into the user's program.
    """
    compiled = program.deepcopy()
    predictor = dict(compiled.named_predictors())[predictor_name]
    predictor.signature = predictor.signature.with_instructions(instructions)
    if demos is not None:
        predictor.demos = list(demos)
    return compiled


def with_rules(program: dspy.Module, predictor_name: str, base: str, prompt: Prompt, label_field: str,
               preamble: str | None = None) -> dspy.Module:
    kwargs = {"preamble": preamble} if preamble else {}
    return with_prompt(program, predictor_name, render_instructions(base, prompt.rules, label_field, **kwargs),
                       prompt.demos)


def apply_rules(program: dspy.Module, rules: RuleSet) -> dspy.Module:
    """A copy of `program` whose predictor carries the rule set (e.g. an edited rules.json); no LM call."""
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
