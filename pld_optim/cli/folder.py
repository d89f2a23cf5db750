"""Commands that rewrite a compile folder: `ablate`, `pick` and `report`. Each holds the folder's lock and
works from the rules as they are now (a reviewer may have edited rules.json), never from stale records."""

from __future__ import annotations

import dspy

from pld_optim.cli.common import lm_from_config, preflight, run_context, use_disk_cache
from pld_optim.cli.config import build_program, load_config, load_split
from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.task import resolve_task
from pld_optim.files import atomic_write_text
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.program import apply_rules
from pld_optim.rules import RuleSet
from pld_optim.run.folder import RunFolder
from pld_optim.run.report import render_report
from pld_optim.run.usage import UsageLog
from pld_optim.stages.contribution import rule_contributions, with_contributions


def _rules_of(folder: RunFolder, program: dspy.Module) -> RuleSet:
    rules = RuleSet.load(folder.path / "rules.json")
    apply_rules(program, rules)  # refuses rules of another task before anything is written
    return rules


def _save(folder: RunFolder, program: dspy.Module, rules: RuleSet) -> None:
    compiled = apply_rules(program, rules)
    rules.system_prompt = LabelAdapter().format_system_message(compiled.predictors()[0].signature)
    folder.save(compiled, rules)


def pick_cmd(args) -> int:
    """Choose another point of a multi-objective search's Pareto front, with no LM call."""
    cfg = load_config(args.config)
    program = build_program(cfg.data)
    folder = RunFolder(args.dir, context=run_context(cfg, args.config), title=f"PLD compile: {cfg.name}")
    with folder.writing():
        rules = _rules_of(folder, program).pick(args.max_tokens)
        _save(folder, program, rules)
    chosen = next(c for c in rules.search.pareto if c.selection == rules.selection)
    print(f"picked {len(rules.selection)} rules, {chosen.prompt_tokens} prompt tokens, dev macro F1 "
          f"{chosen.macro_f1:.4f}; rewrote {folder.path / 'program.json'}, rules.json, system_prompt.txt, report.md "
          "and review.html")
    return 0


def ablate_cmd(args) -> int:
    """Each active rule's contribution, for an edited rules.json too: one dev pass per rule, no teacher."""
    cfg = load_config(args.config)
    program = build_program(cfg.data)
    folder = RunFolder(args.dir, context=run_context(cfg, args.config), title=f"PLD compile: {cfg.name}")
    dev = load_split(cfg.data, "dev")
    if not dev:
        raise ValueError("ablate: the dev split is empty; set data.fractions")
    with folder.writing():
        rules = _rules_of(folder, program)
        preflight(cfg, teacher=False)
        use_disk_cache(folder.cache_dir)  # prompts the search already scored are cache hits
        scorer = Scorer(program, resolve_task(program), base_instructions=rules.base_instructions,
                        preamble=rules.preamble, lm=lm_from_config(cfg.student), num_threads=cfg.student.threads)
        usage = UsageLog()
        with usage.stage("contribution", scorer) as spent:
            contributions = rule_contributions(scorer, rules, dev)
        updated = with_contributions(rules, contributions)
        _save(folder, program, updated)
    for (rule_id, value), text in zip(contributions.items(), rules.active_rules()):
        flag = "  <- the prompt scores higher without it" if value < 0 else ""
        print(f"{value:+.4f}  {rule_id}: {text[:100]}{flag}")
    print(f"wrote the contributions ({len(dev)} dev examples; {spent.lm_calls} student calls, {spent.cache_hits} "
          f"from the cache, {spent.seconds:.0f} s) to {folder.path / 'rules.json'}, report.md and review.html")
    return 0


def report_cmd(args) -> int:
    """report.md written again from rules.json as it is now, then printed."""
    folder = RunFolder(args.dir)
    with folder.writing():
        rules = RuleSet.load(folder.path / "rules.json")
        text = render_report(rules, title=folder.title, context=rules.context)
        atomic_write_text(folder.path / "report.md", text)
    print(text)
    return 0
