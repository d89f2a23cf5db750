"""The one Jinja environment the pages and reports are written with; HTML is escaped, Markdown is not."""

from __future__ import annotations

from functools import cache

import jinja2


@cache
def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("pld_optim.run", "templates"), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = markdown_cell
    env.filters["f4"] = lambda x: "n/a" if x is None else f"{x:.4f}"
    return env


def render(template: str, **values) -> str:
    return _environment(template.endswith(".html.j2")).get_template(template).render(**values)


def markdown_cell(text, limit: int = 160) -> str:
    """One table cell: a single line, pipes escaped, cut with an ellipsis."""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
