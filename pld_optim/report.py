"""report.md for a compile: what was distilled, how well it did, and what it cost."""

from __future__ import annotations

from pld_optim.artifact import RuleSet


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _cell(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render_report(rules: RuleSet, *, title: str = "PLD compile", context: dict | None = None) -> str:
    lines = [f"# {title}", ""]
    for key, value in (context or {}).items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Result", "",
              "| | dev macro F1 |", "|---|---|",
              f"| unoptimized program | {_f(rules.baseline_dev_macro_f1)} |",
              f"| with the distilled rules | {_f(rules.dev_macro_f1)} |", ""]
    c = rules.clustering
    if c:
        per_label = f", per label {c.per_label}" if c.per_label else ""
        lines += ["## Clustering", "",
                  f"{c.method}: {c.n_rules} mined rules -> {c.n_clusters} clusters{per_label} "
                  f"(sizes {c.cluster_sizes}), {c.n_noise} noise ({100 * c.noise_share:.0f}%) dropped.", ""]
    lines += ["## Rules in the system prompt", ""]
    by_id = {r.id: r for r in rules.rules}
    active = rules.active_rules()
    ids = [s.rule_id for s in rules.selection] if rules.selection else [r.id for r in rules.rules]
    for n, (rid, text) in enumerate(zip(ids, active), 1):
        r = by_id[rid]
        worth = ""
        if r.contribution is not None:
            worth = f"; dev macro F1 {r.contribution:+.4f} from this rule"
            if r.contribution < 0:
                worth += " (**flagged: the prompt scores higher without it**)"
        lines.append(f"{n}. {text}  \n   _{rid}: from {r.cluster_size} mined rules; {r.origin}{worth}_")
    if rules.refusals:
        lines += ["", f"## Refused by the quality gates ({len(rules.refusals)})", "",
                  "| stage | from | text | reason |", "|---|---|---|---|"]
        lines += [f"| {r.stage} | {_cell(r.source, 40)} | {_cell(r.text)} | {_cell(r.reason, 80)} |"
                  for r in rules.refusals]
    lines += ["", "## Refinement", "", "| iteration | dev macro F1 | failures shown | successes shown | kept | note |",
              "|---|---|---|---|---|---|"]
    for h in rules.history:
        lines.append(f"| {h.iteration} | {h.dev_macro_f1:.4f} | {h.n_failures} | {h.n_successes} | "
                     f"{'yes' if h.accepted else 'no'} | {_cell(h.note)} |")
    if rules.search:
        s = rules.search
        lines += ["", "## Search", "",
                  f"{s.n_trials} Optuna trials ({s.n_pruned} pruned, {s.n_repaired} repaired to fit the token budget); "
                  f"best dev macro F1 {s.best.macro_f1:.4f} with {len(s.best.selection)} rules and "
                  f"{s.best.prompt_tokens} prompt tokens ({s.token_counter}); {s.student_calls} student predictions."]
        if s.pareto:
            lines += ["", "| prompt tokens | dev macro F1 | rules |", "|---|---|---|"]
            lines += [f"| {c.prompt_tokens} | {c.macro_f1:.4f} | {', '.join(x.rule_id for x in c.selection)} |"
                      for c in s.pareto]
    lines += ["", "## Spend", "",
              "| stage | LM calls | cached | prompt tokens | completion tokens | seconds | failures |",
              "|---|---|---|---|---|---|---|"]
    for u in rules.usage:
        lines.append(f"| {u.stage} | {u.lm_calls} | {u.cache_hits} | {u.prompt_tokens} | {u.completion_tokens} | "
                     f"{u.seconds:.1f} | {u.failures} |")
    lines += ["", "## System prompt as the student receives it", "", "```text", rules.system_prompt, "```", ""]
    return "\n".join(lines)
