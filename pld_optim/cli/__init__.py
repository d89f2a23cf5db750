"""`pld-optim`: compile, quickstart, evaluate, ablate, pick, compare, report."""

from __future__ import annotations

import argparse
import logging
import sys

from pld_optim.cli.common import positive, seed, seeds
from pld_optim.lm.factory import LMStalled

log = logging.getLogger("pld_optim")

DEFAULT_OPTIMIZERS = "zero-shot,cot,bootstrap-fewshot,infer-rules-0shot,miprov2-0shot,pld"


def optimizer_list(text: str) -> list[str]:
    from pld_optim.compare.registry import ALL

    names = ALL if text == "all" else [o.strip() for o in text.split(",") if o.strip()]
    unknown = [o for o in names if o not in ALL]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown optimizer(s) {unknown or [text]}; choose from {', '.join(ALL)} "
                                         "or 'all'")
    return names


def _compile(args):
    from pld_optim.cli.compile import compile_cmd

    return compile_cmd(args)


def _evaluate(args):
    from pld_optim.cli.evaluate import evaluate_cmd

    return evaluate_cmd(args)


def _on_folder(args):
    """pick, ablate and report: commands on the folder of an earlier compile."""
    from pld_optim.cli import folder

    return getattr(folder, f"{args.command}_cmd")(args)


def _compare(args):
    from pld_optim.cli.compare import compare_cmd

    return compare_cmd(args)


def _add_compile(sub) -> None:
    c = sub.add_parser("compile", help="distil rules for the configured task")
    c.add_argument("config")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=seed)
    c.add_argument("--dry-run", action="store_true",
                   help="check everything that needs no LM call, print the LM-call estimate and stop; writes nothing")
    c.add_argument("--pull", action="store_true", help="let Ollama pull a missing model")
    c.add_argument("--test", action="store_true", help="then score zero-shot and PLD on the test split")
    c.add_argument("--fresh", action="store_true",
                   help="after every check passes, and holding the folder's lock, remove what an earlier compile wrote "
                        "to --out and start over: only in a folder whose fingerprint.json shows a compile wrote it "
                        "(not a compare folder, nor an optimizer's <name>-seed<N>/ in one, e.g. pld-seed0/ or "
                        "pld-rules-only-seed0/), only the files a compile writes, in cache/ only "
                        "DSPy's cache files, and never a file edited by hand (refused: move it away or delete it)")
    c.set_defaults(func=_compile)

    q = sub.add_parser("quickstart", help="compile the shipped quickstart config on the embedded models")
    q.add_argument("--out", default="out/quickstart")
    q.add_argument("--seed", type=seed)
    q.add_argument("--dry-run", action="store_true")
    q.add_argument("--fresh", action="store_true", help="start over in --out")
    q.set_defaults(func=_compile, config="quickstart", pull=False, test=True)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="score a compiled (or unoptimized) program; prints one JSON object")
    e.add_argument("config")
    e.add_argument("--program", required=True, help="a compile output folder, a program.json, or 'none'")
    e.add_argument("--data", help="a data file in the benchmark's format (default: the config's data)")
    e.add_argument("--split", choices=["train", "dev", "test", "all"],
                   help="default: test, or all with --data")
    e.add_argument("--rules", help="score this rules.json (e.g. a reviewer's edit) instead of the folder's; no "
                                   "teacher call")
    e.add_argument("--limit", type=positive, help="score only the first N examples (N >= 1)")
    e.add_argument("--no-cache", action="store_true", help="call the student even for answers in DSPy's cache")
    e.set_defaults(func=_evaluate)


def _add_folder_commands(sub) -> None:
    k = sub.add_parser("pick", help="choose a Pareto point (multi-objective search) within a token budget")
    k.add_argument("config")
    k.add_argument("dir")
    k.add_argument("--max-tokens", type=positive, required=True)
    k.set_defaults(func=_on_folder)

    a = sub.add_parser("ablate", help="each active rule's dev macro F1 contribution (e.g. after editing rules.json)")
    a.add_argument("config")
    a.add_argument("dir")
    a.set_defaults(func=_on_folder)

    r = sub.add_parser("report", help="write report.md again from the folder's rules.json and print it")
    r.add_argument("dir")
    r.set_defaults(func=_on_folder)


def _add_compare(sub) -> None:
    m = sub.add_parser("compare", help="PLD against DSPy's optimizers on the same student, data and seed")
    m.add_argument("config")
    m.add_argument("--optimizers", type=optimizer_list, default=optimizer_list(DEFAULT_OPTIMIZERS),
                   help="comma-separated, or 'all': zero-shot, cot, bootstrap-fewshot, infer-rules, "
                        "infer-rules-0shot, miprov2, miprov2-0shot, copro, gepa, simba, pld, pld-rules-only")
    m.add_argument("--out", required=True)
    m.add_argument("--seeds", type=seeds, default=[0], help="comma-separated, e.g. 0,1,2")
    m.add_argument("--budget", choices=["small", "light"], default="small",
                   help="small: a few candidates/trials each (fits a 2-core machine); light: DSPy's auto='light'")
    m.add_argument("--dry-run", action="store_true")
    m.set_defaults(func=_compare)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pld-optim", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="also show DSPy's and litellm's logs")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_compile, _add_evaluate, _add_folder_commands, _add_compare):
        add(sub)
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("dspy", "httpx", "LiteLLM", "datasets", "optuna"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the cache and checkpoints", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError, LMStalled) as exc:
        print(f"pld-optim: error: {exc}", file=sys.stderr)
        if args.verbose:
            log.exception("the error, with its traceback (--verbose)")
        return 2
    except Exception as exc:  # noqa: BLE001 - a user sees one line that names the error, never a traceback
        print(f"pld-optim: error: {type(exc).__name__}: {exc} (an unexpected error in pld-optim {args.command}; "
              f"rerun as `pld-optim --verbose {args.command} ...` for the traceback, and report it)", file=sys.stderr)
        if args.verbose:
            log.exception("the unexpected error, with its traceback")
        return 1


if __name__ == "__main__":
    sys.exit(main())
