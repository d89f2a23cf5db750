"""`pld-optim compare`: PLD against DSPy's optimizers on the same student, teacher, data and seed."""

from pld_optim.compare.registry import ALL, Setup
from pld_optim.compare.render import render_html, render_markdown
from pld_optim.compare.runner import RunResult, load_outcomes, run_compare, summarize

__all__ = ["ALL", "RunResult", "Setup", "load_outcomes", "render_html", "render_markdown", "run_compare", "summarize"]
