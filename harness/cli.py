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
    from harness.runner import cached_plugins

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
    """
    ctx.ensure_object(dict)
    ctx.obj["plugins"] = tuple(plugins)
    ctx.obj["blocked"] = tuple(blocked)


@main.command()
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
@click.option("--executor", type=click.Choice(["local"]), default="local", show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option("--threads", type=int, help="torch threads per trial (default: all cores).")
@click.option("--no-onnx", is_flag=True, help="Do not time ONNX Runtime (torch latency only).")
@click.pass_context
def run(ctx, methods, datasets, samplers, seeds, profile, overrides, data_dir, runs_dir, experiment,
        executor, device, threads, no_onnx):
    """Run methods x datasets x samplers x seeds, then print the leaderboard.

    Finished trials are skipped, so running the same command again resumes an interrupted run.
    """
    from harness import leaderboard
    from harness.config import parse_overrides
    from harness.latency import LatencySettings
    from harness.runner import RunSettings
    from harness.trial import Experiment, expand

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
        profile=profile, overrides=parse_overrides(list(overrides)), name=name,
    )
    trials = expand(exp, registry)
    settings = RunSettings(
        runs_dir=runs_dir, data_dir=data_dir, plugins=ctx.obj["plugins"], blocked=ctx.obj["blocked"],
        device=device, threads=threads, latency=LatencySettings(onnx=not no_onnx),
    )
    click.echo(f"{len(trials)} trial(s) -> {runs_dir / name}")
    from harness.executors.local import run_local

    summary = run_local(trials, settings)
    root = Path(runs_dir) / name
    board = leaderboard.write(root)
    click.echo("")
    click.echo(leaderboard.to_text(board))
    click.echo(f"{len(summary.ok)} ok, {len(summary.skipped)} skipped (done before), {len(summary.failed)} failed. "
               f"Leaderboard: {root / 'leaderboard.md'}")
    for key in summary.failed:
        click.echo(f"  failed: {key}: {summary.errors.get(key, '')} (see {root / key / 'result.json'})", err=True)
    sys.exit(summary.exit_code)


KIND_NAMES = ("methods", "datasets", "samplers", "metrics")


def _describe(kind: str, spec) -> dict:
    out = {"name": spec.name, "description": spec.description}
    if kind == "methods":
        out.update(paper=spec.paper, profiles=sorted(spec.profiles), config_keys=spec.config_keys(),
                   uses_sampler=spec.uses_sampler)
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
    from harness import leaderboard

    board = leaderboard.write(runs_dir)
    click.echo(leaderboard.to_text(board))
    click.echo(f"Written: {runs_dir / 'leaderboard.md'}" + ("" if board.is_empty() else
                                                            f", {runs_dir / 'leaderboard.parquet'}"))


if __name__ == "__main__":
    main()
