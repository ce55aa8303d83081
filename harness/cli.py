"""The ``harness`` command line. Importing this module imports neither torch nor the plugins: commands
load what they need when they run, so ``harness --help`` stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from harness.errors import HarnessError


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _registry(ctx: click.Context):
    from harness.run.runner import cached_plugins

    manager, registry = cached_plugins(ctx.obj["plugins"], ctx.obj["blocked"])
    for failure in registry.failures:
        click.echo(f"warning: plugin {failure.name!r} failed to load: {failure.error}", err=True)
    return manager, registry


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Also load this plugin module (repeatable; or HARNESS_PLUGINS=a.b,c.d).")
@click.option("--block-plugin", "blocked", multiple=True, metavar="NAME",
              help="Do not load the plugin with this name (repeatable; or HARNESS_BLOCK_PLUGINS).")
@click.version_option(package_name="harness", prog_name="harness")
@click.pass_context
def main(ctx: click.Context, plugins: tuple[str, ...], blocked: tuple[str, ...]) -> None:
    """harness: benchmark medical image classifiers (diffusion methods and their baselines) as plugins.

    \b
    harness run                                   every method on the built-in synthetic data
    harness run --methods resnet --datasets retinamnist --data-dir ../shared/data --seeds 0,1,2
    harness list methods                          what is registered, and by which plugin
    harness plugins                               installed plugins, versions and hooks
    harness leaderboard runs/synthetic            rank the results of a run
    harness report runs/synthetic --out site      publish it: Markdown, HTML and Parquet
    """
    ctx.ensure_object(dict)
    ctx.obj["plugins"] = tuple(plugins)
    ctx.obj["blocked"] = tuple(blocked)


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Experiment file (TOML): methods, datasets, seeds, overrides...; flags override it.")
@click.option("--methods", help="Comma-separated methods (default: every registered method).")
@click.option("--datasets", default="synthetic", show_default=True, help="Comma-separated datasets.")
@click.option("--samplers", default="uniform", show_default=True, help="Comma-separated samplers.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated integer seeds.")
@click.option("--profile", type=click.Choice(["smoke", "cpu", "paper"]), default="cpu", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SCOPE.KEY=VALUE",
              help="Override a config value: resnet.lr=3e-4, dataset.size=64 (repeatable).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (or HARNESS_DATA_DIR).")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--experiment", help="Experiment name: results go to RUNS_DIR/EXPERIMENT (default: the datasets).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one trial after another in this process; ray: Ray Tune trials in parallel.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option("--threads", type=int, help="torch threads per trial (default: all cores; ray: --cpus-per-trial).")
@click.option("--no-onnx", is_flag=True, help="Do not time ONNX Runtime (torch latency only).")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="ray: CPUs each trial reserves (also its torch thread count).")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="ray: GPUs each trial reserves; fractions share a GPU (0.5 = two trials per GPU).")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="ray: at most this many trials at once.")
@click.option("--address", help="ray: join this cluster (HEAD_IP:6379 from `ray start --head`, or auto); "
                                 "default: a local Ray instance.")
@click.option("--ray-storage", type=click.Path(path_type=Path),
              help="ray: where Ray keeps its own experiment state (default ~/ray_results).")
@click.option("--dry-run", is_flag=True, help="List the trials (and whether each is done) without running them.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Also load this plugin module.")
@click.option("--block-plugin", "blocked", multiple=True, metavar="NAME", help="Do not load this plugin.")
@click.pass_context
def run(ctx, config_file, methods, datasets, samplers, seeds, profile, overrides, data_dir, runs_dir, experiment,
        executor, device, threads, no_onnx, cpus_per_trial, gpus_per_trial, max_concurrent, address, ray_storage,
        dry_run, plugins, blocked):
    """Run methods x datasets x samplers x seeds, then print the leaderboard.

    Finished trials are skipped, so running the same command again resumes an interrupted run.
    With --config FILE the experiment comes from a TOML file; flags given explicitly override it.
    """
    from harness.results import leaderboard
    from harness.run.config import parse_overrides
    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings
    from harness.run.trial import Experiment, expand

    ctx.obj["plugins"] += tuple(plugins)
    ctx.obj["blocked"] += tuple(blocked)
    override_table = parse_overrides(list(overrides))
    if config_file is not None:
        from harness.run.experiment_config import merge_overrides

        values, file_overrides = _apply_config_file(ctx, config_file)
        (methods, datasets, samplers, seeds, profile, data_dir, runs_dir, experiment, executor, device, threads,
         no_onnx, cpus_per_trial, gpus_per_trial, max_concurrent, address, ray_storage) = (
            values[k] for k in ("methods", "datasets", "samplers", "seeds", "profile", "data_dir", "runs_dir",
                                "experiment", "executor", "device", "threads", "no_onnx", "cpus_per_trial",
                                "gpus_per_trial", "max_concurrent", "address", "ray_storage"))
        override_table = merge_overrides(file_overrides, override_table)
    _, registry = _registry(ctx)
    try:
        seed_list = tuple(int(s) for s in _csv(seeds))
    except ValueError:
        raise HarnessError(f"--seeds expects comma-separated integers like 0,1,2; found {seeds!r}") from None
    method_list = _csv(methods) or tuple(sorted(registry.methods))
    dataset_list = _csv(datasets)
    name = experiment or "-".join(dataset_list)
    exp = Experiment(
        methods=method_list, datasets=dataset_list, samplers=_csv(samplers), seeds=seed_list,
        profile=profile, overrides=override_table, name=name,
    )
    trials = expand(exp, registry)
    settings = RunSettings(
        runs_dir=runs_dir, data_dir=data_dir, plugins=ctx.obj["plugins"], blocked=ctx.obj["blocked"],
        device=device, threads=threads, latency=LatencySettings(onnx=not no_onnx),
    )
    click.echo(f"{len(trials)} trial(s) -> {runs_dir / name}")
    if dry_run:
        _print_trials(trials, Path(runs_dir))
        return
    _record_experiment(Path(runs_dir) / name, exp, _command_line(click.get_current_context()))
    if executor == "ray":
        from harness.run.executors.ray import RayOptions, run_ray

        options = RayOptions(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                             max_concurrent=max_concurrent, address=address, storage=ray_storage)
        summary = run_ray(trials, settings, options)
    else:
        from harness.run.executors.local import run_local

        summary = run_local(trials, settings)
    root = Path(runs_dir) / name
    board = leaderboard.write(root)
    click.echo("")
    click.echo(leaderboard.to_text(board))
    click.echo(f"{len(summary.ok)} ok, {len(summary.skipped)} skipped (done before), {len(summary.failed)} failed. "
               f"Leaderboard: {root / 'leaderboard.md'}")
    for key in summary.failed:
        click.echo(f"  failed: {key}: {summary.errors.get(key, '')} (see {root / key / 'result.json'})", err=True)
    from harness.report import write_report

    try:
        written = write_report(root, root / "report")
        click.echo(f"Report: {written['index.html']} (and leaderboard.md, results.parquet next to it)")
        _echo_mixed_settings(root)
    except Exception as exc:  # the results are safe on disk; `harness report` can be re-run on them
        click.echo(f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
                   f"the results are in {root}; retry with `harness report {root}`", err=True)
    sys.exit(summary.exit_code)


def _apply_config_file(ctx: click.Context, config_file: Path) -> tuple[dict, dict]:
    """The ``run`` parameters after applying an experiment file: the file's value for every option the
    command line did not give explicitly (click's ParameterSource), each checked by the option's type."""
    from click.core import ParameterSource

    from harness.run.experiment_config import load_experiment, merge_options

    parsed = load_experiment(config_file)
    explicit = {name for name in ctx.params
                if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    values = merge_options(ctx.params, explicit, parsed)
    params = {p.name: p for p in ctx.command.params}
    for key in parsed.options:
        if key in explicit:
            continue
        param = params[key]
        try:
            values[key] = param.type.convert(values[key], param, ctx) if values[key] is not None else None
        except click.BadParameter as exc:
            raise HarnessError(f"{config_file}: {key}: {exc.message}") from None
    if parsed.plugins:
        ctx.obj["plugins"] = tuple(dict.fromkeys([*ctx.obj["plugins"], *parsed.plugins]))
    return values, parsed.overrides


def _print_trials(trials, runs_dir: Path) -> None:
    from harness.store import ResultStore

    for trial in trials:
        done = ResultStore(runs_dir / trial.experiment).is_done(trial.key)
        click.echo(f"{'done' if done else 'todo'}  {trial.key}  {trial.label()}  {json.dumps(trial.config, sort_keys=True)}")


def _command_line(ctx: click.Context) -> str:
    """The command line that reproduces this invocation: every argument and every option not left at its
    default (rebuilt from the parsed parameters, so it is right under a test runner too)."""
    import shlex

    from click.core import ParameterSource

    def args(context: click.Context) -> list[str]:
        out: list[str] = []
        for param in context.command.params:
            value = context.params.get(param.name)
            if isinstance(param, click.Argument):
                out.append(str(value))
                continue
            if context.get_parameter_source(param.name) in (ParameterSource.DEFAULT, None) or value is None:
                continue
            flag = max(param.opts, key=len)
            if getattr(param, "is_flag", False):
                out += [flag] if value else []
            elif getattr(param, "multiple", False):
                for item in value:
                    out += [flag, str(item)]
            else:
                out += [flag, str(value)]
        return out

    parent = args(ctx.parent) if ctx.parent is not None else []
    return shlex.join(["harness", *parent, ctx.info_name, *args(ctx)])


def _record_experiment(root: Path, exp, command: str) -> None:
    """``RUNS_DIR/EXPERIMENT/experiment.json``: the command lines that produced the experiment (kept
    across resumed or extended runs), for reports to say how to reproduce them."""
    from harness import __version__
    from harness.run.runner import git_commit
    from harness.store import atomic_write_json

    path = root / "experiment.json"
    try:
        previous = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        previous = {}
    commands = [c for c in previous.get("commands", []) if c != command] + [command]
    atomic_write_json(path, {
        "name": exp.name, "command": command, "commands": commands, "methods": list(exp.methods),
        "datasets": list(exp.datasets), "samplers": list(exp.samplers), "seeds": list(exp.seeds),
        "profile": exp.profile, "overrides": exp.overrides, "harness_version": __version__,
        "git_commit": git_commit(),
    })


@main.command()
@click.option("--method", required=True, help="The method to tune (its MethodSpec.search_space is searched).")
@click.option("--dataset", required=True, help="The dataset to tune on (train split; scored on val only).")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True, help="Configurations to try.")
@click.option("--scheduler", type=click.Choice(["asha", "fifo"]), default="asha", show_default=True,
              help="asha: stop poor samples early on the reported epochs; fifo: run every sample to the end.")
@click.option("--metric", default="val_macro_f1", show_default=True,
              help="Validation metric to optimise (val_macro_f1, val_accuracy, val_balanced_accuracy).")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True)
@click.option("--profile", type=click.Choice(["smoke", "cpu", "paper"]), default="cpu", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SCOPE.KEY=VALUE",
              help="Fixed overrides (kept in the written config): resnet.epochs=20, dataset.size=64.")
@click.option("--sampler", default="uniform", show_default=True, help="Training sampler while tuning.")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed of every sample.")
@click.option("--search-seed", type=int, default=0, show_default=True, help="Seed of the random search.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (or HARNESS_DATA_DIR).")
@click.option("--out", "out_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the best configuration (default: tune-METHOD-DATASET.toml).")
@click.option("--run-seeds", default="0,1,2", show_default=True, help="Seeds the written experiment file runs.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, or auto (cuda if --gpus-per-trial).")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--max-concurrent", type=click.IntRange(min=1), help="At most this many samples at once.")
@click.option("--grace-period", type=click.IntRange(min=1), default=1, show_default=True,
              help="asha: epochs every sample runs before it may be stopped.")
@click.option("--address", help="Join this Ray cluster (HEAD_IP:6379); default: a local Ray instance.")
@click.option("--ray-storage", type=click.Path(path_type=Path), help="Ray's experiment state (default ~/ray_results).")
@click.pass_context
def tune(ctx, method, dataset, samples, scheduler, metric, mode, profile, overrides, sampler, seed, search_seed,
         data_dir, out_file, run_seeds, device, cpus_per_trial, gpus_per_trial, max_concurrent, grace_period,
         address, ray_storage):
    """Search a method's hyperparameters with Ray Tune (ASHA) on validation scores; write the best to TOML.

    \b
    harness tune --method resnet --dataset retinamnist --data-dir ../shared/data --samples 16
    harness run --config tune-resnet-retinamnist.toml
    """
    from harness.run.config import parse_overrides
    from harness.run.executors.ray import RayOptions
    from harness.run.experiment_config import dump_experiment
    from harness.run.runner import RunSettings
    from harness.run.tuning import base_trial, tune_method

    _, registry = _registry(ctx)
    spec = registry.get("methods", method)
    registry.get("datasets", dataset)
    try:
        seeds_out = [int(s) for s in _csv(run_seeds)]
    except ValueError:
        raise HarnessError(f"--run-seeds expects comma-separated integers; found {run_seeds!r}") from None
    fixed = parse_overrides(list(overrides))
    trial = base_trial(method, dataset, sampler=sampler, seed=seed, profile=profile, overrides=fixed,
                       registry=registry)
    settings = RunSettings(runs_dir=Path("runs"), data_dir=data_dir, plugins=ctx.obj["plugins"],
                           blocked=ctx.obj["blocked"], device=device)
    options = RayOptions(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                         max_concurrent=max_concurrent, address=address, storage=ray_storage)
    click.echo(f"tuning {method} on {dataset} ({profile}): {samples} sample(s) of "
               f"{', '.join(spec.search_space) or '(no search space)'}; {scheduler}, {mode} {metric}")
    outcome = tune_method(trial, spec, settings, samples=samples, metric=metric, mode=mode, scheduler=scheduler,
                          grace_period=grace_period, options=options, seed=search_seed)
    out_file = out_file or Path(f"tune-{method}-{dataset}.toml")
    values = {
        "experiment": f"{dataset}-{method}-tuned",
        "methods": [method],
        "datasets": [dataset],
        "samplers": [sampler],
        "seeds": seeds_out,
        "profile": profile,
        "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        "plugins": list(ctx.obj["plugins"]) or None,
    }
    table = {scope: dict(v) for scope, v in fixed.items()}
    table.setdefault(method, {}).update(outcome.best_config)
    header = [
        f"Written by: harness tune --method {method} --dataset {dataset} --samples {samples} "
        f"--scheduler {scheduler} --profile {profile}",
        f"Best {outcome.metric} (validation) = {outcome.best_score:.4f} over {samples} sample(s); "
        f"Ray state: {outcome.storage}",
    ]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(dump_experiment(values, table, header))
    for error in outcome.errors:
        click.echo(f"warning: a sample failed: {error}", err=True)
    click.echo(f"best {outcome.metric} = {outcome.best_score:.4f} with "
               + ", ".join(f"{k}={v}" for k, v in outcome.best_config.items()))
    click.echo(f"Written: {out_file}")
    click.echo(f"Run it:  harness run --config {out_file}")


KIND_NAMES = ("methods", "datasets", "samplers", "metrics")


def _describe(kind: str, spec) -> dict:
    out = {"name": spec.name, "description": spec.description}
    if kind == "methods":
        out.update(paper=spec.paper, profiles=sorted(spec.profiles), config_keys=spec.config_keys(),
                   uses_sampler=spec.uses_sampler,
                   search_space={k: [list(x) if isinstance(x, tuple) else x for x in v]
                                 for k, v in spec.search_space.items()})
    elif kind == "datasets":
        out.update(classes=list(spec.classes), modality=spec.modality, channels=spec.channels,
                   protocols=list(spec.protocols), license=spec.license, source=spec.source)
    else:
        out.update(source=spec.source)
    return out


@main.command("list")
@click.argument("kind", required=False, type=click.Choice(KIND_NAMES))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(ctx, kind, as_json):
    """List registered methods, datasets, samplers and metrics, with the plugin that provides each."""
    _, registry = _registry(ctx)
    kinds = (kind,) if kind else KIND_NAMES
    data = {
        k: [{**_describe(k, spec), "plugin": registry.provider[(k, name)]}
            for name, spec in sorted(registry.table(k).items())]
        for k in kinds
    }
    if as_json:
        click.echo(json.dumps(data if not kind else data[kind], indent=2))
        return
    for k in kinds:
        click.echo(f"{k}:")
        if not data[k]:
            click.echo("  (none)")
        for entry in data[k]:
            click.echo(f"  {entry['name']:<18} {entry['description']}  [plugin: {entry['plugin']}]")
            if k == "datasets":
                click.echo(f"  {'':<18} {len(entry['classes'])} classes, {entry['modality']}; "
                           f"licence: {entry['license']}")
                if entry["source"]:
                    click.echo(f"  {'':<18} citation: {entry['source']}")
        click.echo("")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx, as_json):
    """Installed plugins: name, version, module and hooks; and any that failed to load."""
    _, registry = _registry(ctx)
    rows = [{"name": p.name, "version": p.version, "module": p.module, "hooks": list(p.hooks), "source": p.source}
            for p in registry.plugins]
    failures = [{"name": f.name, "error": f.error} for f in registry.failures]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failed": failures}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<16} {row['version']:<10} {row['module']:<28} {', '.join(row['hooks'])}")
    for failure in failures:
        click.echo(f"{failure['name']:<16} FAILED: {failure['error']}")


@main.command("leaderboard")
@click.argument("runs_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
def leaderboard_cmd(runs_dir):
    """Aggregate the results under RUNS_DIR into a ranked table (also written as .md and .parquet)."""
    from harness.results import leaderboard

    board = leaderboard.write(runs_dir)
    click.echo(leaderboard.to_text(board))
    click.echo(f"Written: {runs_dir / 'leaderboard.md'}" + ("" if board.is_empty() else
                                                            f", {runs_dir / 'leaderboard.parquet'}"))


@main.command("report")
@click.argument("runs_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder (default: RUNS_DIR/report).")
@click.option("--title", help="Page title (default: 'Leaderboard: <RUNS_DIR name>').")
@click.option("--bootstrap", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Paired bootstrap resamples.")
@click.option("--methods", help="Only these methods (comma-separated), e.g. an ablation's rows.")
@click.option("--datasets", help="Only these datasets (comma-separated).")
@click.option("--samplers", help="Only these samplers (comma-separated).")
@click.pass_context
def report_cmd(ctx, runs_dir, out_dir, title, bootstrap, methods, datasets, samplers):
    """Publish the results under RUNS_DIR: leaderboard.md, a self-contained index.html, results.parquet.

    Mean and 95% CI over seeds, paired tests (bootstrap of Macro-F1, McNemar) against the top method,
    per-class recall, confusion matrices and the Macro-F1 / latency Pareto front. With --methods /
    --datasets / --samplers the report covers that selection (the paired tests are against its top).
    """
    from harness.report import write_report
    from harness.store import iter_results

    only = {field: set(_csv(value)) for field, value in
            (("method", methods), ("dataset", datasets), ("sampler", samplers)) if value}
    if only and not any(r.get("status") == "ok" for _, r in iter_results(runs_dir, only)):
        raise click.UsageError(f"no finished trial under {runs_dir} matches the selection "
                               + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in only.items())
                               + " (see `harness leaderboard RUNS_DIR` for what is there)")
    written = write_report(runs_dir, out_dir or runs_dir / "report", title=title,
                           report_command=_command_line(ctx), replicates=bootstrap, only=only or None)
    for path in written.values():
        click.echo(f"Written: {path}")
    _echo_mixed_settings(runs_dir, only or None)


def _echo_mixed_settings(runs_dir: Path, only=None) -> None:
    """Say on stderr which leaderboard rows pool trials of different settings or repeated seeds."""
    from harness.report import mixed_settings
    from harness.store import iter_results

    for warning in mixed_settings([r for _, r in iter_results(runs_dir, only) if r.get("status") == "ok"]):
        click.echo(f"warning: {warning}", err=True)


if __name__ == "__main__":
    main()
