"""The HTML pages a person reads (review.html, compare.html), rendered by a real headless Chromium.

Debian's `chromium` is installed by .ci/run, which sets PLD_REQUIRE_CHROMIUM=1 so a missing browser fails CI
instead of skipping. Each page is screenshotted and its DOM dumped after its JavaScript ran: the test asserts
the page is not blank, plotly drew its charts, every active rule is on it, and no tall empty band splits it.
"""

import html
import os
import re
import shutil
import subprocess

import dspy
import numpy as np
import pytest
from conftest import Classify

from pld_optim import PLD, RunFolder
from pld_optim.rules import RuleSet
from pld_optim.run.review import review_data

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    BROWSER is None and not os.environ.get("PLD_REQUIRE_CHROMIUM"),
    reason="no chromium on PATH (apt-get install chromium); .ci/run installs it")
MAX_EMPTY_BAND_PX = 140


def chromium(page, *args: str, tmp) -> subprocess.CompletedProcess:
    assert BROWSER, "PLD_REQUIRE_CHROMIUM is set but chromium is not on PATH"
    # --virtual-time-budget lets the inlined plotly.js run before the DOM is dumped or the screenshot taken.
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=15000", *args, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def render(page, tmp) -> tuple[str, np.ndarray]:
    from PIL import Image

    dom = chromium(page, "--dump-dom", tmp=tmp).stdout
    shot = tmp / f"{page.stem}.png"
    chromium(page, f"--screenshot={shot}", "--window-size=1280,5000", tmp=tmp)
    # Only what a reader sees: the inlined plotly.js and figure data would otherwise match anything.
    visible = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    return html.unescape(visible), np.asarray(Image.open(shot).convert("RGB"))


def assert_looks_rendered(pixels: np.ndarray) -> None:
    blank_rows = (pixels >= 250).all(axis=(1, 2))
    content = np.flatnonzero(~blank_rows)
    assert content.size > 300, "the screenshot is (nearly) blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "the screenshot has almost no colours"
    # The longest run of empty rows between the first and last drawn row: a band a reader scrolls through.
    inner = blank_rows[content[0]:content[-1] + 1]
    longest, run = 0, 0
    for blank in inner:
        run = run + 1 if blank else 0
        longest = max(longest, run)
    assert longest <= MAX_EMPTY_BAND_PX, f"an empty band of {longest} px splits the page"


@pytest.fixture
def compiled_folder(teacher, student, data, tmp_path):
    train, dev = data
    out = tmp_path / "run"
    PLD(teacher=teacher, n_clusters=2, out_dir=out, max_refine_iters=1,
        search={"n_trials": 10, "minibatch_size": 6, "multi_objective": True}).compile(
        dspy.Predict(Classify), trainset=train, valset=dev)
    return out


def test_review_data_links_each_rule_to_its_evidence(compiled_folder):
    rules = RuleSet.load(compiled_folder / "rules.json")
    data = review_data(rules, list(RunFolder(compiled_folder).read_mined().values()))
    assert [a["text"] for a in data["active"]] == rules.active_rules()
    for a in data["active"]:
        assert a["rule"].contribution is not None
        assert a["evidence"], f"{a['rule'].id} shows no supporting example"
        for e in a["evidence"]:
            assert e["id"] in a["rule"].support and e["inputs"] and e["rationale"]
            assert e["gold"] == a["rule"].label  # label-wise clusters: every supporting example has its label
    assert rules.dev_confusion and rules.baseline_dev_confusion
    # Rows are gold labels: they add up to the dev examples of each label.
    assert sum(map(sum, rules.dev_confusion)) == sum(map(sum, rules.baseline_dev_confusion)) == 12


@needs_browser
def test_review_page_renders_every_rule_in_headless_chromium(compiled_folder, tmp_path):
    rules = RuleSet.load(compiled_folder / "rules.json")
    page = compiled_folder / "review.html"
    dom, pixels = render(page, tmp_path)
    assert_looks_rendered(pixels)
    assert rules.active_rules()
    for text in rules.active_rules():
        assert " ".join(text.split()) in dom, f"rule not on the page: {text}"
    for r in rules.rules:
        if r.contribution is not None:
            assert f"contribution {r.contribution:+.3f}" in dom
    assert dom.count('class="main-svg"') >= 3  # plotly drew the confusion matrices, contributions and front
    assert "Pareto front" in dom and "Refused by the quality gates" in dom
    # Provenance: the supporting examples' teacher rationales are on the page, under their rule.
    for a in review_data(rules, list(RunFolder(compiled_folder).read_mined().values()))["active"]:
        section = dom.split(f'id="{a["rule"].id}"')[1].split('class="rule')[0]
        assert all(e["rationale"] in section for e in a["evidence"])


@needs_browser
def test_compare_page_renders_tables_and_plots_in_headless_chromium(tmp_path):
    from pld_optim.compare import render_html

    def row(name, f1):
        return {"optimizer": name, "seeds": 1, "macro_f1": f1, "spread": (f1, f1), "ci": (f1 - 0.1, f1 + 0.05),
                "accuracy": f1, "vs_zero_shot": "better (+0.1 to +0.3)" if name == "pld" else "",
                "latency_s": 0.2, "output_tokens": 3.0, "prompt_tokens": 150.0 + 100 * f1, "compile_calls": 40,
                "lm_calls": 40, "billed_calls": 40,
                "compile_tokens": 9000.0, "teacher_calls": 12, "compile_seconds": 30.0,
                "per_class_f1": {"gender": f1, "race": f1 / 2}, "errors": []}

    page = tmp_path / "compare.html"
    render_html([row("zero-shot", 0.41), row("miprov2-0shot", 0.47), row("pld", 0.62)],
                {"config": "quickstart", "seeds": [0]}, page)
    dom, pixels = render(page, tmp_path)
    assert_looks_rendered(pixels)
    assert dom.count('class="main-svg"') >= 1
    for name in ("zero-shot", "miprov2-0shot", "pld"):
        assert f"<td>{name}</td>" in dom
    assert "|---|" not in dom and "**" not in dom
