"""The search stage: an Optuna study over the rules' subset, order, wording and worked examples.

`space` maps Optuna parameters to prompts, `study` runs the study (`PromptSearch`), `sampler` is the
`local` sampler, `storage` opens and checks where the study lives, `plots` draws Optuna's figures."""

from pld_optim.search.config import SearchConfig
from pld_optim.search.study import PromptSearch

__all__ = ["PromptSearch", "SearchConfig"]
