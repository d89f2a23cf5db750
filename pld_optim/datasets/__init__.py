"""Benchmark and user data as dspy.Examples: StereoSet, ContractNLI and your own CSV or JSON lines.

Only the command line and the benchmarks read data; the teleprompter takes dspy.Examples and uses only
`sampling`, so the loaders (and the `datasets` library under them) are imported on first use."""

from importlib import import_module

_EXPORTS = {"DEFAULT_FRACTIONS": "common", "SPLITS": "common", "DataError": "common", "split_of": "common",
            "load_contract_nli": "contract_nli", "load_generic": "generic", "load_stereoset": "stereoset"}
_SUBMODULES = ("common", "contract_nli", "excerpt", "generic", "sampling", "stereoset", "tasks")


def __getattr__(name: str):
    if name == "REFERENCE_RULES":
        return {"stereoset": import_module(f"{__name__}.stereoset").REFERENCE_RULES,
                "contract_nli": import_module(f"{__name__}.contract_nli").REFERENCE_RULES}
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_FRACTIONS", "REFERENCE_RULES", "SPLITS", "DataError", "load_contract_nli", "load_generic",
           "load_stereoset", "split_of"]
