"""DiffMIC's small synthetic trial (the one tests/test_diffmic.py::test_diffmic_beats_chance_on_synthetic runs)
for several seeds: the chain's and the prior's validation Macro-F1 and the test Macro-F1 per seed.

    python benchmarks/diffmic_synthetic_seeds.py 0 1 2      # about a minute per seed on one core
"""

import sys
import tempfile
from pathlib import Path

from harness.run.latency import LatencySettings
from harness.run.runner import RunSettings, cached_plugins, run_trial
from harness.run.trial import Experiment, expand

_, registry = cached_plugins((), ())
for seed in map(int, sys.argv[1:]):
    exp = Experiment(methods=("diffmic",), datasets=("synthetic",), profile="cpu", seeds=(seed,),
                     overrides={"synthetic": {"size": 16, "n_train": 350, "n_val": 140, "n_test": 140},
                                "diffmic": {"steps": 400, "dcg_warmup_epochs": 10, "batch_size": 32, "eval_every": 5,
                                            "feature_dim": 128, "uncertainty_chains": 0, "explain_per_class": 0}})
    (trial,) = expand(exp, registry)
    settings = RunSettings(runs_dir=Path(tempfile.mkdtemp()), threads=1, latency=LatencySettings(onnx=False, budget_s=0.01, max_repeats_b1=2))
    r = run_trial(trial, settings, reporter=lambda **_: None)
    n = r["notes"]
    print(seed, r["status"], "chain", round(n["val_macro_f1"], 3), "prior", round(n["val_prior_macro_f1"], 3), "test", round(r["metrics"]["macro_f1"], 3), flush=True)
