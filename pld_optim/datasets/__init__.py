"""Benchmark and user data as dspy.Examples: StereoSet, ContractNLI and your own CSV or JSON lines.

Only the command line and the benchmarks read data; the teleprompter takes dspy.Examples."""

from pld_optim.datasets import contract_nli, stereoset
from pld_optim.datasets.common import DEFAULT_FRACTIONS, SPLITS, DataError, split_of
from pld_optim.datasets.contract_nli import load_contract_nli
from pld_optim.datasets.generic import load_generic
from pld_optim.datasets.stereoset import load_stereoset

REFERENCE_RULES = {"stereoset": stereoset.REFERENCE_RULES, "contract_nli": contract_nli.REFERENCE_RULES}

__all__ = ["DEFAULT_FRACTIONS", "REFERENCE_RULES", "SPLITS", "DataError", "load_contract_nli", "load_generic",
           "load_stereoset", "split_of"]
