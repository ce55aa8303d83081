"""The ``harness`` command line. Importing this module imports neither torch nor the plugins: commands
load what they need when they run, so ``harness --help`` stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from harness.contract.specs import PROFILES
from harness.errors import HarnessError
from harness.run.executors import EXECUTORS
from harness.run.settings import DEFAULT_DATASET, DEFAULT_SAMPLER, HEADLINE_METRIC, SEED_MAX


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _registry(ctx: click.Context):
    from harness.run.runner import cached_plugins

    manager, registry = cached_plugins(ctx.obj["plugins"], ctx.obj["blocked"])
    for failure in registry.failures:
        click.echo(f"warning: plugin {failure.name!r} failed to load: {failure.error}", err=True)
    for kind, name in sorted(registry.conflicts):
        click.echo(f"warning: {registry.conflict_error(kind, name)}", err=True)
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
    harness --plugin my_plugin conformance        check a plugin against the contract
    """
    ctx.ensure_object(dict)
    ctx.obj["plugins"] = tuple(plugins)
    ctx.obj["blocked"] = tuple(blocked)


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Experiment file (TOML): methods, datasets, seeds, overrides...; flags override it.")
@click.option("--methods", help="Comma-separated methods (default: every registered method).")
@click.option("--datasets", default=DEFAULT_DATASET, show_default=True, help="Comma-separated datasets.")
@click.option("--samplers", default=DEFAULT_SAMPLER, show_default=True, help="Comma-separated samplers.")
@click.option("--seeds", default="0", show_default=True,
              help=f"Comma-separated integer seeds, 0 to {SEED_MAX}.")
@click.option("--profile", type=click.Choice(PROFILES), default="cpu", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SCOPE.KEY=VALUE",
              help="Override a config value: resnet.lr=3e-4, dataset.size=64 (repeatable).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (or HARNESS_DATA_DIR).")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--experiment", help="Experiment name: results go to RUNS_DIR/EXPERIMENT (default: the datasets).")
@click.option("--executor", type=click.Choice(sorted(EXECUTORS)), default="local", show_default=True,
              help="local: one trial after another in this process; ray: Ray Tune trials in parallel.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, mps, or auto.")
@click.option("--threads", type=click.IntRange(min=1),
              help="torch threads per trial (default: all cores; ray: --cpus-per-trial).")
@click.option("--no-onnx", is_flag=True, help="Do not time ONNX Runtime (torch latency only).")
@click.option("--no-save-model", is_flag=True, help="Do not keep each trial's model in its folder (model/).")
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
@click.option("--bench-after", is_flag=True,
              help="After the sweep, re-time every kept model with `harness bench` (one at a time, nothing else "
                   "running); the leaderboard and report then use those figures.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Also load this plugin module.")
@click.option("--block-plugin", "blocked", multiple=True, metavar="NAME", help="Do not load this plugin.")
@click.pass_context
def run(ctx, **options):
    """Run methods x datasets x samplers x seeds, then print the leaderboard.

    Finished trials are skipped, so running the same command again resumes an interrupted run.
    With --config FILE the experiment comes from a TOML file; flags given explicitly override it.
    """
    from harness.run.config import parse_overrides
    from harness.run.request import RunRequest, execute

    ctx.obj["plugins"] += tuple(options.pop("plugins"))
    ctx.obj["blocked"] += tuple(options.pop("blocked"))
    bench_after = options.pop("bench_after")
    overrides = parse_overrides(list(options["overrides"]))
    if options["config_file"] is not None:
        from harness.run.experiment_config import merge_overrides

        options, file_overrides = _apply_config_file(ctx, options["config_file"])
        overrides = merge_overrides(file_overrides, overrides)
    _, registry = _registry(ctx)
    request = RunRequest.from_options(options, overrides=overrides, plugins=ctx.obj["plugins"],
                                      blocked=ctx.obj["blocked"])
    experiment, trials = request.plan(registry)
    click.echo(f"{len(trials)} trial(s) -> {request.root}")
    if request.dry_run:
        _print_trials(trials, request.settings(), registry)
        return
    command = _command_line(click.get_current_context())
    summary = execute(request, experiment, trials, command=command)
    if summary.stopped:
        _print_stopped(request.root, summary, command)
    else:
        if bench_after:
            _bench_after(request)
        _print_outcome(request.root, summary)
    sys.exit(summary.exit_code)


def _bench_after(request) -> None:
    """``harness bench RUNS_DIR/EXPERIMENT`` in a fresh process (the sweep's threads and memory gone, the OpenMP
    settings of a new process); a bench that fails leaves the in-trial figures in place, with a warning."""
    import subprocess

    if not request.save_model:
        click.echo("warning: --bench-after with --no-save-model: no model was kept, nothing to bench", err=True)
        return
    command = [sys.executable, "-m", "harness.cli"]
    for plugin in request.plugins:
        command += ["--plugin", plugin]
    for name in request.blocked:
        command += ["--block-plugin", name]
    command += ["bench", str(request.root), "--device", request.device]
    if request.data_dir is not None:
        command += ["--data-dir", str(request.data_dir)]
    if request.threads:
        command += ["--threads", str(request.threads)]
    if not request.onnx:
        command += ["--no-onnx"]
    click.echo(f"bench: {' '.join(command[2:])}")
    if subprocess.run(command).returncode != 0:
        click.echo("warning: the bench did not finish for every trial; the in-trial latency stands for those",
                   err=True)


def _print_stopped(root: Path, summary, command: str) -> None:
    """What an interrupted (Ctrl-C) or stopped run did, and the command that resumes it."""
    if not summary.interrupted:
        click.echo(f"error: {summary.stopped}", err=True)
    click.echo(f"{'interrupted' if summary.interrupted else 'stopped'}: {len(summary.ok)} trial(s) finished in this "
               f"run ({len(summary.failed)} failed), {len(summary.skipped)} were done before, {len(summary.not_run)} "
               f"not finished. Finished results are kept in {root}. Resume with:\n  {command}", err=True)


def _print_outcome(root: Path, summary) -> None:
    """The leaderboard, the counts, the failures and the report of a finished ``harness run``: the runs folder is
    read and summarised once, for the terminal table, ``leaderboard.md`` and the report."""
    from harness.report import load_summary, to_text, write_leaderboard, write_report

    try:
        board = load_summary(root, _report_settings())
    except Exception as exc:  # the results are safe on disk; `harness report` can be re-run on them
        board = None
        click.echo(f"warning: the leaderboard could not be computed ({type(exc).__name__}: {exc}); "
                   f"the results are in {root}; retry with `harness report {root}`", err=True)
    if board is not None:
        write_leaderboard(board, root)
        click.echo("")
        click.echo(to_text(board))
    click.echo(f"{len(summary.ok)} ok, {len(summary.skipped)} skipped (done before), {len(summary.failed)} failed"
               + (f", {len(summary.busy)} left to another process" if summary.busy else "")
               + f". Leaderboard: {root / 'leaderboard.md'}")
    for key in summary.failed:
        click.echo(f"  failed: {key}: {summary.errors.get(key, '')} (see {root / key / 'result.json'})", err=True)
    for key, reason in summary.busy.items():
        click.echo(f"  not run here: {key}: {reason}", err=True)
    if summary.unverified:
        click.echo(f"warning: {len(summary.unverified)} stored result(s) were reused without a data check (see the "
                   f"warnings above); move a trial's folder out of {root} to re-run it", err=True)
    if board is None:
        return
    try:
        written = write_report(root, root / "report", summary=board)
        click.echo(f"Report: {written['index.html']} (and leaderboard.md, results.parquet next to it)")
        _echo_warnings(board)
    except Exception as exc:  # the results are safe on disk; `harness report` can be re-run on them
        click.echo(f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
                   f"the results are in {root}; retry with `harness report {root}`", err=True)


def _report_settings(**values):
    """The statistics' settings: the run's headline metric (harness.run.settings) unless given."""
    from harness.results.summary import Settings

    return Settings(**{"headline": HEADLINE_METRIC, **{k: v for k, v in values.items() if v is not None}})


def _echo_warnings(summary) -> None:
    """The summary's warnings on stderr (pooled settings or versions, unreadable results, refused pairings...)."""
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)


def _apply_config_file(ctx: click.Context, config_file: Path) -> tuple[dict, dict]:
    """The ``run`` parameters after applying an experiment file: the file's value for every option the
    command line did not give explicitly (click's ParameterSource), each checked by the option's type."""
    from click.core import ParameterSource

    from harness.run.experiment_config import load_experiment, merge_options

    parsed = load_experiment(config_file)
    explicit = {name for name in ctx.params
                if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    values = merge_options({k: v for k, v in ctx.params.items() if k not in ("plugins", "blocked")}, explicit, parsed)
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


def _record_experiment(root: Path, exp, command: str) -> None:
    """``RUNS_DIR/EXPERIMENT/experiment.json`` (see :func:`harness.run.request.record_experiment`; this name is
    kept for code that recorded experiments through the CLI module)."""
    from harness.run.request import record_experiment

    record_experiment(root, exp, command)


def _print_trials(trials, settings, registry) -> None:
    """``--dry-run``: each trial, whether it is done or would run, and why when that is not plain."""
    from harness.run.resume import for_trials

    for trial, decision in for_trials(trials, settings, registry):
        click.echo(f"{decision.state:<10}  {trial.key}  {trial.label()}  {json.dumps(trial.config, sort_keys=True)}")
        if decision.reason:
            click.echo(f"{'':<10}  {'would run again' if decision.runs else 'skipped'}: {decision.reason}")


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


@main.command()
@click.option("--method", required=True, help="The method to tune (its MethodSpec.search_space is searched).")
@click.option("--dataset", required=True, help="The dataset to tune on (train split; scored on val only).")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True, help="Configurations to try.")
@click.option("--scheduler", type=click.Choice(["asha", "fifo"]), default="asha", show_default=True,
              help="asha: stop poor samples early on the reported epochs; fifo: run every sample to the end.")
@click.option("--metric", default=f"val_{HEADLINE_METRIC}", show_default=True,
              help="Validation metric to optimise: val_ + a registered metric (val_balanced_accuracy, ...).")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True)
@click.option("--profile", type=click.Choice(PROFILES), default="cpu", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SCOPE.KEY=VALUE",
              help="Fixed overrides (kept in the written config): resnet.epochs=20, dataset.size=64.")
@click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True, help="Training sampler while tuning.")
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
def tune(ctx, **options):
    """Search a method's hyperparameters with Ray Tune (ASHA) on validation scores; write the best to TOML.

    \b
    harness tune --method resnet --dataset retinamnist --data-dir ../shared/data --samples 16
    harness run --config tune-resnet-retinamnist.toml
    """
    from harness.run.request import TuneRequest
    from harness.run.request import tune as run_tune

    _, registry = _registry(ctx)
    request = TuneRequest.from_options(options, plugins=ctx.obj["plugins"], blocked=ctx.obj["blocked"])
    spec = registry.get("methods", request.method)
    click.echo(f"tuning {request.method} on {request.dataset} ({request.profile}): {request.samples} sample(s) of "
               f"{', '.join(spec.search_space) or '(no search space)'}; {request.scheduler}, {request.mode} "
               f"{request.metric}")
    outcome, out_file = run_tune(request, registry)
    for error in outcome.errors:
        click.echo(f"warning: a sample failed: {error}", err=True)
    click.echo(f"best {outcome.metric} = {outcome.best_score:.4f} with "
               + ", ".join(f"{k}={v}" for k, v in outcome.best_config.items()))
    click.echo(f"Written: {out_file}")
    click.echo(f"Run it:  harness run --config {out_file}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--threads", type=click.IntRange(min=1), help="torch and ONNX Runtime threads (default: every core).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps, or auto (cuda if there is one).")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True, help="The throughput batch.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Seconds of timing per batch size and runtime (at least 2 repeats).")
@click.option("--repeats", type=click.IntRange(min=2), default=50, show_default=True,
              help="At most this many timed calls at batch 1 (a fifth of it at the throughput batch, at least 2).")
@click.option("--no-onnx", is_flag=True, help="Time torch only.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (or HARNESS_DATA_DIR): the test "
                                                                   "images are the trial's.")
@click.option("--json", "as_json", is_flag=True, help="Print the bench records as JSON.")
@click.pass_context
def bench(ctx, paths, threads, device, batch, budget, repeats, no_onnx, data_dir, as_json):
    """Re-time stored trials (trial folders or runs folders): torch and ONNX Runtime at batch 1 and a throughput
    batch, one trial at a time. Writes each trial's bench.json and the `bench` field of its result, which the
    leaderboard and report then use (they say which latency comes from where).

    
    harness bench runs/retinamnist                     every kept model of the experiment
    harness bench runs/retinamnist/3f2a... --threads 1 one trial, one thread
    OMP_WAIT_POLICY=PASSIVE harness bench runs/x       on a machine shared with other work (recorded)
    """
    from harness.run.bench import BenchSettings, bench_all, find_trials, header, row
    from harness.run.settings import RunSettings, check_device_available

    check_device_available(device)
    settings = BenchSettings(batch=batch, budget_s=budget, repeats_b1=repeats, repeats_batch=max(2, repeats // 5),
                             onnx=not no_onnx, threads=threads, device=device)
    folders = find_trials(paths)
    run_settings = RunSettings(data_dir=data_dir, plugins=ctx.obj["plugins"], blocked=ctx.obj["blocked"],
                               device=device)
    if not as_json:
        click.echo(f"bench: {len(folders)} trial(s), one at a time")
        click.echo(header(batch))
    records = {}

    def done(folder, record, error):
        if error is not None:
            click.echo(f"{folder.name}: not benched: {error}", err=True)
            return
        records[str(folder)] = record
        if not as_json:
            click.echo(row(folder, record))
            for warning in record.get("warnings", []):
                click.echo(f"  warning: {warning}", err=True)

    errors = bench_all(folders, settings, run_settings, on_done=done)
    if as_json:
        click.echo(json.dumps(records, indent=2, default=str))
    sys.exit(1 if errors else 0)


@main.command()
@click.argument("trial_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--images", "images_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A folder of image files (any depth) to classify.")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="A split of the trial's own dataset instead (same options, seed and protocol; needs its data).")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the predictions: FILE.parquet or FILE.csv.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (or HARNESS_DATA_DIR), for --split.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@click.pass_context
def predict(ctx, trial_dir, images_dir, split, out_file, data_dir, device):
    """Apply a stored trial's model to a folder of images or a dataset split; write one row per image
    (image_id, pred, pred_class, prob_0..K-1, and uncertainty where the method gives it) to Parquet or CSV.

    
    harness predict runs/retinamnist/3f2a... --images scans/ --out scans.parquet
    harness predict runs/retinamnist/3f2a... --split test --data-dir ../shared/data --out test.csv

    Loading a model unpickles code: use trial folders you trust.
    """
    from harness.run.predict import check_out, predict_images, predict_split, summary, write
    from harness.run.settings import RunSettings, check_device_available

    if (images_dir is None) == (split is None):
        raise click.UsageError("give either --images FOLDER or --split train|val|test")
    check_out(out_file)
    check_device_available(device)
    settings = RunSettings(data_dir=data_dir, plugins=ctx.obj["plugins"], blocked=ctx.obj["blocked"], device=device)
    if images_dir is not None:
        predictions = predict_images(images_dir, trial_dir, settings, device)
    else:
        predictions = predict_split(trial_dir, split, settings, device)
    written = write(predictions, out_file)
    counts = ", ".join(f"{name} {n}" for name, n in summary(predictions).items())
    click.echo(f"{len(predictions)} image(s) from {predictions.source}: {counts}")
    if predictions.metrics:
        click.echo("  " + "  ".join(f"{k} {v:.4f}" for k, v in predictions.metrics.items() if v is not None))
    if predictions.matches_stored is not None:
        click.echo("  the same labels as the trial's predictions.parquet" if predictions.matches_stored else
                   "  warning: labels differ from the trial's predictions.parquet (a stochastic method, or other data)")
    click.echo(f"Written: {written}")


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
        k: [{**_describe(k, spec), "plugin": plugin, **({"conflict": True} if conflict else {})}
            for _, spec, plugin, conflict in registry.entries(k)]
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
            conflict = "  CONFLICT: another plugin registers this name too" if entry.get("conflict") else ""
            click.echo(f"  {entry['name']:<18} {entry['description']}  [plugin: {entry['plugin']}]{conflict}")
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
    conflicts = [{"kind": kind[:-1], "name": name, "plugins": sorted(plugin for plugin, _ in claims)}
                 for (kind, name), claims in sorted(registry.conflicts.items())]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failed": failures, "conflicts": conflicts}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<16} {row['version']:<10} {row['module']:<28} {', '.join(row['hooks'])}")
    for failure in failures:
        click.echo(f"{failure['name']:<16} FAILED: {failure['error']}")
    for conflict in conflicts:
        click.echo(f"CONFLICT: {conflict['kind']} {conflict['name']!r} is registered by "
                   f"{' and '.join(conflict['plugins'])}; block one with --block-plugin NAME")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--only", metavar="NAMES", help="Test only what these plugins register (comma-separated names; "
                                               "default: the --plugin modules, or every plugin).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Also load (and test) this plugin module.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def conformance(ctx, only, plugins, pytest_args):
    """Run the conformance suite on registered plugins: every dataset, method, sampler and metric through its
    contract at the smallest size (extra arguments go to pytest, e.g. -x -k resnet).

    \b
    harness --plugin my_plugin conformance        a plugin module under development
    harness conformance --only example            an installed plugin, by its entry-point name
    """
    from harness.conformance import run as run_suite

    sys.exit(run_suite(plugins=(*ctx.obj["plugins"], *plugins), only=_csv(only), pytest_args=tuple(pytest_args),
                       blocked=ctx.obj["blocked"]))


_STATS_OPTIONS = [
    click.option("--bootstrap", type=click.IntRange(min=100), default=2000, show_default=True,
                 help="Image resamples of the two-level paired bootstrap."),
    click.option("--correction", type=click.Choice(["holm", "bh"]), default="holm", show_default=True,
                 help="Multiple-comparison correction across a table's comparisons: Holm or Benjamini-Hochberg."),
    click.option("--headline", help="Metric to rank and test on (default: the run settings' headline, macro_f1)."),
    click.option("--improving-margin", type=click.FloatRange(min=0), default=0.01, show_default=True,
                 help="A trial is 'still improving' when its best validation headline score in the last fifth of "
                      "its budget beats the best before by more than this."),
]


def _stats_options(command):
    for option in reversed(_STATS_OPTIONS):
        command = option(command)
    return command


@main.command("leaderboard")
@click.argument("runs_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_stats_options
def leaderboard_cmd(runs_dir, bootstrap, correction, headline, improving_margin):
    """Aggregate the results under RUNS_DIR into a ranked table (also written as .md and .parquet), with the
    same statistics and warnings as `harness report`."""
    from harness.report import load_summary, to_text, write_leaderboard

    summary = load_summary(runs_dir, _report_settings(replicates=bootstrap, correction=correction, headline=headline,
                                                      improving_margin=improving_margin))
    written = write_leaderboard(summary, runs_dir)
    click.echo(to_text(summary))
    click.echo("Written: " + ", ".join(str(p) for p in written.values()))
    _echo_warnings(summary)


@main.command("report")
@click.argument("runs_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder (default: RUNS_DIR/report).")
@click.option("--title", help="Page title (default: 'Leaderboard: <RUNS_DIR name>').")
@_stats_options
@click.option("--methods", help="Only these methods (comma-separated), e.g. an ablation's rows.")
@click.option("--datasets", help="Only these datasets (comma-separated).")
@click.option("--samplers", help="Only these samplers (comma-separated).")
@click.option("--experiments", help="Only these experiments (comma-separated), for a RUNS_DIR that holds several.")
@click.pass_context
def report_cmd(ctx, runs_dir, out_dir, title, bootstrap, correction, headline, improving_margin, methods, datasets,
               samplers, experiments):
    """Publish the results under RUNS_DIR: leaderboard.md, a self-contained index.html, results.parquet.

    Mean and 95% CI over seeds; against each dataset's top method the two-level paired bootstrap (test images
    and training seeds), adjusted for the table's comparisons, with rank bands; the t-test over seeds and
    McNemar per seed as secondary tests; per-class recall, confusion matrices, learning curves, the
    quality / latency Pareto front, and for 2+ datasets Friedman / Nemenyi with a critical-difference
    diagram. With --methods / --datasets / --samplers / --experiments the report covers that selection (the
    paired tests are against its top).
    """
    from harness.report import load_summary, write_report

    only = {field: set(_csv(value)) for field, value in
            (("method", methods), ("dataset", datasets), ("sampler", samplers), ("experiment", experiments)) if value}
    summary = load_summary(runs_dir, _report_settings(replicates=bootstrap, correction=correction, headline=headline,
                                                      improving_margin=improving_margin), only or None)
    if only and summary.board.is_empty():
        raise click.UsageError(f"no finished trial under {runs_dir} matches the selection "
                               + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in only.items())
                               + " (see `harness leaderboard RUNS_DIR` for what is there)")
    written = write_report(runs_dir, out_dir or runs_dir / "report", title=title, report_command=_command_line(ctx),
                           summary=summary)
    for path in written.values():
        click.echo(f"Written: {path}")
    _echo_warnings(summary)


if __name__ == "__main__":
    main()
