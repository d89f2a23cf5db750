"""The content of a compile's artifacts (program.json, rules.json, system_prompt.txt, report.md, review.html),
rendered in memory before any is written: an error while rendering one changes none of them."""

from __future__ import annotations

from pathlib import Path

from pld_optim.run.cache import resume_hint


def render_artifacts(folder: Path, program, rules, *, title: str, mined: list) -> dict[str, str | bytes]:
    """Each artifact's content by name; an error names the artifact and what the paid work still is."""
    from pld_optim.run.report import render_report
    from pld_optim.run.review import review_page

    makers = {"program.json": lambda: program_state(program),
              "rules.json": lambda: rules.model_dump_json(indent=2) + "\n",
              "system_prompt.txt": lambda: rules.system_prompt + "\n",
              "report.md": lambda: render_report(rules, title=title, context=rules.context),
              "review.html": lambda: review_page(rules, mined=mined, context=rules.context,
                                                 title=title.replace("compile", "rule review"))}
    out = {}
    for name, make in makers.items():
        try:
            out[name] = make()
        except Exception as exc:  # noqa: BLE001 - named, with what the paid work still is
            raise RuntimeError(f"{folder / name} could not be rendered ({type(exc).__name__}: {exc}). Nothing in "
                               f"{folder} was changed. {resume_hint()}") from exc
    return out


def program_state(program) -> bytes:
    """What DSPy's `Module.save` writes to a .json file, as bytes: written by the folder, so a full disk is
    reported as one (DSPy's save says to pickle the program instead, which `evaluate` refuses)."""
    import orjson
    from dspy.utils.saving import get_dependency_versions

    state = program.dump_state()
    state["metadata"] = {"dependency_versions": get_dependency_versions()}
    return orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
