"""Commands that rewrite a compile folder: `ablate`, `pick` and `report`. Each holds the folder's lock, creates
nothing in a folder that holds no rules.json, and works from the rules as they are now (a reviewer may have
edited rules.json), never from figures measured on other rules. pick and ablate carry an edited rules.json
into what they write; no command replaces another artifact a person edited (RunFolder.check_replaceable)."""

from __future__ import annotations

from pathlib import Path

import dspy

from pld_optim.cli.common import check_answers, lm_from_config, preflight, run_context, use_disk_cache
from pld_optim.cli.config import load_config
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.task import resolve_task
from pld_optim.plan import apply_rules
from pld_optim.rules import RuleSet
from pld_optim.run.folder import RunFolder
from pld_optim.run.report import render_report, stale_score, texts_differ_from_system_prompt
from pld_optim.run.usage import UsageLog
from pld_optim.stages.contribution import rule_contributions, with_contributions


def compile_folder(path: str, **kwargs) -> RunFolder:
    """The folder of an earlier compile, or an error that says what was expected (before anything is
    created or locked: a typo must not leave a new folder behind)."""
    folder = RunFolder(path, **kwargs)
    rules = folder.path / "rules.json"
    if not folder.path.is_dir():
        raise FileNotFoundError(f"{folder.path} is not a folder; give the --out folder of a compile")
    if not rules.is_file():
        raise FileNotFoundError(f"{folder.path} holds no rules.json, so it is not the output folder of a compile "
                                "(pld-optim compile CONFIG --out DIR writes one)")
    return folder


def _rules_of(folder: RunFolder, program: dspy.Module) -> RuleSet:
    rules = RuleSet.load(folder.path / "rules.json")
    apply_rules(program, rules)  # refuses rules of another task before anything is written
    return rules


def _save(folder: RunFolder, command: str, program: dspy.Module, ruleset: RuleSet, **changes) -> None:
    """The folder's rule set with `changes`, as the student now receives it, headed by this command's context."""
    changed = ruleset.model_copy(update=changes)
    scorer = Scorer(program, resolve_task(program), base_instructions=changed.base_instructions,
                    preamble=changed.preamble)
    folder.save(apply_rules(program, changed), changed.model_copy(update={
        "system_prompt": scorer.system_prompt(changed.prompt()), "context": {**changed.context, **folder.context}}),
        command=command)


def _refuse_unscored(folder: RunFolder, rules: RuleSet, picked: RuleSet, max_tokens: int) -> None:
    """The point's figures were measured on its rules as the search saw them: a rule deleted or edited since
    makes them another prompt's."""
    ids = [s.rule_id for s in picked.selection]
    where = f"pick: {folder.path / 'rules.json'}"
    deleted = [i for i in ids if i not in {r.id for r in rules.rules}]
    if deleted:
        raise ValueError(f"{where}: the best Pareto point within {max_tokens} prompt tokens names rule(s) "
                         f"{', '.join(deleted)}, which rules.json no longer holds (deleted after the search), so its "
                         "dev macro F1 and prompt tokens are not those of any rules there. Restore the rule(s), give "
                         "a smaller --max-tokens whose point does not name them, or compile again")
    edited = rules.edited_rules(ids)
    if not rules.rule_digests and texts_differ_from_system_prompt(rules):
        edited = [s.rule_id for s in rules.selection or []]  # a file from before rule digests were kept
    if edited:
        raise ValueError(f"{where}: rule(s) {', '.join(edited)} were edited after the search, so the Pareto front's "
                         "dev macro F1 and prompt tokens are not theirs. Undo the edit to pick, or compile again; "
                         "`pld-optim evaluate CONFIG --program DIR --split dev` scores the edited rules")


def pick_cmd(args) -> int:
    """Choose another point of a multi-objective search's Pareto front, with no LM call. The front's F1 and
    token counts were measured on the rules as the search saw them: a point whose rules were edited since
    is refused, since its figures would describe other rules."""
    cfg = load_config(args.config)
    program = build_program(cfg.data)
    folder = compile_folder(args.dir, context=run_context(cfg, args.config), title=f"PLD compile: {cfg.name}")
    with folder.writing(create=False):
        rules = _rules_of(folder, program)
        folder.check_replaceable("pick")
        picked = rules.pick(args.max_tokens)
        _refuse_unscored(folder, rules, picked, args.max_tokens)
        _save(folder, "pick", program, picked, scored_prompt=picked.prompt_digest())  # the search scored exactly this
    chosen = next(c for c in picked.search.pareto if c.selection == picked.selection)
    print(f"picked {len(picked.selection)} rules, {chosen.prompt_tokens} prompt tokens, dev macro F1 "
          f"{chosen.macro_f1:.4f}; rewrote {folder.path / 'program.json'}, rules.json, system_prompt.txt, report.md "
          "and review.html")
    return 0


def ablate_cmd(args) -> int:
    """Each active rule's contribution, for an edited rules.json too: one dev pass per rule, no teacher. The
    full prompt is scored first, so a student that gives no valid answer stops it before the other passes,
    and rules.json's dev macro F1 becomes the score of its rules as they are now."""
    cfg = load_config(args.config)
    program = build_program(cfg.data)
    folder = compile_folder(args.dir, context=run_context(cfg, args.config), title=f"PLD compile: {cfg.name}")
    dev = load_split(cfg.data, "dev")
    if not dev:
        raise ValueError("ablate: the dev split is empty; set data.fractions")
    with folder.writing(create=False):
        rules = _rules_of(folder, program)
        folder.check_replaceable("ablate")  # before the first student call
        preflight(cfg, teacher=False)
        use_disk_cache(folder.cache_dir)  # prompts the search already scored are cache hits
        scorer = Scorer(program, resolve_task(program), base_instructions=rules.base_instructions,
                        preamble=rules.preamble, lm=lm_from_config(cfg.student), num_threads=cfg.student.threads)
        usage = UsageLog()
        with usage.stage("contribution", scorer) as spent:
            outcomes = scorer.outcomes(rules.prompt(), dev)
            full = check_answers(outcomes, rules.labels, "ablate: the full prompt on dev", cfg)
            contributions = rule_contributions(scorer, rules.rules, [sel for _, sel in rules.selected()],
                                               rules.label_field, dev, full=full.macro_f1)
        _save(folder, "ablate", program, rules, rules=with_contributions(rules.rules, contributions),
              dev_macro_f1=full.macro_f1, dev_confusion=full.confusion, scored_prompt=rules.prompt_digest())
    for (rule_id, value), text in zip(contributions.items(), rules.active_rules()):
        flag = "  <- the prompt scores higher without it" if value < 0 else ""
        print(f"{value:+.4f}  {rule_id}: {text[:100]}{flag}")
    print(f"dev macro F1 of the rules as they are: {full.macro_f1:.4f}")
    print(f"wrote the contributions ({len(dev)} dev examples; {spent.lm_calls} student calls, {spent.cache_hits} "
          f"from the cache, {spent.invalid} invalid answers, {spent.seconds:.0f} s) to {folder.path / 'rules.json'}, "
          "report.md and review.html")
    return 0


def report_cmd(args) -> int:
    """report.md written again from rules.json as it is now, then printed (an edit since its dev macro F1
    was measured is said so at the top)."""
    folder = compile_folder(args.dir)
    with folder.writing(create=False):
        rules = RuleSet.load(folder.path / "rules.json")
        text = render_report(rules, title=folder.title, context=rules.context)
        folder.write("report.md", text, command="report")
    print(text)
    stale = stale_score(rules)
    if stale:
        print(f"note: {Path(args.dir) / 'rules.json'} was edited after its dev macro F1 was measured ({stale})")
    return 0
