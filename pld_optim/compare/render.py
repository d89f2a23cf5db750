"""compare.md and a self-contained compare.html (opens from disk, no server) from the summary rows."""

from __future__ import annotations

from pathlib import Path

from pld_optim.files import atomic_write_text
from pld_optim.run.templating import render


def _errors(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["optimizer"], " ".join(str(e).split())[:300]) for r in rows for e in r["errors"]]


def render_markdown(rows: list[dict], context: dict) -> str:
    labels = list(rows[0]["per_class_f1"]) if rows else []
    return render("compare.md.j2", rows=rows, context=context, labels=labels, errors=_errors(rows))


def render_html(rows: list[dict], context: dict, path: Path) -> None:
    """HTML tables, then plots whose F1 axes run 0-1."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [r["optimizer"] for r in rows]
    f1 = [r["macro_f1"] for r in rows]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.14, subplot_titles=(
        "Test macro F1 (95% CI)", "F1 vs prompt tokens per call", "F1 vs student latency", "F1 vs compile cost"))
    fig.add_trace(go.Bar(x=names, y=f1, error_y={"type": "data", "symmetric": False,
                                                 "array": [r["ci"][1] - r["macro_f1"] for r in rows],
                                                 "arrayminus": [r["macro_f1"] - r["ci"][0] for r in rows]}),
                  row=1, col=1)
    for col, row, key, title in ((2, 1, "prompt_tokens", "prompt tokens per call"),
                                 (1, 2, "latency_s", "student seconds per example"),
                                 (2, 2, "compile_tokens", "compile tokens")):
        fig.add_trace(go.Scatter(x=[r[key] for r in rows], y=f1, text=names, mode="markers+text",
                                 textposition="top center", cliponaxis=False), row=row, col=col)
        fig.update_xaxes(title_text=title, row=row, col=col)
    fig.update_yaxes(range=[0, 1.05], title_text="test macro F1")  # F1 lives in [0, 1]: never an auto range
    fig.update_layout(height=760, showlegend=False, margin={"t": 40, "b": 40, "l": 60, "r": 20})
    labels = list(rows[0]["per_class_f1"]) if rows else []
    atomic_write_text(path, render("compare.html.j2", rows=rows, context=context, labels=labels, errors=_errors(rows),
                                   figure=fig.to_html(full_html=False, include_plotlyjs=True)))
