"""The ``nas`` command line. Heavy imports (ray, torch, transformers) happen inside the commands, so
``nas --help`` and ``nas spaces validate`` start fast. A command raises UserError (nas.errors) for anything the
user can fix; ``main`` prints it and exits 1, so no command repeats that."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

from nas.errors import UserError
from nas.settings import database_url
from nas.space import SpaceError, list_shipped_spaces, load_space, shipped_space_path
from nas.tables import format_table

EXIT_OK, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 130


def _print_error(error: UserError) -> None:
    for line in error.lines():
        print(line, file=sys.stderr)


def _database(args: argparse.Namespace, service_tables_only: bool = False) -> str:
    """The command's database URL (--storage, else $NAS_DATABASE_URL, else sqlite:///nas.db), its schema brought
    up to date once, here at start-up, so that no read further on has to. ``service_tables_only``: the command
    reads only the service's tables, and a schema already current costs one small query."""
    from nas.store.db import ensure_service_schema, upgrade

    url = database_url(args.storage)
    (ensure_service_schema if service_tables_only else upgrade)(url)
    return url


def _quiet_libraries() -> None:
    import warnings

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    warnings.filterwarnings("ignore", module="optuna")
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    # Tune's experiment snapshot is not our record (Optuna's tables are) and no resume reads it. After a Ctrl-C its
    # last copy can race the local Ray session's clean-up and log a traceback that would only alarm the user.
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)


def cmd_search(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.trials is not None:
        overrides.append(f"search.trials={args.trials}")
    if args.warm_start:
        overrides.append("search.warm_start=" + json.dumps(args.warm_start))
    space = load_space(shipped_space_path(args.space), overrides)
    _quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from nas.controller.run import check_study_name, default_study_name, run_study

    name = check_study_name(args.study_name or default_study_name(space))
    url = database_url(args.storage)  # run_study brings its schema up to date
    print(f"study {name}: {space.family}/{space.task}, {space.search.trials} trials, storage {url}")
    try:
        outcome = run_study(space, name, url, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: study {name} is marked interrupted; finished trials are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    _show(name, url)
    if outcome.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.status == "succeeded" else EXIT_INVALID


def cmd_audit(args: argparse.Namespace) -> int:
    """Retrain the study's top and random architectures at --factor x the proxy's steps; report rank agreement."""
    from nas.audit.run import AuditError, add_audit_row, plan_audit, report_table, run_audit
    from nas.store import get_study_row, session_scope, set_status

    _quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = _database(args)
    plan, space = plan_audit(url, args.study, args.top, args.random, args.factor)
    with session_scope(url) as session:
        name = add_audit_row(session, get_study_row(url, args.study), plan, space, status="running").name
    print(
        f"audit {name}: {len(plan.trials)} architectures of {args.study}, {space.proxy.steps} steps each "
        f"({plan.factor:g}x the proxy)"
    )
    try:
        outcome = run_audit(url, name, plan, space, progress=not args.no_progress, create_row=False)
    except AuditError as error:  # e.g. the parent study was deleted meanwhile
        set_status(url, name, "failed", str(error))
        raise
    except KeyboardInterrupt:
        set_status(url, name, "interrupted", "stopped by the user (Ctrl-C)")  # also before its first trial
        print(f"\ninterrupted: audit {name} is marked interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    print(report_table(outcome.report))
    if args.plots:
        from nas.plots import write_audit_plot

        print(f"wrote {write_audit_plot(outcome.report, Path(args.plots) / 'audit.png')}")
    return EXIT_OK if outcome.status == "succeeded" else EXIT_INVALID


def _show(name: str, url: str, limit: int = 5, plots: Path | None = None) -> None:
    import optuna

    from nas.store import get_study_row, latest_audit_report
    from nas.store.db import optuna_storage
    from nas.summary import study_report

    row = get_study_row(url, name)
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(url))
    except KeyError:
        print(f"study {name}: {row.status} (no trials yet)")
        return
    print(study_report(study, row, limit))
    audit = latest_audit_report(url, row)
    if audit is not None:
        from nas.audit.run import report_table

        print()
        print(report_table(audit))
    if plots is not None:
        from nas.plots import write_plots

        for path in write_plots(study, plots, audit):
            print(f"wrote {path}")


def cmd_spaces_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for item in args.files:  # every file is checked, so the errors of all of them show at once
        try:
            space = load_space(shipped_space_path(item), args.set or [])
        except SpaceError as error:
            _print_error(error)
            status = EXIT_INVALID
        else:
            print(f"{item}: OK ({space.family}/{space.task}, {_size_text(space)})")
    return status


def _size_text(space) -> str:
    arch = math.prod(p.size() for p in space.architecture.values())
    text = "continuous architecture ranges" if math.isinf(arch) else f"{arch:,.0f} architectures"
    if space.hyperparameters:
        hp = math.prod(p.size() for p in space.hyperparameters.values())
        text += " x continuous hyperparameters" if math.isinf(hp) else f" x {hp:,.0f} hyperparameter settings"
    return text


def cmd_spaces_list(args: argparse.Namespace) -> int:
    rows = [("name", "family", "task", "trials", "size", "description")]
    for path in list_shipped_spaces():
        try:
            space = load_space(path)
        except SpaceError as error:
            rows.append((path.stem, "-", "-", "-", "INVALID", str(error).splitlines()[0]))
            continue
        rows.append(
            (space.name, space.family, space.task, str(space.search.trials), _size_text(space), space.description)
        )

    print(format_table(rows))
    return EXIT_OK


def cmd_studies_list(args: argparse.Namespace) -> int:
    from nas.store import list_study_rows

    rows = list_study_rows(_database(args, service_tables_only=True))
    if not rows:
        print("no studies yet")
        return EXIT_OK
    table = [("name", "space", "status", "trials", "created")]
    table += [(r.name, r.space_name, r.status, str(r.trials), f"{r.created_at:%Y-%m-%d %H:%M}") for r in rows]

    print(format_table(table))
    return EXIT_OK


def cmd_studies_show(args: argparse.Namespace) -> int:
    _quiet_libraries()
    _show(args.name, _database(args), args.top, Path(args.plots) if args.plots else None)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """The API (uvicorn) in this process, plus one runner as a child process unless --no-runner."""
    import subprocess

    _quiet_libraries()
    import uvicorn

    from services.api import create_app
    from services.settings import Settings

    settings = Settings(**({"database_url": args.storage} if args.storage else {}))
    app = create_app(settings)
    logging.getLogger("uvicorn.access").addFilter(_RedactTokens())
    runner = None
    if not args.no_runner:
        # A child process: the Tune driver wants a main thread of its own, and its crash must not take the API down.
        # It gets SIGTERM when this process dies however it dies (uvicorn re-raises the signal that stopped it).
        runner = subprocess.Popen(
            [sys.executable, "-m", "nas", "worker", "--storage", settings.database_url],
            preexec_fn=_terminate_with_parent,
        )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        if runner is not None:
            runner.terminate()
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runner.kill()
    return EXIT_OK


class _RedactTokens:
    """Keep tokens (``/dashboard/login?token=...``) out of the access log."""

    def filter(self, record) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                re.sub(r"token=[^&\s]+", "token=<redacted>", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def _terminate_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (elsewhere: a no-op)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cmd_worker(args: argparse.Namespace) -> int:
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from services.runner import main as run_worker
    from services.settings import Settings

    settings = Settings()
    run_worker(
        database_url(args.storage),
        lease_s=args.lease or settings.runner_lease_s,
        heartbeat_s=args.heartbeat or settings.runner_heartbeat_s,
        poll_s=args.poll,
        data_roots=settings.data_root_paths,
    )
    return EXIT_OK


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from services.auth import create_token

    token = create_token(_database(args), args.name, is_admin=args.admin)
    print(token)
    print(
        f"(shown once: a {'admin ' if args.admin else ''}token for {args.name!r}; only its hash is stored)",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from nas.export import export_trial_to, load_trial

    _quiet_libraries()
    record = load_trial(_database(args), args.study, args.trial)
    folder = export_trial_to(record, args.out, weights=args.weights)
    print(f"exported trial {record.number} of {record.study} ({args.weights} weights) to {folder}")
    return EXIT_OK


def cmd_pretrain(args: argparse.Namespace) -> int:
    from nas.pretrain import run_pretraining

    _quiet_libraries()
    out = Path(args.out) if args.out else _beside(args.folder, "-pretrained")
    try:
        model = run_pretraining(
            args.folder,
            out,
            data_source=args.data,
            max_steps=args.max_steps,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with `nas pretrain {args.folder} --out {out} --resume`", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"pretrained model: {model}\nloss curve: {out / 'loss_curve.png'}")
    return EXIT_OK


def _beside(location: str, suffix: str) -> Path:
    """A local folder named after ``location`` with ``suffix``: beside it, or in the working folder for a URI."""
    from nas.store.artifacts import is_remote

    if is_remote(location):
        return Path.cwd() / f"{location.rstrip('/').rsplit('/', 1)[-1]}{suffix}"
    return Path(location).resolve().parent / f"{Path(location).name}{suffix}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas", description="Neural architecture search for self-supervised backbones."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="run a search in the foreground")
    search.add_argument("space", help="a space YAML file, or the name of a shipped space (e.g. text-mlm-tiny)")
    search.add_argument("--trials", type=int, help="trial budget (overrides search.trials)")
    search.add_argument("--study-name", help="name of the study (default: space name + time)")
    search.add_argument("--storage", help="database URL (default: $NAS_DATABASE_URL or sqlite:///nas.db)")
    search.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a space value; repeatable")
    search.add_argument(
        "--warm-start",
        action="append",
        metavar="STUDY",
        help="seed with the finished trials of an earlier study of the same space (search.warm_start); repeatable",
    )
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.set_defaults(func=cmd_search)

    spaces = commands.add_parser("spaces", help="search spaces").add_subparsers(dest="spaces_command", required=True)
    validate = spaces.add_parser("validate", help="check space files; prints OK or every error with its YAML path")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    validate.set_defaults(func=cmd_spaces_validate)
    spaces.add_parser("list", help="the shipped spaces").set_defaults(func=cmd_spaces_list)

    studies = commands.add_parser("studies", help="stored studies").add_subparsers(
        dest="studies_command", required=True
    )
    listing = studies.add_parser("list", help="all studies in the database")
    listing.add_argument("--storage")
    listing.set_defaults(func=cmd_studies_list)
    show = studies.add_parser("show", help="status, counts and best architectures of a study")
    show.add_argument("name")
    show.add_argument("--storage")
    show.add_argument("--top", type=int, default=5, help="how many best trials to list")
    show.add_argument(
        "--plots",
        metavar="DIR",
        help="also write the study's plots here, as PNG and interactive HTML: optimisation history, Pareto front, "
        "parameter importances, loss against params and FLOPs, the audit scatter",
    )
    show.set_defaults(func=cmd_studies_show)

    audit = commands.add_parser(
        "audit", help="retrain a study's best and random architectures longer; how well did its proxy rank them?"
    )
    audit.add_argument("study")
    audit.add_argument("--top", type=int, default=4, help="how many of the best finished trials (default 4)")
    audit.add_argument(
        "--random", type=int, default=4, help="how many other finished trials, drawn at random (default 4)"
    )
    audit.add_argument(
        "--factor", type=float, default=10.0, help="the long run's steps as a multiple of the proxy's (default 10)"
    )
    audit.add_argument("--plots", metavar="DIR", help="also write the proxy-vs-long-run scatter as a PNG here")
    audit.add_argument("--storage")
    audit.add_argument("--no-progress", action="store_true")
    audit.set_defaults(func=cmd_audit)

    serve = commands.add_parser("serve", help="the REST API and dashboard, with one embedded runner")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--storage", help="database URL (default: $NAS_DATABASE_URL or sqlite:///nas.db)")
    serve.add_argument("--no-runner", action="store_true", help="serve only; run `nas worker` elsewhere")
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="a runner: claims queued studies from the database and runs them")
    worker.add_argument("--storage")
    worker.add_argument("--lease", type=float, help="seconds a claim holds without a heartbeat (default 30)")
    worker.add_argument("--heartbeat", type=float, help="seconds between heartbeats (default 5)")
    worker.add_argument("--poll", type=float, default=2.0, help="seconds between looks at an empty queue")
    worker.set_defaults(func=cmd_worker)

    export = commands.add_parser("export", help="write a trial as a save_pretrained folder with provenance and recipe")
    export.add_argument("study")
    export.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    export.add_argument(
        "--out", required=True, help="folder or storage URI (s3://bucket/prefix) to write; must be new or empty"
    )
    export.add_argument(
        "--weights",
        choices=["proxy", "init"],
        default="proxy",
        help="the proxy-trained weights (default) or a fresh initialisation",
    )
    export.add_argument("--storage")
    export.set_defaults(func=cmd_export)

    pretrain = commands.add_parser("pretrain", help="full self-supervised pretraining of an export on Ray Train")
    pretrain.add_argument("folder", help="a folder written by `nas export` (a path or a storage URI)")
    pretrain.add_argument("--data", help="override the recipe's data source")
    pretrain.add_argument("--max-steps", type=int)
    pretrain.add_argument("--workers", type=int, help="DDP workers (default: the recipe's)")
    pretrain.add_argument("--gpus-per-worker", type=float)
    pretrain.add_argument("--out", help="output folder (default: FOLDER-pretrained beside it)")
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pretrain.add_argument("--no-progress", action="store_true")
    pretrain.set_defaults(func=cmd_pretrain)

    tokens = commands.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens_command", required=True)
    create = tokens.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True, help="the owner the token's studies belong to")
    create.add_argument("--admin", action="store_true", help="sees and acts on every study")
    create.add_argument("--storage")
    create.set_defaults(func=cmd_tokens_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:
        _print_error(error)
    except OSError as error:  # a file or folder the user named cannot be read or written
        print(f"error: {error}", file=sys.stderr)
    return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
