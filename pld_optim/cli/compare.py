"""`pld-optim compare`: every optimizer on the same student, teacher, splits and seeds."""

from __future__ import annotations

from pathlib import Path

from pld_optim.cli.common import lm_from_config, preflight, use_disk_cache
from pld_optim.cli.config import build_program, load_config, load_split
from pld_optim.compare import Setup, render_html, render_markdown, run_compare, summarize
from pld_optim.evaluation.task import resolve_task
from pld_optim.files import atomic_write_text
from pld_optim.run.folder import RunFolder
from pld_optim.run.tracking import Tracker


def compare_cmd(args) -> int:
    cfg = load_config(args.config)
    folder = RunFolder(args.out)
    folder.check()
    program = build_program(cfg.data)
    train, dev, test = (load_split(cfg.data, s) for s in ("train", "dev", "test"))
    if not test:
        raise ValueError("the test split is empty; set data.fractions or data.test_limit")
    print(f"compare {args.optimizers} x seeds {args.seeds} | {len(train)} train, {len(dev)} dev, {len(test)} test | "
          f"student {cfg.student.model} | teacher {cfg.teacher.model} | budget {args.budget}")
    tracker = Tracker.from_config(cfg.tracking)
    if tracker:
        tracker.check(dry_run=args.dry_run)
    if args.dry_run:
        return 0
    preflight(cfg)
    out = Path(args.out)
    results = []
    with folder.writing():
        use_disk_cache(folder.cache_dir)
        for seed in args.seeds:
            setup = Setup(program=program, train=train, dev=dev, test=test, student=lm_from_config(cfg.student),
                          teacher=lm_from_config(cfg.teacher), seed=seed, threads=cfg.student.threads,
                          budget=args.budget, pld_kwargs={**cfg.pld, "search": cfg.search})
            results += run_compare(setup, args.optimizers, out)
        rows = summarize(results, out, resolve_task(program).labels)
        context = {"config": args.config, "student": cfg.student.model, "teacher": cfg.teacher.model,
                   "data": f"{len(train)} train / {len(dev)} dev / {len(test)} test", "seeds": args.seeds,
                   "budget": args.budget}
        markdown = render_markdown(rows, context)
        atomic_write_text(out / "compare.md", markdown)
        render_html(rows, context, out / "compare.html")
    print(markdown)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.html'}")
    if tracker:
        run_id = tracker.log_compare(rows, context, out, run_name=f"compare: {cfg.name}")
        print(f"logged MLflow run {run_id} (experiment {tracker.experiment!r}) to {tracker.uri}")
    return 0
