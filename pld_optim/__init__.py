"""pld-optim: Prompt-Level Distillation (arXiv 2602.21103) for DSPy."""

import os

# Start-up must not reach the network for litellm's price map (offline machines, CI).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from pld_optim.adapter import LabelAdapter  # noqa: E402
from pld_optim.artifact import MinedRule, Rule, RuleSet  # noqa: E402
from pld_optim.pld import PLD, apply_rules  # noqa: E402
from pld_optim.scoring import Score, run_student, score_outcomes  # noqa: E402

__all__ = ["PLD", "LabelAdapter", "MinedRule", "Rule", "RuleSet", "Score", "apply_rules", "run_student",
           "score_outcomes"]
__version__ = "0.1.0"
