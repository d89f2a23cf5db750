"""`pld-optim compare`: PLD against DSPy's optimizers on the same student, teacher, data and seed."""

from pld_optim.compare.registry import ALL, Setup
from pld_optim.compare.render import render_html, render_markdown
from pld_optim.compare.runner import CompileCost, RunResult, compile_one, load_outcomes, run_compare, summarize

__all__ = ["ALL", "CompileCost", "RunResult", "Setup", "compile_one", "load_outcomes", "render_html", "render_markdown",
           "run_compare", "summarize"]
