"""Optuna's own figures of a finished study, as self-contained HTML pages in the output folder."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

logger = logging.getLogger(__name__)

PLOTS = ("optimization_history", "param_importances", "pareto_front")


def save_plots(study: optuna.Study, out_dir: Path, multi_objective: bool) -> list[Path]:
    """History, rule importances and (multi-objective) the Pareto front; a figure Optuna cannot draw (e.g.
    importances when every trial tied) is skipped with a warning."""
    import optuna.visualization as vis

    target = (lambda t: t.values[0]) if multi_objective else None
    name = "dev macro F1"
    makers = {
        "optimization_history": lambda: vis.plot_optimization_history(study, target=target, target_name=name),
        "param_importances": lambda: vis.plot_param_importances(
            study, target=target, target_name=name, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)),
    }
    if multi_objective:
        makers["pareto_front"] = lambda: vis.plot_pareto_front(study, target_names=[name, "prompt tokens"])
    paths = []
    for key, make in makers.items():
        try:
            figure = make()
        except (ImportError, ValueError, RuntimeError) as exc:
            logger.warning("search: %s plot skipped: %s", key, exc)
            continue
        path = Path(out_dir) / f"search_{key}.html"
        figure.write_html(str(path), include_plotlyjs=True)
        paths.append(path)
    return paths
