"""Scripted LMs for your own tests: `from pld_optim.testing import scripted_lm, rule_follower, cue_teacher`.

They live in `pld_optim.lm.scripted`; this module is their public address.
"""

from pld_optim.lm.scripted import (
    ScriptedEngine,
    chat_answer,
    cue_examples,
    cue_teacher,
    field_value,
    rule_follower,
    scripted_lm,
)

__all__ = ["ScriptedEngine", "chat_answer", "cue_examples", "cue_teacher",
           "field_value", "rule_follower", "scripted_lm"]
