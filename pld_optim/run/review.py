"""review.html: one self-contained page on which a reviewer can verify every rule the student follows.

The paper's promise to law, finance and moderation is that a person can read and check each piece of logic.
rules.json holds everything; this page lays it out for a person: each rule with its wordings, what it is
worth (its contribution), the train examples and teacher rationales it came from and the stage that made
it; then what the quality gates refused, the dev confusion matrix before and after, and the search. It
opens from disk with no server (plotly.js is inlined once) and is written from a Jinja2 template, so every
teacher text is escaped.
"""

from __future__ import annotations

from pld_optim.evaluation.scoring import INVALID
from pld_optim.records import MinedRule
from pld_optim.rules import Rule, RuleSet
from pld_optim.run.report import active_rules, stale_score
from pld_optim.run.templating import render

MAX_EXAMPLES = 5  # supporting examples shown per rule; the count says how many there are


def stage_of(rule: Rule) -> str:
    return "clustering" if rule.stage == "cluster" else "refinement"


def _evidence(rule: Rule, mined: dict[str, MinedRule]) -> list[dict]:
    """The cluster's central examples first (their rationales are the ones rules.json samples), then the rest."""
    central = [eid for eid in rule.support if eid in mined and mined[eid].rationale in rule.rationales]
    order = list(dict.fromkeys(central + rule.support))
    rows = []
    for eid in order[:MAX_EXAMPLES]:
        if eid in mined:
            m = mined[eid]
            rows.append({"id": eid, "gold": m.gold, "inputs": m.inputs, "rule": m.rule, "rationale": m.rationale})
    return rows


def review_data(rules: RuleSet, mined: list[MinedRule] | None = None) -> dict:
    """Everything the template shows, as plain values (tested without a browser)."""
    by_mined = {m.example_id: m for m in mined or []}
    active = []
    for position, item in enumerate(active_rules(rules), 1):
        r, sel = item["rule"], item["selection"]
        if rules.search is None:
            chosen = "no search: every refined rule, in order"
        else:
            chosen = (f"search kept it at position {position}, wording {sel.variant + 1} of {len(r.variants())}"
                      + (f", with {len(sel.demos)} worked example{'s' if len(sel.demos) > 1 else ''}"
                         if sel.demos else ""))
        active.append({**item, "n": position, "variant": sel.variant, "stage": stage_of(r), "chosen": chosen,
                       "evidence": _evidence(r, by_mined),
                       "flagged": r.contribution is not None and r.contribution < 0})
    used = {a["rule"].id for a in active}
    unused = [{"rule": r, "stage": stage_of(r)} for r in rules.rules if r.id not in used]
    return {"rules": rules, "active": active, "unused": unused, "stale": stale_score(rules)}


def _figures(rules: RuleSet, active: list[dict]) -> dict[str, str]:
    import plotly.graph_objects as go

    def html(fig, height: int) -> str:
        fig.update_layout(height=height, margin={"t": 40, "b": 50, "l": 60, "r": 20})
        return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})

    figures = {}
    matrices = [(name, m) for name, m in (("without rules", rules.baseline_dev_confusion),
                                          ("with the chosen rules", rules.dev_confusion)) if m]
    if matrices:
        from plotly.subplots import make_subplots

        columns = [*rules.labels, INVALID]
        fig = make_subplots(rows=1, cols=len(matrices), subplot_titles=[n for n, _ in matrices],
                            horizontal_spacing=0.12)
        top = max(max(map(max, m)) for _, m in matrices) or 1
        for col, (_, m) in enumerate(matrices, 1):
            fig.add_trace(go.Heatmap(z=m, x=columns, y=rules.labels, text=m, texttemplate="%{text}",
                                     colorscale="Blues", zmin=0, zmax=top, showscale=False), row=1, col=col)
            fig.update_xaxes(title_text="student's answer", row=1, col=col)
            fig.update_yaxes(title_text="gold label", autorange="reversed", row=1, col=col)
        figures["confusion"] = html(fig, 120 + 45 * len(rules.labels))
    measured = [a for a in active if a["rule"].contribution is not None]
    if measured:
        values = [a["rule"].contribution for a in measured]
        fig = go.Figure(go.Bar(x=[a["rule"].id for a in measured], y=values,
                               marker_color=["#c0392b" if v < 0 else "#2e86c1" for v in values]))
        fig.update_layout(title="Dev macro F1 lost when the rule is left out")
        fig.update_yaxes(title_text="contribution (dev macro F1)", zeroline=True)
        fig.update_xaxes(title_text="rule")
        figures["contribution"] = html(fig, 320)
    search = rules.search
    if search and search.pareto:
        pts = sorted(search.pareto, key=lambda c: c.prompt_tokens)
        fig = go.Figure(go.Scatter(x=[c.prompt_tokens for c in pts], y=[c.macro_f1 for c in pts],
                                   mode="lines+markers", line_shape="hv",
                                   text=[", ".join(s.rule_id for s in c.selection) or "no rules" for c in pts]))
        fig.update_layout(title="Pareto front: dev macro F1 against prompt tokens")
        fig.update_xaxes(title_text=f"prompt tokens ({search.token_counter})")
        fig.update_yaxes(title_text="dev macro F1", range=[0, 1.05])
        figures["search"] = html(fig, 360)
    elif search and search.history:
        done = [(t, f) for t, f, _ in search.history if f is not None]
        fig = go.Figure(go.Scatter(x=[t for t, _ in done], y=[f for _, f in done], mode="markers",
                                   name="trial"))
        best, running = [], -1.0
        for _, f in done:
            running = max(running, f)
            best.append(running)
        fig.add_trace(go.Scatter(x=[t for t, _ in done], y=best, mode="lines", name="best so far"))
        fig.update_layout(title="Search trials", legend={"orientation": "h", "y": -0.25})
        fig.update_xaxes(title_text="trial")
        fig.update_yaxes(title_text="dev macro F1", range=[0, 1.05])
        figures["search"] = html(fig, 340)
    return figures


def review_page(rules: RuleSet, *, mined: list[MinedRule] | None = None, context: dict | None = None,
                title: str = "PLD rule review") -> str:
    """The page as text (RunFolder.save renders every artifact before it writes any)."""
    from plotly.offline import get_plotlyjs

    data = review_data(rules, mined)
    return render("review.html.j2", title=title, context=context or {}, plotlyjs=get_plotlyjs(),
                  figures=_figures(rules, data["active"]), **data)
