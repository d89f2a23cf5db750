"""pld-optim: Prompt-Level Distillation (arXiv 2602.21103) for DSPy."""

import os

# Start-up must not reach the network for litellm's price map (offline machines, CI).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from pld_optim.evaluation.scorer import Scorer  # noqa: E402
from pld_optim.evaluation.scoring import Score, run_student, score_outcomes  # noqa: E402
from pld_optim.lm.adapter import LabelAdapter  # noqa: E402
from pld_optim.plan import apply_rules  # noqa: E402
from pld_optim.records import MinedRule  # noqa: E402
from pld_optim.rules import Prompt, Rule, RuleSet  # noqa: E402
from pld_optim.run.folder import RunFolder  # noqa: E402
from pld_optim.search.config import SearchConfig  # noqa: E402
from pld_optim.teleprompter import PLD  # noqa: E402

__all__ = ["PLD", "LabelAdapter", "MinedRule", "Prompt", "Rule", "RuleSet", "RunFolder", "Score", "Scorer",
           "SearchConfig", "apply_rules", "run_student", "score_outcomes"]
__version__ = "0.1.0"
