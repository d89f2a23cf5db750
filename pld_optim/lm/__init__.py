"""Language models: the embedded llama.cpp engine, model strings to dspy.LM, Ollama, the label adapter
and scripted LMs for tests. Depends on no other part of pld-optim."""

from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.factory import DEFAULT_STUDENT, as_lm, engine_of, make_lm, supports_grammar, token_counter

__all__ = ["DEFAULT_STUDENT", "LabelAdapter", "as_lm", "engine_of", "make_lm", "supports_grammar", "token_counter"]
