"""One home for "the student program with this prompt, run and scored".

Refinement, the search, the contribution step, the CLI's `evaluate`, `ablate` and `pick`, the tests and the
benchmarks all ask the same questions of a candidate prompt: what program is it, what system prompt does
the student receive, how many tokens does it cost, what does the student answer on these examples and what
macro F1 is that. A `Scorer` answers them for one student program, and counts the predictions it asked
for, so a stage can report and budget them.
"""

from __future__ import annotations

import threading

import dspy
from dspy.utils.callback import BaseCallback

from pld_optim.evaluation.scoring import Outcome, Score, run_student, score_outcomes
from pld_optim.evaluation.task import Task
from pld_optim.lm.adapter import student_adapter
from pld_optim.lm.factory import TokenCounter, token_counter
from pld_optim.program import with_rules
from pld_optim.rules import DEFAULT_PREAMBLE, Prompt


class _SentText(BaseCallback):
    """Collects the text of every message sent to an LM (cached calls included)."""

    def __init__(self, sink: list[str]):
        self.sink = sink

    def on_lm_start(self, call_id, instance, inputs):
        for message in inputs.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, list):
                content = " ".join(str(part.get("text", "")) if isinstance(part, dict) else str(part)
                                   for part in content)
            self.sink.append(str(content))
        if inputs.get("prompt"):
            self.sink.append(str(inputs["prompt"]))


class Scorer:
    """Scores prompts on one student program.

    Args:
        program: the user's program; it is never changed (every prompt is applied to a deep copy).
        task: the program's classification predictor and labels (`pld_optim.evaluation.task.resolve_task`).
        base_instructions: the task text the rule block is appended to (default: the predictor's own).
        adapter: the adapter the student runs under (default: the configured one, else `LabelAdapter()`;
            `pld_optim.lm.adapter.student_adapter`).
        lm: the student LM (default: the predictor's own LM, else `dspy.settings.lm`).
        num_threads: parallel student calls.
    """

    def __init__(self, program: dspy.Module, task: Task, *, base_instructions: str | None = None,
                 preamble: str = DEFAULT_PREAMBLE, adapter: dspy.Adapter | None = None, lm: dspy.BaseLM | None = None,
                 num_threads: int = 1, progress: bool = False):
        self.program = program
        self.task = task
        self.base_instructions = task.signature.instructions if base_instructions is None else base_instructions
        self.preamble = preamble
        self.adapter = student_adapter(adapter)
        self.lm = lm
        self.num_threads = num_threads
        self.progress = progress
        self.calls = 0  # student predictions asked for, cached or not
        self.invalid = 0  # of those, answers outside the label set or failed calls
        self._lock = threading.Lock()
        self._counter = None

    @property
    def student_lm(self) -> dspy.BaseLM | None:
        return self.lm or self.task.predictor.lm or dspy.settings.lm

    def build(self, prompt: Prompt) -> dspy.Module:
        """A copy of the program whose predictor carries the prompt's rules and demos."""
        return with_rules(self.program, self.task.predictor_name, self.base_instructions, prompt,
                          self.task.label_field, self.preamble)

    def system_prompt(self, prompt: Prompt) -> str:
        """The system message the student receives, rendered without an LM call."""
        return self.adapter.format_system_message(self._predictor(prompt).signature)

    def prompt_text(self, prompt: Prompt) -> str:
        """Everything the prompt adds before an example: the system message and the demo turns."""
        predictor = self._predictor(prompt)
        turns = self.adapter.format_demos(predictor.signature, predictor.demos) if predictor.demos else []
        return "\n\n".join([self.adapter.format_system_message(predictor.signature),
                            *(str(turn["content"]) for turn in turns)])

    def count_tokens(self, prompt: Prompt) -> int:
        """Prompt tokens in the student's tokenizer (or litellm's estimate for remote students)."""
        return self.token_counter.count(self.prompt_text(prompt))

    @property
    def token_counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = token_counter(self.student_lm)
        return self._counter

    def outcomes(self, prompt: Prompt, examples: list[dspy.Example]) -> list[Outcome]:
        settings = {"adapter": self.adapter, **({"lm": self.lm} if self.lm is not None else {})}
        with dspy.context(**settings):
            outcomes = run_student(self.build(prompt), examples, self.task, num_threads=self.num_threads,
                                   progress=self.progress)
        with self._lock:
            self.calls += len(outcomes)
            self.invalid += sum(o.pred not in self.task.labels for o in outcomes)
        return outcomes

    def score(self, prompt: Prompt, examples: list[dspy.Example]) -> Score:
        return score_outcomes(self.outcomes(prompt, examples), self.task.labels)

    def check_inputs_reach(self, examples: list[dspy.Example]) -> None:
        """The program must hand each example's inputs to the student: a custom `forward` that drops or
        renames them makes every score noise. Runs the program on `examples` and reads what the LM was sent."""
        sent: list[str] = []
        watch = _SentText(sent)
        settings = {"adapter": self.adapter, **({"lm": self.lm} if self.lm is not None else {})}
        with dspy.context(callbacks=[*dspy.settings.callbacks, watch], **settings):
            for example in examples:
                try:
                    self.program(**example.inputs())
                except Exception:  # noqa: BLE001 - a failing call is the baseline's to count, not this check's
                    pass
        text = "\n".join(sent)
        missing = sorted({f for ex in examples for f in self.task.input_fields
                          if " ".join(str(ex[f]).split())[:80] not in " ".join(text.split())})
        if sent and missing:
            raise RuntimeError(f"PLD: the program's calls to the student do not contain the examples' {missing} "
                               "(checked on the first dev examples): its forward() must pass every input field to "
                               "its predictor, or the student answers without seeing the input")
        if not sent:
            raise RuntimeError("PLD: running the program made no LM call; it must call its predictor")

    def _predictor(self, prompt: Prompt):
        return dict(self.build(prompt).named_predictors())[self.task.predictor_name]
