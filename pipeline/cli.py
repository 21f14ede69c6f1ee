"""The ``co2cast`` command: every pipeline step, reachable without Airflow."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import Settings, get_settings


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import ingest
    from pipeline.store import store_from_settings

    store = store_from_settings(settings)
    try:
        result = ingest.ingest(settings, store, args.source)
    except ingest.ValidationFailed as error:
        print(f"REJECTED: {error}", file=sys.stderr)
        return 2
    if result["status"] == "unchanged":
        print(result["message"])
    else:
        print(
            f"curated vintage {result['vintage']}: {result['rows']:,} rows, "
            f"{result['entities']} entities, latest year {result['latest_year']}"
        )
        print(f"  pointer: {store.uri('curated/latest.json')}")
    return 0


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    """Run the raw gate on a file, writing nothing."""
    import datetime as dt

    from pipeline import sources
    from pipeline.validation import run_suite

    try:
        fetched = sources.fetch(args.file)
        staging = sources.read_source(fetched.data, fetched.file_name)
    except sources.SourceError as error:
        print(f"REJECTED: {error}", file=sys.stderr)
        return 2
    required = list(sources.REQUIRED_LONG_VARIABLES) if (staging["variable"] != sources.WIDE_VARIABLE).any() else [sources.WIDE_VARIABLE]
    gate = run_suite(
        "emissions_raw", staging, {"current_year": dt.date.today().year, "previous_newest_year": 1750, "required_variables": required}
    )
    print(gate.summary())
    return 0 if gate.success else 2


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ingest import latest_curated
    from pipeline.store import store_from_settings

    store = store_from_settings(settings)
    latest = latest_curated(store)
    if latest is None:
        print(f"no curated vintage in {store.uri()} yet: run `co2cast ingest`")
        return 1
    print(json.dumps(latest, indent=2, sort_keys=True))
    return 0


def _summary(args: argparse.Namespace, settings: Settings) -> int:
    """What the last run produced, for a person: vintage, and per series the champion."""
    from pipeline.ingest import latest_curated
    from pipeline.store import store_from_settings

    store = store_from_settings(settings)
    latest = latest_curated(store)
    print(f"co2cast home:  {settings.home.resolve()}")
    print(f"object store:  {store.uri()}")
    if latest is None:
        print("no curated vintage yet: the ingest has not succeeded (see the logs above)")
        return 1
    print(
        f"vintage:       {latest['vintage']} ({latest['rows']:,} rows, {latest['entities']} entities, "
        f"up to {latest['latest_year']}, from {latest['source']})"
    )
    print(f"curated data:  {store.uri(latest['key'])}")
    rejected = sorted({k.split("/")[1] for k in store.list("quarantine/")})
    if rejected:
        print(f"quarantined:   {', '.join(rejected)} (see {store.uri('quarantine/')})")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Settings], int], str]] = {
    "ingest": (_ingest, "fetch, snapshot, validate and curate a release"),
    "validate": (_validate, "check a CSV/XLSX file against the raw GX suite, writing nothing"),
    "status": (_status, "show the latest curated vintage"),
    "summary": (_summary, "what the last run produced"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``co2cast`` command."""
    parser = argparse.ArgumentParser(prog="co2cast", description="Forecast yearly CO2 emissions.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == "ingest":
            command.add_argument("--source", help="path or URL of the release (default: CO2CAST_SOURCE)")
        if name == "validate":
            command.add_argument("file", help="path or URL of a CSV/XLSX release")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``co2cast``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler: Any = COMMANDS[args.command][0]
    try:
        return int(handler(args, get_settings()))
    except Exception as error:  # a clear one-line error instead of a traceback
        from pipeline.sources import SourceError

        if isinstance(error, (SourceError, ValueError)):
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
