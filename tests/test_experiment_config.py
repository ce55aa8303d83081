"""Experiment files (``harness run --config``): parsing, errors, TOML writing, and flag precedence.
Fast: nothing here starts Ray or trains anything (``--dry-run`` lists the expanded trials)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from harness import HarnessError
from harness.run.experiment_config import (
    dump_experiment,
    load_experiment,
    merge_options,
    merge_overrides,
    parse_experiment,
    toml_value,
)

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_parse_normalises_every_key(tmp_path):
    (tmp_path / "conf").mkdir()
    path = _write(tmp_path / "conf" / "exp.toml", """
name = "my-exp"
methods = ["resnet", "constant"]
datasets = "synthetic, retinamnist"
samplers = ["uniform"]
seeds = [0, 1, 2]
profile = "smoke"
data_dir = "../data"
ray_storage = "/abs/ray"
executor = "ray"
cpus_per_trial = 0.5
plugins = ["tests.failing_plugin"]

[overrides.resnet]
lr = 0.001
milestones = [5, 8]

[overrides.dataset]
size = 64
""")
    parsed = load_experiment(path)
    assert parsed.options == {
        "experiment": "my-exp", "methods": "resnet,constant", "datasets": "synthetic,retinamnist",
        "samplers": "uniform", "seeds": "0,1,2", "profile": "smoke",
        "data_dir": (tmp_path / "data").resolve(), "ray_storage": Path("/abs/ray"), "executor": "ray",
        "cpus_per_trial": 0.5,
    }
    assert parsed.overrides == {"resnet": {"lr": 0.001, "milestones": [5, 8]}, "dataset": {"size": 64}}
    assert parsed.plugins == ("tests.failing_plugin",)


@pytest.mark.parametrize("seeds, expected", [(3, "3"), ("4, 5", "4,5"), ([7, 8], "7,8")])
def test_seeds_forms(seeds, expected, tmp_path):
    assert parse_experiment({"seeds": seeds}, tmp_path).options["seeds"] == expected


@pytest.mark.parametrize("data, message", [
    ({"method": "resnet", "methods": ["x"]}, "given twice"),
    ({"seeds": [0, "one"]}, "seeds must be integers"),
    ({"seeds": [True]}, "seeds must be integers"),
    ({"seeds": 1.5}, "list of integers"),
    ({"methods": []}, "methods is empty"),
    ({"methods": [1, 2]}, "list of names"),
    ({"epochs": 3}, "unknown key 'epochs'"),
    ({"overrides": {"resnet": 0.1}}, "must be a table"),
    ({"overrides": {"resnet": {"opt": {"lr": 1}}}}, "must be a value"),
    ({"data_dir": 3}, "must be a path"),
    ({"profile": ["cpu"]}, "single value"),
])
def test_bad_files_are_clear_errors(data, message, tmp_path):
    with pytest.raises(HarnessError, match=message):
        parse_experiment(data, tmp_path)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(HarnessError, match="not valid TOML"):
        load_experiment(_write(tmp_path / "bad.toml", "methods = [resnet\n"))
    with pytest.raises(HarnessError, match="cannot read"):
        load_experiment(tmp_path / "missing.toml")


def test_merge_precedence_and_overrides_key_by_key(tmp_path):
    parsed = parse_experiment({"seeds": [1, 2], "profile": "smoke", "methods": ["resnet"]}, tmp_path)
    cli_values = {"seeds": "9", "profile": "cpu", "methods": None, "datasets": "synthetic"}
    merged = merge_options(cli_values, explicit={"seeds"}, file=parsed)
    assert merged == {"seeds": "9", "profile": "smoke", "methods": "resnet", "datasets": "synthetic"}
    table = merge_overrides({"resnet": {"lr": 0.1, "epochs": 3}, "dataset": {"size": 32}},
                            {"resnet": {"lr": 0.5}, "synthetic": {"n_train": 70}})
    assert table == {"resnet": {"lr": 0.5, "epochs": 3}, "dataset": {"size": 32}, "synthetic": {"n_train": 70}}


def test_dump_round_trips_through_tomllib(tmp_path):
    values = {"experiment": 'a "quoted" name\\x', "methods": ["resnet"], "seeds": [0, 1], "profile": "cpu",
              "data_dir": None}
    overrides = {"resnet": {"lr": 1e-05, "wd": 3.0, "big": 1.5e300, "flag": True, "milestones": [5, 8],
                            "aug": "color,translation"}, "my.method": {"n": -2}, "empty": {}}
    text = dump_experiment(values, overrides, header=["line one", ""])
    assert text.startswith("# line one\n#\n")
    data = tomllib.loads(text)
    assert "data_dir" not in data and "empty" not in data["overrides"]
    assert data["experiment"] == 'a "quoted" name\\x'
    assert data["overrides"]["resnet"] == overrides["resnet"]
    assert data["overrides"]["my.method"] == {"n": -2}
    assert [toml_value(v) for v in (float("inf"), 2.0, False)] == ["inf", "2.0", "false"]
    with pytest.raises(HarnessError, match="cannot write"):
        toml_value({"a": 1})
    parsed = load_experiment(_write(tmp_path / "x.toml", text))
    assert parsed.options["seeds"] == "0,1"


def _dry_run(cli, *args) -> list[tuple[str, str, dict]]:
    result = cli("run", "--dry-run", *args)
    assert result.exit_code == 0, result.output
    rows = []
    for line in result.output.splitlines():
        if line.startswith(("todo ", "done ")):
            status, key, rest = line.split(None, 2)
            rows.append((status, key, json.loads(rest[rest.index("{"):])))
    return rows


def test_cli_flags_override_the_file(tmp_path, cli):
    path = _write(tmp_path / "exp.toml", """
methods = ["resnet"]
seeds = [1, 2]
profile = "smoke"
experiment = "from-file"

[overrides.resnet]
lr = 0.0042
epochs = 3
""")
    rows = _dry_run(cli, "--config", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert [r[1].split("-")[3] for r in rows] == ["s1", "s2"]
    assert all(r[0] == "todo" and r[2]["lr"] == 0.0042 and r[2]["epochs"] == 3 for r in rows)
    assert all(r[2]["batch_size"] == 64 for r in rows)  # the file's profile (smoke), not the default cpu
    # explicit flags win, even when equal to the flag's default; --set wins key by key
    rows = _dry_run(cli, "--config", str(path), "--seeds", "7", "--profile", "cpu", "--set", "resnet.lr=0.5",
                    "--runs-dir", str(tmp_path / "runs"))
    assert len(rows) == 1 and rows[0][1].split("-")[3] == "s7"
    # the cpu profile's batch on synthetic (its dataset profile: 32), the file's epochs, the flag's lr
    assert rows[0][2]["lr"] == 0.5 and rows[0][2]["epochs"] == 3 and rows[0][2]["batch_size"] == 32


def test_cli_config_errors(tmp_path, cli):
    bad = _write(tmp_path / "bad.toml", 'profile = "huge"\n')
    result = cli("run", "--config", str(bad), "--dry-run")
    assert result.exit_code == 2 and str(bad) in result.output and "huge" in result.output
    unknown = _write(tmp_path / "unknown.toml", 'methods = ["nope"]\n')
    result = cli("run", "--config", str(unknown), "--dry-run")
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output


def test_config_file_plugins_and_done_status(tmp_path, cli):
    runs = tmp_path / "runs"
    path = _write(tmp_path / "exp.toml", f"""
methods = ["constant"]
plugins = ["tests.failing_plugin"]
profile = "smoke"
runs_dir = "{runs}"
no_onnx = true
""")
    assert [r[0] for r in _dry_run(cli, "--config", str(path))] == ["todo"]
    assert cli("run", "--config", str(path)).exit_code == 0
    assert len(list(runs.rglob("result.json"))) == 1
    assert [r[0] for r in _dry_run(cli, "--config", str(path))] == ["done"]


@pytest.mark.parametrize("name", ["retinamnist.toml", "pneumoniamnist.toml", "synthetic-smoke.toml"])
def test_example_configs_parse_and_expand(name, cli, tmp_path):
    path = REPO / "benchmarks" / "configs" / name
    assert path.exists(), path
    rows = _dry_run(cli, "--config", str(path), "--runs-dir", str(tmp_path))
    assert rows and all(r[0] == "todo" for r in rows)


def test_help_and_list_do_not_import_ray():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom harness.cli import main\n"
            "for args in (['--help'], ['list'], ['run', '--help'], ['tune', '--help']):\n"
            "    r = CliRunner().invoke(main, args)\n"
            "    assert r.exit_code == 0, (args, r.output)\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_registered_method_declares_a_valid_search_space(cli):
    from harness.run.tuning import search_space_problems

    result = cli("list", "methods", "--json")
    assert result.exit_code == 0
    listed = {m["name"]: m["search_space"] for m in json.loads(result.output)}
    assert listed["resnet"]["lr"] == ["loguniform", 1e-4, 1e-2]
    from harness.registry import build_registry

    _, registry = build_registry()
    problems = [p for spec in registry.methods.values() for p in search_space_problems(spec)]
    assert problems == []
    assert set(listed) == set(registry.methods)


@pytest.mark.parametrize("space, message", [
    ({}, "declares no search_space"),
    ({"nope": ("uniform", 0.0, 1.0)}, "not a config key"),
    ({"lr": ("gaussian", 0.0, 1.0)}, "kind one of"),
    ({"lr": ("loguniform", 0.0, 1.0)}, "lo > 0"),
    ({"lr": ("uniform", 1.0, 0.5)}, "lo < hi"),
    ({"epochs": ("randint", 1.5, 4)}, "integers lo < hi"),
    ({"batch_size": ("choice", [])}, "non-empty list"),
])
def test_search_space_problems_are_named(space, message):
    from harness.contract.specs import MethodSpec
    from harness.run.tuning import search_space_problems
    from harness.toolkit.training_config import TrainConfig

    spec = MethodSpec(name="m", description="", config=TrainConfig, fit=lambda *a: None, search_space=space)
    problems = search_space_problems(spec)
    assert len(problems) == 1 and message in problems[0], problems


# ------------------------------------------------------------- ranges, refused before any trial starts


@pytest.mark.parametrize("seeds, message", [
    ("-1", "a seed must be an integer from 0 to 4294967295; found -1"),
    ("100000000000000000000000", "a seed must be an integer from 0 to 4294967295; found 100000000000000000000000"),
    ("1e23", "--seeds expects comma-separated integers from 0 to 4294967295, like 0,1,2; found '1e23'"),
    ("", "--seeds is empty"),
    (" , ", "--seeds is empty"),
])
def test_bad_seeds_are_refused_before_anything_runs(seeds, message, cli, tmp_path):
    result = cli("run", "--methods", "resnet", "--seeds", seeds, "--runs-dir", str(tmp_path), "--profile", "smoke")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not list(tmp_path.rglob("*.json"))  # nothing started, not even experiment.json


def test_bad_seeds_in_a_file_and_for_tune(cli, tmp_path):
    path = _write(tmp_path / "exp.toml", 'seeds = [0, -3]\nmethods = ["resnet"]\n')
    result = cli("run", "--config", str(path), "--dry-run")
    assert result.exit_code == 2 and "found -3" in result.output
    result = cli("tune", "--method", "resnet", "--dataset", "synthetic", "--run-seeds", "")
    assert result.exit_code == 2 and "--run-seeds is empty" in result.output
    result = cli("tune", "--method", "resnet", "--dataset", "synthetic", "--seed", "-2")
    assert result.exit_code == 2 and "--seed: a seed must be an integer from 0 to 4294967295" in result.output


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "CPU", "tpu:0"])
def test_bad_device_names_are_refused(device, cli, tmp_path):
    result = cli("run", "--methods", "resnet", "--device", device, "--dry-run", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2
    assert f"--device must be one of cpu, cuda, cuda:N, mps or auto; found {device!r}" in result.output


def test_a_device_this_machine_lacks_is_refused_before_any_trial(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = cli("run", "--methods", "resnet", "--device", "cuda", "--runs-dir", str(tmp_path), "--profile", "smoke")
    assert result.exit_code == 2
    assert "--device cuda: torch sees no CUDA GPU on this machine" in result.output
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("experiment.json"))
    # a dry run only lists, and a cluster's workers may have the GPU the driver lacks
    assert cli("run", "--methods", "resnet", "--device", "cuda:1", "--dry-run", "--runs-dir", str(tmp_path)).exit_code == 0


@pytest.mark.parametrize("setting, message", [
    ("dataset.size=4", "dataset 'synthetic': invalid config: size must be at least 8 and at most 1024; found 4"),
    ("synthetic.size=0", "size must be at least 8 and at most 1024; found 0"),
    ("dataset.size=100000", "size must be at least 8 and at most 1024; found 100000"),
    ("resnet.epochs=-3", "epochs must be at least 1; found -3"),
    ("resnet.batch_size=0", "batch_size must be at least 1; found 0"),
])
def test_out_of_range_options_are_refused_naming_field_and_range(setting, message, cli, tmp_path):
    result = cli("run", "--methods", "resnet", "--set", setting, "--dry-run", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2
    assert message in result.output, result.output


def test_no_save_model_from_a_file(tmp_path):
    parsed = parse_experiment({"no_save_model": True}, tmp_path)
    assert parsed.options == {"no_save_model": True}
