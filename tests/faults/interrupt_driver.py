"""A PLD compile in its own process, for the interruption tests: scripted teacher and student (each call
logged to OUT/calls.log, then slowed a little), DSPy's disk cache in OUT/cache, artifacts in OUT."""

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
logging.disable(logging.WARNING)

import dspy  # noqa: E402
from conftest import Classify, make_examples, student_respond, teacher_respond  # noqa: E402

from pld_optim import PLD  # noqa: E402
from pld_optim.testing import ScriptedEngine  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
log = out / "calls.log"


def logged(role, respond):
    def answer(system, user):
        stage = ("mine" if "You write labelling rules for a small model" in system
                 else "merge" if "Merge labelling rules that all lead" in system
                 else "refine" if "A small model labels" in system else "student")
        with log.open("a") as fh:
            fh.write(f"{role}:{stage}\n")
        time.sleep(0.03)
        return respond(system, user)
    return answer


dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=False, disk_cache_dir=str(out / "cache"))
teacher = dspy.LM("local/teacher", engine=ScriptedEngine(logged("teacher", teacher_respond)), cache=True)
student = dspy.LM("local/student", engine=ScriptedEngine(logged("student", student_respond)), cache=True)
dspy.configure(lm=student)
train, dev = make_examples(30), make_examples(12, offset=100)
PLD(teacher=teacher, n_clusters=1, num_threads=1, student_threads=1, max_refine_iters=1, out_dir=out,
    search={"n_trials": 6, "minibatch_size": 6, "pruner": "none"}).compile(
    dspy.Predict(Classify), trainset=train, valset=dev)
print("DONE")
