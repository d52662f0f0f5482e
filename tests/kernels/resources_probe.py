"""Run by test_fused_resources.py in a process of its own (the other fused tests interpret the kernels,
and compiled ones cannot be swapped in): compiles the fused kernels for named GPUs without one, and
prints, as JSON, what `choose_kernel` decides for each question of the test and what the kernels need."""

from __future__ import annotations

import dataclasses
import json
import sys

import torch

from fieldlab._errors import UserError
from fieldlab.fields import make_config
from fieldlab.kernels import fused
from fieldlab.kernels import resources
from fieldlab.kernels import choose_kernel, describe, fused_spec

GPUS = {
    "hopper": resources.HOPPER,
    # An RTX 4090 (Ada): 99 KB of shared memory per program, 100 KB per multiprocessor.
    "ada": resources.Multiprocessor("sm_89 (RTX 4090)", 89, shared=102_400, shared_per_program=101_376,
                                    max_warps=48, max_programs=24, count=128),
    # An A100 (Ampere): 163 KB per program.
    "ampere": resources.Multiprocessor("sm_80 (A100)", 80, shared=167_936, shared_per_program=166_912, count=108),
}


def _unreadable():
    raise RuntimeError("device properties unavailable")


def main(questions: list[dict]) -> list[dict]:
    answers = []
    for question in questions:
        gpu = GPUS.get(question["gpu"])
        resources.Multiprocessor.of = classmethod(lambda cls, device, gpu=gpu: gpu if gpu else _unreadable())
        fused._resource_problem.cache_clear()  # one process plays several GPUs
        config = make_config(question["field"], in_dim=question.get("in_dim", 2), out_dim=question.get("out_dim", 3),
                             **question["options"])
        answer = dict(question)
        try:
            chosen = choose_kernel(config, torch.device("cuda"), question["kernel"], question["precision"],
                                   forward=question.get("forward", False))
            answer["fused"] = chosen is not None
            answer["log"] = describe(config, torch.device("cuda"), question["kernel"], question["precision"])
        except UserError as error:
            answer["error"] = str(error)
        if question.get("resources"):
            answer["resources"] = dataclasses.asdict(resources.step_resources(fused_spec(config),
                                                                              question["precision"], sm=gpu))
        answers.append(answer)
    return answers


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.stdin.read()))))
