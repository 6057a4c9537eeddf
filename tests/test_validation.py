"""Malformed recipes and overrides, written as a new user would: each refused before compute, naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

RECIPES = {
    "typo_top": "pipline: [prune]\n",
    "bad_sweep_key": "pipeline: [prune, quantize]\nsweep:\n  stages.prune.rate: [0.3, 0.5]\n",
    "bad_sweep_value": "pipeline: [prune]\nsweep:\n  stages.prune.ratio: [0.3, 1.2]\n",
    "sweep_not_list": "pipeline: [prune]\nsweep:\n  stages.prune.ratio: 0.3\n",
    "broken_yaml": "pipeline: [prune\nstages: {\n",
    "string_ratio": "pipeline: [prune]\nstages:\n  prune:\n    ratio: half\n",
    "sweep_unused": "pipeline: [quantize]\nsweep:\n  stages.distill.temperature: [2, 4]\n",
    # recipes are data: anything that would make Hydra instantiate code is refused when selected
    "with_callback": "pipeline: [prune]\nhydra:\n  callbacks:\n    x:\n      _target_: numpy.savetxt\n",
    "with_target": "pipeline: [prune]\nstages:\n  prune:\n    _target_: os.system\n",
    "with_logging_factory": "pipeline: [prune]\nhydra:\n  job_logging:\n    handlers:\n      h:\n"
                            "        (): logging.FileHandler\n        filename: /tmp/x\n",
}

CASES = [  # (arguments, text the message must contain)
    (["+recipe=pkdq", "stages.prune.ratio=1.5"], "stages.prune.ratio=1.5 is not allowed: must be in [0, 1)"),
    (["+recipe=pkdq", "stages.distill.temperature=0"], "stages.distill.temperature=0.0 is not allowed: must be in (0"),
    (["+recipe=pkdq", "stages.prune.ratoi=0.3"],
     "stages.prune.ratoi='0.3' is not allowed: unknown key 'ratoi' under stages.prune; allowed there: method, ratio"),
    (["+recipe=pkdq", "stages.prunee.ratio=0.3"],
     "unknown key 'prunee' under stages; allowed there: awq, baseline, distill"),
    (["+recipe=pkdq", "stages.prune.ratio=abc"], "stages.prune.ratio='abc' is not allowed: must be a number"),
    (["+recipe=pkdqq"], "recipe='pkdqq' is not allowed: must be one of "),
    (["+recipe=pkdq", "pipeline=[prune,distil]"], "pipeline[1]='distil' is not allowed: unknown stage"),
    (["+recipe=pkdq", "pipeline=[graph,prune]"], "graph(onnx) cannot feed prune(torch) in graph>prune"),
    (["+recipe=pkdq", "stages.quantize.mode=int3"], "stages.quantize.mode='int3' is not allowed: must be one of"),
    (["+recipe=pkdq", "task=foo"], "task='foo' is not allowed: must be one of digits, hf, lm, smollm2, tinylm, tweets"),
    (["+recipe=pkdq", "task.epochs=-1"], "task.epochs=-1 is not allowed"),
    (["+recipe=pkdq", "report.register=my model"], "report.register='my model' is not allowed: must be a model name"),
    (["+recipe=pkdq", "report.register=pick", "tracking.log_models=false"],
     "report.register='pick' is not allowed: needs the models in MLflow"),
    (["+recipe=pkdq", "task.hidden=abc"], "task.hidden='abc' is not allowed: must be of type int"),
    (["+recipe=pkdq", "stages.prune.importance=l3"], "stages.prune.importance='l3' is not allowed: must be one of l1"),
    (["+recipe=pkdq", "eval.threads=0"], "eval.threads=0 is not allowed"),
    (["+recipe=pkdq", "eval.threads=[1,2]"], "eval.threads=[1, 2] is not allowed: must be an integer"),
    (["+recipe=pkdq", "seed"], "argument='seed' is not allowed: give overrides as key=value"),
    (["+recipe=pkdq", "--multirun"], "argument='--multirun' is not allowed"),
    (["+recipe=pkdq", "hydra.callbacks.x._target_=os.system"], "only hydra.searchpath may be set"),
    ([], "recipe=None is not allowed: select one with +recipe=NAME; available:"),
    (["+recipe=typo_top"], "pipline=['prune'] is not allowed: unknown key 'pipline'; allowed there: description, "
                           "pipeline"),
    (["+recipe=bad_sweep_key"], "sweep.stages.prune.rate=0.3 is not allowed: no such key"),
    (["+recipe=bad_sweep_value"], "sweep.stages.prune.ratio=1.2 is not allowed: must be in [0, 1)"),
    (["+recipe=sweep_not_list"], "sweep.stages.prune.ratio=0.3 is not allowed: must be a non-empty list of values"),
    (["+recipe=broken_yaml"], "recipe 'broken_yaml'"),
    (["+recipe=string_ratio"], "stages.prune.ratio='half' is not allowed: must be a number"),
    (["+recipe=with_callback"], "recipe='with_callback' is not allowed: recipe "),
    (["+recipe=with_target"], "contains 'stages.prune._target_'"),
    (["+recipe=with_logging_factory"], "contains 'hydra'"),
    # accepted by the schema, but they could not take effect in this run
    (["+recipe=pkdq", "pipeline=[quantize]", "stages.prune.ratio=0.3"],
     "stages.prune.ratio=0.3 is not allowed: no chain of this run has a prune step (chains: quantize)"),
    (["+recipe=sweep_unused"], "sweep.stages.distill.temperature=[2, 4] is not allowed: no chain of this run has a "
                               "distill step"),
    (["+recipe=pkdq", "executor.max_retries=5"], "executor.max_retries=5 is not allowed: is read by the Ray "
                                                 "executor only"),
    (["+recipe=pkdq", "report.max_perplexity_ratio=1.2"], "report.max_perplexity_ratio=1.2 is not allowed: task "
                                                          "'digits' measures accuracy drop, not this: bound it with "
                                                          "report.max_loss"),
    (["+recipe=pkdq", "report.max_download_mb=5"], "report.max_download_mb=5.0 is not allowed: limits "
                                                   "browser_download_mb, which only the browser target measures"),
    (["+recipe=pkdq", "eval.browser.threads=4"], "eval.browser.threads=4 is not allowed: configures the browser "
                                                 "measurement, which this run does not take: add browser to "
                                                 "eval.targets"),
    (["+recipe=pkdq", "eval.samples=50"], "eval.samples=50 is not allowed: is how many test examples the other "
                                          "targets"),
    (["+recipe=pkdq", "gate.max_loss=0.01", "gate.max_accuracy_drop=0.02"],
     "gate.max_accuracy_drop=0.02 is not allowed: means gate.max_loss, which is set to 0.01"),
]


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipes")
    for name, text in RECIPES.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) or "no-recipe" for a, _ in CASES])
def test_refused_before_compute(args, expected, recipe_dir, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "ORCHESTRATOR_RECIPES": str(recipe_dir), "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "orchestrator", *args, f"cache.dir={cache}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    message = out.stdout + out.stderr
    assert out.returncode == 2, message
    assert expected in message, message
    assert "Traceback" not in message
    # nothing was computed or tracked: no node in the cache, no MLflow database
    assert not (cache / "nodes").exists() or not any((cache / "nodes").iterdir())
    assert not (tmp_path / "mlflow.db").exists()
