"""The ``nas`` command line. Heavy imports (ray, torch, transformers) happen inside the commands, so
``nas --help`` and ``nas spaces validate`` start fast."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 130


def _print_space_error(error) -> None:
    print(f"{error.source}: invalid space", file=sys.stderr)
    for path, message in error.errors:
        print(f"  {path}: {message}", file=sys.stderr)


def _quiet_libraries() -> None:
    import logging
    import warnings

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    warnings.filterwarnings("ignore", module="optuna")
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)


def cmd_search(args: argparse.Namespace) -> int:
    from nas.space import SpaceError, load_space, shipped_space_path

    overrides = list(args.set or [])
    if args.trials is not None:
        overrides.append(f"search.trials={args.trials}")
    try:
        space = load_space(shipped_space_path(args.space), overrides)
    except SpaceError as error:
        _print_space_error(error)
        return EXIT_INVALID
    _quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from nas.controller.run import check_study_name, default_study_name, run_study
    from nas.settings import database_url
    from nas.store import StudyExists

    url = database_url(args.storage)
    try:
        name = check_study_name(args.study_name or default_study_name(space))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    print(f"study {name}: {space.family}/{space.task}, {space.search.trials} trials, storage {url}")
    try:
        outcome = run_study(space, name, url, progress=not args.no_progress)
    except StudyExists as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print(f"\ninterrupted: study {name} is marked interrupted; finished trials are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError) as error:  # data problems found while preparing (unreadable files, too little text)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    print()
    _show(name, url)
    if outcome.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.status == "succeeded" else EXIT_INVALID


def _show(name: str, url: str, limit: int = 5, plots: Path | None = None) -> None:
    import optuna

    from nas.controller.run import optuna_storage
    from nas.store import get_study_row
    from nas.summary import study_report, write_plots

    row = get_study_row(url, name)
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(url))
    except KeyError:
        print(f"study {name}: {row.status} (no trials yet)")
        return
    print(study_report(study, row, limit))
    if plots is not None:
        for path in write_plots(study, plots):
            print(f"wrote {path}")


def cmd_spaces_validate(args: argparse.Namespace) -> int:
    from nas.space import SpaceError, load_space, shipped_space_path

    status = EXIT_OK
    for item in args.files:
        try:
            space = load_space(shipped_space_path(item), args.set or [])
        except SpaceError as error:
            _print_space_error(error)
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
    from nas.space import SpaceError, list_shipped_spaces, load_space

    rows = [("name", "family", "task", "trials", "size", "description")]
    for path in list_shipped_spaces():
        try:
            space = load_space(path)
        except SpaceError as error:
            rows.append((path.stem, "-", "-", "-", "INVALID", str(error).splitlines()[0]))
            continue
        rows.append((space.name, space.family, space.task, str(space.search.trials), _size_text(space), space.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5])
    return EXIT_OK


def cmd_studies_list(args: argparse.Namespace) -> int:
    from nas.settings import database_url
    from nas.store import list_study_rows

    rows = list_study_rows(database_url(args.storage))
    if not rows:
        print("no studies yet")
        return EXIT_OK
    table = [("name", "space", "status", "trials", "created")]
    table += [(r.name, r.space_name, r.status, str(r.trials), f"{r.created_at:%Y-%m-%d %H:%M}") for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_studies_show(args: argparse.Namespace) -> int:
    from nas.settings import database_url
    from nas.store import StudyNotFound

    _quiet_libraries()
    try:
        _show(args.name, database_url(args.storage), args.top, Path(args.plots) if args.plots else None)
    except StudyNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Neural architecture search for self-supervised backbones.")
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="run a search in the foreground")
    search.add_argument("space", help="a space YAML file, or the name of a shipped space (e.g. text-mlm-tiny)")
    search.add_argument("--trials", type=int, help="trial budget (overrides search.trials)")
    search.add_argument("--study-name", help="name of the study (default: space name + time)")
    search.add_argument("--storage", help="database URL (default: $NAS_DATABASE_URL or sqlite:///nas.db)")
    search.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a space value; repeatable")
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.set_defaults(func=cmd_search)

    spaces = commands.add_parser("spaces", help="search spaces").add_subparsers(dest="spaces_command", required=True)
    validate = spaces.add_parser("validate", help="check space files; prints OK or every error with its YAML path")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    validate.set_defaults(func=cmd_spaces_validate)
    spaces.add_parser("list", help="the shipped spaces").set_defaults(func=cmd_spaces_list)

    studies = commands.add_parser("studies", help="stored studies").add_subparsers(dest="studies_command", required=True)
    listing = studies.add_parser("list", help="all studies in the database")
    listing.add_argument("--storage")
    listing.set_defaults(func=cmd_studies_list)
    show = studies.add_parser("show", help="status, counts and best architectures of a study")
    show.add_argument("name")
    show.add_argument("--storage")
    show.add_argument("--top", type=int, default=5, help="how many best trials to list")
    show.add_argument("--plots", metavar="DIR", help="also write optimisation-history / Pareto-front PNGs here")
    show.set_defaults(func=cmd_studies_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
