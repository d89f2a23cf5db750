"""Evaluation: the task a program defines, corpus-level scoring, the Scorer every stage shares, and
bootstrap intervals. Depends on `pld_optim.lm` and the rule records only."""

from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.scoring import Outcome, Score, run_student, score_outcomes
from pld_optim.evaluation.task import Task, resolve_task

__all__ = ["Outcome", "Score", "Scorer", "Task", "resolve_task", "run_student", "score_outcomes"]
