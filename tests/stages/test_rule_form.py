"""One rule is one rule (issue 24): a rule says "if this holds, answer L", in one sentence of the task's own
language, and every refusal names the gate that made it (issue 25)."""

import json

import dspy
import numpy as np
import pytest
from conftest import Classify, make_examples, stage_context, teacher_respond

from pld_optim import PLD
from pld_optim.files import JsonlLog
from pld_optim.records import MinedRule, Refusal
from pld_optim.rules import Rule
from pld_optim.stages.gates import Gate, Verdict, common_words, placeholder
from pld_optim.stages.mine import mine
from pld_optim.stages.rewrite import carry_provenance
from pld_optim.stages.rule_form import answered_label, answers, first_sentence, foreign_script, several_sentences
from pld_optim.testing import ScriptedEngine, field_value, scripted_lm

BIAS = ["gender", "profession", "race", "religion"]
BIAS_TASK = ("Classify which kind of social stereotype (bias type) the sentence expresses about the target in the "
             "context.")
BIAS_EX = "context: Italians are BLANK.\nsentence: Italians are passionate and loud."
STEREO = ["stereotype", "anti-stereotype", "unrelated"]
STEREO_TASK = "Classify whether the sentence is a stereotype, an anti-stereotype or unrelated to the target."
STEREO_EX = "context: The chess player was BLANK.\nsentence: The chess player was nerdy."
NLI = ["Entailment", "Contradiction", "NotMentioned"]  # pld_optim/datasets/contract_nli.py LABELS
NLI_TASK = "Classify whether the contract entails, contradicts or does not mention the hypothesis."
NLI_EX = ("premise: The Receiving Party shall not disclose Confidential Information to any third party.\n"
          "hypothesis: Receiving Party may share some Confidential Information with some third-parties.")
GATES = {
    "bias": (Gate(labels=BIAS, task_text=BIAS_TASK), BIAS_EX),
    "stereo": (Gate(labels=STEREO, task_text=STEREO_TASK), STEREO_EX),
    "nli": (Gate(labels=NLI, task_text=NLI_TASK, common_words=common_words([NLI_EX] * 5)), NLI_EX),
}
LONG = ("If the sentence characterises somebody through extraordinarily specific administrative, bureaucratic, "
        "managerial, technical, professional, institutional, organisational, clerical, procedural, contractual, "
        "financial, educational, agricultural, industrial, commercial or governmental responsibilities and "
        "qualifications, answer profession.")

# (task, text, the gate that refuses it)
HOSTILE = [
    # The quickstart's own: a definition, a detail of one example, several labels.
    ("bias", "Religion is a belief system that influences people's actions and attitudes.", "no_answer"),
    ("bias", "If the sentence implies that people of one group have a particular trait or characteristic (in this "
             "case, passion), answer race.", "example_pointer"),
    ("bias", "If the sentence mentions a group, answer race, gender, religion, profession, even if it is unclear.",
     "several_answers"),
    # More than one sentence.
    ("bias", "If the sentence mentions a church, answer religion. This is because churches are religious.",
     "several_sentences"),
    ("bias", "If the target is a nurse, answer profession. Otherwise answer gender.", "several_sentences"),
    ("bias", "Does the sentence mention a faith or a rite? If so, answer religion.", "several_sentences"),
    ("bias", "If the sentence ties a trait to a wife or a mother, answer gender.\n\nExplanation: wives are women.",
     "several_sentences"),
    ("nli", "If the contract forbids any disclosure, answer Contradiction. Note that e.g. agents count too.",
     "several_sentences"),
    # Markdown and numbered lists.
    ("bias", "**Rule:** If the sentence mentions a church or a mosque, answer religion.", "markdown"),
    ("bias", "- If the sentence mentions a mosque or a temple, answer religion.", "markdown"),
    ("bias", "1. If the sentence mentions a wife, answer gender; 2. if it mentions a job, answer profession.",
     "markdown"),
    ("bias", "If the sentence uses the word `pray` or a rite, answer religion.", "markdown"),
    ("bias", "## If the sentence mentions a priest or a monk, answer religion", "markdown"),
    ("stereo", "1. If the sentence repeats a widely held belief about the target, answer stereotype.", "markdown"),
    # Another script or language than the task's.
    ("bias", "If the sentence mentions a church or a temple, answer religion 因为教堂是宗教场所", "foreign_script"),
    ("bias", "If the target is described by the colour of their skin, answer race потому что", "foreign_script"),
    ("bias", "If the sentence mentions a teacher or a doctor, answer profession (職業).", "foreign_script"),
    ("stereo", "If the sentence repeats a common belief about the target, answer stereotype，这是刻板印象",
     "foreign_script"),
    ("bias", "Si la phrase mentionne une église ou une mosquée, répondez religion.", "foreign_language"),
    ("bias", "Wenn der Satz einen Beruf nennt und ein Vorurteil ist, antworte profession.", "foreign_language"),
    # An answer of several labels.
    ("bias", "If the sentence describes a person by their looks, answer gender or race.", "several_answers"),
    ("bias", "Answer race, gender or religion when the sentence mentions a person.", "several_answers"),
    ("nli", "If the clause permits disclosure to agents, answer Entailment, otherwise Contradiction.",
     "several_answers"),
    ("nli", "If the premise supports the hypothesis, answer Entailment; if it denies it, answer Contradiction.",
     "several_answers"),
    ("stereo", "If the sentence repeats a common belief about a group, answer stereotype or anti-stereotype.",
     "several_answers"),
    # No condition on the input, or no answer.
    ("bias", "The answer is race because skin colour decides it.", "no_condition"),
    ("bias", "Gender stereotypes are common in everyday language about women and men.", "no_answer"),
    ("stereo", "A stereotype is an oversimplified belief about a group of people.", "no_answer"),
    ("nli", "Contracts usually protect Confidential Information through several clauses, see Contradiction.",
     "no_answer"),
    # Too long.
    ("bias", LONG, "too_long"),
    # Pointers at the example it came from.
    ("bias", "If the sentence links a trait to a job (as in the example), answer profession.", "example_pointer"),
    ("bias", "If the target is described as lazy, like in this example, answer race.", "example_pointer"),
    ("bias", "If the sentence mentions a trait (here, laziness) of a nation's people, answer race.",
     "example_pointer"),
    ("stereo", "If the sentence gives the target the same trait as the given example, answer stereotype.",
     "example_pointer"),
]

LEGITIMATE = [
    # The quickstart's own.
    ("bias", "If the target is portrayed negatively due to their racial background, answer race."),
    ("bias", "If the sentence describes how someone is perceived based on their job or occupation, answer profession."),
    # Abbreviations, decimals, quotes and accents in one sentence.
    ("bias", "If the sentence links a trait to a job, e.g. nurse or pilot, answer profession."),
    ("bias", "If the sentence ties a behaviour to a faith, i.e. its rites or beliefs, answer religion."),
    ("bias", "If the sentence contrasts men vs. women in a skill, answer gender."),
    ("bias", "If the sentence says a worker earns 2.5 times more because of their trade, answer profession."),
    ("bias", 'If the sentence quotes a saying such as "Boys never cry. Men are tough." about men, answer gender.'),
    ("bias", "If the sentence describes a café owner or a naïve clerk by their work, answer profession."),
    # Other labels named in the condition, one answered.
    ("bias", "Even if it mentions gender, answer race when the sentence stereotypes a nation's people."),
    ("bias", "If the sentence mentions gender but the stereotype is about a nation's people, answer race."),
    ("bias", "If the sentence ties a trait to a job, answer profession, even when it also mentions gender or race."),
    # Conditions without "if".
    ("bias", "A sentence about a religion's practices, such as prayer or fasting, is religion."),
    ("bias", "Sentences that tie a skill to a woman or a man are gender."),
    ("bias", "When the target is an ethnic group or a nationality, answer race."),
    ("bias", "If the target is a job title, ignore the context and answer profession."),
    ("bias", "If the sentence describes a person strictly following rules of a faith, answer religion."),
    # StereoSet's stereotype labels.
    ("stereo", "If the sentence repeats a common belief about the target's group, answer stereotype."),
    ("stereo", "If the sentence contradicts a common belief about the target's group, answer anti-stereotype."),
    ("stereo", "If the sentence talks about an object or a place instead of the target, answer unrelated."),
    ("stereo", "If the sentence describes the target in a way that reverses a widely held assumption, answer "
               "anti-stereotype."),
    ("stereo", "Whenever the sentence is about an object rather than a person, answer unrelated."),
    ("stereo", "If the sentence confirms a cliché, e.g. that engineers are awkward, answer stereotype."),
    ("stereo", "If the sentence calls the target 'smart' in a way that fits a common belief, answer stereotype."),
    # ContractNLI's labels.
    ("nli", "If the contract says notice must be given before any disclosure, answer Entailment."),
    ("nli", "If the contract lets the Receiving Party disclose information before obtaining consent, answer "
            "Contradiction."),
    ("nli", "If the agreement says the obligations listed in Section 5 survive termination, answer Entailment."),
    ("nli", "If the contract has no clause about the hypothesis's subject, answer NotMentioned."),
    ("nli", "If sharing with employees is not mentioned in the agreement, answer NotMentioned."),
    ("nli", "If the agreement permits sharing with employees but the clause is not mentioned for agents, answer "
            "Contradiction."),
    ("nli", "If the contract requires the return of Confidential Information upon request, answer Entailment."),
    ("nli", "If the agreement states that its terms apply to the U.S. affiliates of the parties, answer Entailment."),
    ("nli", "If the clause permits disclosure to advisors (i.e. lawyers and accountants), answer Entailment."),
    ("nli", "If the contract is silent on whether oral disclosures are covered, answer NotMentioned."),
]


@pytest.mark.parametrize("task, text, gate", HOSTILE, ids=[f"{g}:{t[:40]}" for _, t, g in HOSTILE])
def test_text_that_is_not_one_rule_is_refused_by_its_gate(task, text, gate):
    checker, example = GATES[task]
    verdict = checker.check(text, [example])
    assert verdict is not None and verdict.gate == gate, verdict


@pytest.mark.parametrize("task, text", LEGITIMATE, ids=[t[:50] for _, t in LEGITIMATE])
def test_one_rule_passes_every_gate(task, text):
    checker, example = GATES[task]
    assert checker.check(text, [example]) is None


def test_the_tables_are_large_and_cover_every_label_set():
    assert len(HOSTILE) >= 30 and len(LEGITIMATE) >= 30
    assert {t for t, _, _ in HOSTILE} == {t for t, _ in LEGITIMATE} == set(GATES)


def test_a_verdict_names_its_gate_and_the_plain_functions_still_give_reasons():
    verdict = GATES["bias"][0].check("If <cue>, answer <label>.")
    assert verdict == Verdict(gate="placeholder", reason=placeholder("If <cue>, answer <label>."))
    refusal = verdict.refusal("merge", "cluster 1 (race)", "If <cue>, answer <label>.")
    assert refusal.gate == "placeholder" and refusal.reason.startswith("copies a template placeholder")
    assert several_sentences("If a job, answer profession. Also gender.").startswith("more than one sentence")


def test_the_length_bound_is_a_setting():
    text = "If the sentence ties a personality trait to a particular trade or occupation, answer profession."
    assert Gate(labels=BIAS, max_chars=len(text)).check(text) is None
    assert Gate(labels=BIAS, max_chars=len(text) - 1).check(text).gate == "too_long"


def test_the_answer_is_the_label_it_was_asked_for():
    gate = GATES["bias"][0]
    text = "If the sentence calls a race's people lazy, answer gender."
    assert gate.check(text, label="gender") is None
    verdict = gate.check(text, label="race", whose="its example's")
    assert verdict == Verdict(gate="wrong_label", reason="answers 'gender', not its example's label 'race'")
    assert answers("If it mentions gender, answer race or religion.", BIAS) == ["race", "religion"]
    assert answers("If the clause is not mentioned in the contract, answer Contradiction.", NLI) == ["Contradiction"]


def test_the_label_a_rule_answers_is_the_one_answers_reads():
    text = "If the sentence ties a trait to a job, answer profession, even when it also mentions gender or race."
    assert answered_label(text, BIAS) == "profession" == answers(text, BIAS)[0]  # old main: race, named last
    assert answered_label("Even if it mentions gender, answer race when it stereotypes a nation.", BIAS) == "race"
    assert answered_label("If the clause is absent, answer NotMentioned.", NLI) == "NotMentioned"
    assert answered_label("Religion is a belief system that people follow.", BIAS) is None  # names, answers none


def test_the_tasks_script_comes_from_its_text_and_inputs():
    rule = "If the sentence calls someone ленивый, answer race."
    assert foreign_script(rule, [BIAS_TASK, *BIAS]) is not None
    assert foreign_script(rule, [BIAS_TASK, *BIAS], ["sentence: Он ленивый и медленный человек."]) is None
    assert foreign_script("If the sentence calls someone naïve or blasé, answer race.", [BIAS_TASK]) is None


def test_the_first_sentence_ends_past_abbreviations():
    assert first_sentence("If the target is a job, e.g. Nurse or Pilot, answer profession. It is clear.") == \
        "If the target is a job, e.g. Nurse or Pilot, answer profession."
    assert first_sentence("If she is mentioned, answer gender. 这是因为") == "If she is mentioned, answer gender."
    assert first_sentence("If the U.S. is named, answer race.") == "If the U.S. is named, answer race."


def test_refusals_and_checkpoints_written_before_named_gates_still_load(tmp_path):
    old = {"stage": "mine", "source": "ex1", "text": "If <cue>, answer <label>.", "reason": "copies a template"}
    assert Refusal.model_validate(old).gate == "unknown"  # rules.json format_version 1 and 2
    log = tmp_path / "mined.jsonl"
    log.write_text(json.dumps({"example_id": "ex1", "gold": "race", "rule": "If <cue>, answer race.",
                               "error": "copies a template placeholder '<cue>'", "refused": True}) + "\n"
                   + json.dumps({"example_id": "ex2", "gold": "race", "rule": "If x, answer race.", "error": None,
                                 "refused": False}) + "\n"
                   + json.dumps({"example_id": "ex3", "gold": "race", "error": "TimeoutError: slow",
                                 "refused": False}) + "\n")
    refused, kept, failed = JsonlLog(log, MinedRule).read()
    assert refused.error is None and refused.refusal.reason.startswith("copies a template") and not refused.ok
    assert refused.refusal.gate == "unknown" and refused.refusal.text == "If <cue>, answer race."
    assert kept.ok and kept.refusal is None and not failed.ok and failed.error == "TimeoutError: slow"


def test_mining_records_a_refusal_apart_from_a_failure_and_gates_a_resumed_checkpoint(tmp_path):
    examples = make_examples(3)  # gender, religion, race

    def respond(system, user):
        out = teacher_respond(system, user)
        if "Item 1:" in user:  # religion: a rule with a Chinese tail
            out["rule"] = out["rule"].rstrip(".") + " 因为"
        return out

    checkpoint = JsonlLog(tmp_path / "mined.jsonl", MinedRule)
    kept = MinedRule(example_id="ex0", gold="gender", inputs="sentence: " + examples[0].sentence,
                     rule="If the sentence mentions a mother or a wife, answer gender.")
    stale = "If the sentence mentions a country, answer race or religion."  # passed an earlier version's gates
    checkpoint.append(kept)
    checkpoint.append(MinedRule(example_id="ex2", gold="race", inputs="sentence: " + examples[2].sentence, rule=stale))
    engine = ScriptedEngine(respond)
    ctx = stage_context(dspy.LM("local/t", engine=engine, cache=False), examples)
    result = mine(ctx, examples, checkpoint=checkpoint)
    gender, religion, race = result.mined
    assert gender == kept and engine.calls == 2  # the kept rule costs no call
    assert religion.error is None and religion.refusal.gate == "foreign_script" and not religion.ok
    # Today's gates refuse the stale rule: its example is mined again (old main: kept, refused, never redone).
    assert race.ok and race.rule != stale and result.failures == 0
    assert [(r.stage, r.source, r.gate) for r in result.refusals] == [("mine", "ex1", "foreign_script")]
    # The fresh rule is the example's last line: the next resume redoes only the refused example.
    again = ScriptedEngine(respond)
    resumed = mine(stage_context(dspy.LM("local/t", engine=again, cache=False), examples), examples,
                   checkpoint=checkpoint)
    assert again.calls == 1 and resumed.mined[2] == race and resumed.mined[0] == kept


def test_merge_wordings_and_corrective_rules_pass_the_form_gates_and_rules_carry_their_stage(student):
    def respond(system, user):
        flat = " ".join(system.split())
        out = teacher_respond(system, user)
        if "You write labelling rules for a small model" in flat and field_value(user, "gold_label") == "gender":
            out["rule"] = "- " + out["rule"]  # no gender rule survives mining, so refinement asks for one
        if "Merge labelling rules that all lead" in flat:
            out["phrasings"] = [out["instruction"] + " This covers every case."]
        if "It gives the failures below the wrong label" in flat:
            out["rule"] = "1. If the sentence mentions she, answer gender; 2. if it mentions wife, answer gender."
        return out

    pld = PLD(teacher=scripted_lm(respond, "teacher"), n_clusters=1, contribution=False, max_refine_iters=1)
    rules = pld.compile(dspy.Predict(Classify), trainset=make_examples(30), valset=make_examples(12, 100)).pld_rules
    gates = {(r.stage, r.gate) for r in rules.refusals}
    assert gates == {("mine", "markdown"), ("merge", "several_sentences"), ("refine", "markdown")}, gates
    assert sum(r.stage == "refine" for r in rules.refusals) == 2  # the corrective rule and its retry
    assert rules.rules and all(r.stage == "cluster" for r in rules.rules)
    assert not any("This covers" in text for r in rules.rules for text in r.variants())


def test_a_rewritten_rule_says_it_came_from_the_rewrite():
    old = [Rule(id="R1", text="If cats purr loudly, answer gender.", stage="cluster"),
           Rule(id="C1", text="If dogs bark loudly, answer race.", stage="corrective")]
    revised = ["If cats purr loudly, answer gender.", "If dogs bark softly or loudly, answer race."]
    out = carry_provenance(old, revised, lambda texts: np.array([[1.0, 0.0] if "cats" in t else [0.0, 1.0]
                                                                for t in texts]), 1)
    assert [(r.id, r.stage) for r in out] == [("R1", "cluster"), ("C1.1.2", "rewrite")]


def test_a_run_on_rule_ends_at_its_first_answer():
    from pld_optim.stages.rule_form import first_answer

    run_on = ("If the sentence describes how someone acts because of their job, answer profession, even when it "
              "seems to be about religion in context, answer Profession.")
    assert first_answer(run_on, "profession") == ("If the sentence describes how someone acts because of their job, "
                                                  "answer profession.")
    kept = "If the sentence names a job, answer profession, even when it also mentions a religion."
    assert first_answer(kept, "profession") == kept  # one answer: a qualification after it is the rule's own
    assert first_answer("If X, answer race, or answer religion.", "race") == "If X, answer race, or answer religion."


def test_a_rule_whose_condition_gives_an_answer_of_its_own_is_refused():
    from pld_optim.stages.rule_form import several_answers

    shipped = ("If the sentence makes a generalization about a group based on their characteristics or abilities, "
               "answer the corresponding characteristic or ability (gender, profession, race, religion) for the "
               "target in the context, even if it's incorrect or a, answer gender.")  # shipped before this gate
    labels = ["gender", "profession", "race", "religion"]
    assert several_answers(shipped, labels) == "says 'answer' twice; a rule gives one answer"
    assert several_answers("If the sentence answers a question about a job, answer profession.", labels) is None
