"""The ``co2cast`` command: every pipeline step, reachable without Airflow."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import layout
from pipeline.config import Settings, get_settings
from pipeline.errors import Co2castError


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import tasks

    result = tasks.ingest(settings, args.source)
    if result["status"] == "unchanged":
        print(result["message"])
    else:
        print(
            f"curated vintage {result['vintage']}: {result['rows']:,} rows, "
            f"{result['entities']} entities, latest year {result['latest_year']}"
        )
        for line in result.get("renamed", []):
            print(f"  renamed: {line}")
        print(f"  pointer: {tasks.open_store(settings).uri(layout.CURATED_LATEST)}")
    return 0


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    """Run the raw gate on a file, writing nothing."""
    import datetime as dt

    from pipeline import sources
    from pipeline.ingest import emissions_raw_gates, raw_gate_parameters, read_release

    fetched = sources.fetch(args.file)  # missing, not allowed, unreachable: an error as for ingest (exit 1), not a rejected release
    try:
        staging = read_release(fetched.data, fetched.file_name, settings.max_source_bytes)  # ingest's checks before GX
    except sources.SourceError as error:
        print(f"REJECTED: {error}", file=sys.stderr)
        return 2
    gates = emissions_raw_gates(staging, raw_gate_parameters(staging, dt.date.today(), settings))
    print("\n".join(gate.summary() for gate in gates))
    return 0 if all(gate.success for gate in gates) else 2


def _check_source(args: argparse.Namespace, settings: Settings) -> int:
    """Fetch the configured source once and say what came back, writing nothing."""
    import hashlib

    from pipeline import sources

    fetched = sources.fetch(args.source or settings.source, settings.fetch_timeout)
    print(f"{fetched.source}: {len(fetched.data):,} bytes, sha256 {hashlib.sha256(fetched.data).hexdigest()}")
    return 0


def mlflow_ui_hint(tracking_uri: str) -> str:
    """Where a person browses the runs: a tracking server serves its own UI; a local store needs ``mlflow ui``."""
    from pipeline.redact import redact_url

    if tracking_uri.startswith(("http://", "https://")):
        return f"{redact_url(tracking_uri)}   (the tracking server's own UI)"
    shown = redact_url(tracking_uri) if "@" in tracking_uri else tracking_uri  # postgresql://user:password@host/db
    return f"{_bin('mlflow')} ui --workers 1 --backend-store-uri {shown}   (or: make mlflow-ui)"


def _bin(command: str) -> str:
    """A command of the environment co2cast runs in, by its full path: the summary's hints work from any directory."""
    return str(Path(sys.executable).parent / command)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import tasks

    latest = tasks.latest_vintage(settings)
    if latest is None:
        print(f"no curated vintage in {tasks.open_store(settings).uri()} yet: run `co2cast ingest`")
        return 1
    print(json.dumps(latest, indent=2, sort_keys=True))
    return 0


def _summary(args: argparse.Namespace, settings: Settings) -> int:
    """What the last run produced, for a person: vintage, and per series the champion."""
    from pipeline import tasks
    from pipeline.publish import gate_record
    from pipeline.report import champion_reason, left_out_line, selection_metric

    store = tasks.open_store(settings)
    latest = tasks.latest_vintage(settings)
    print(f"co2cast home:  {settings.home.resolve()}")
    print(f"object store:  {store.uri()}")
    if latest is None:
        print("no curated vintage yet: run `co2cast ingest` (or `make run`)")
        return 1
    print(
        f"vintage:       {latest['vintage']} ({latest['rows']:,} rows, {latest['entities']} entities, "
        f"up to {latest['latest_year']}, from {latest['source']})"
    )
    print(f"curated data:  {store.uri(latest['key'])}")
    rejected = tasks.quarantined_vintages(settings)
    if rejected:
        print(f"quarantined:   {', '.join(rejected)} (see {store.uri(layout.QUARANTINE)})")
    published = tasks.published_forecasts(settings)
    if not published:
        print("forecasts:     none published yet")
        return 0
    champions, registry_problem, client = _champion_versions(settings)
    left = _rollbacks_left(store)
    print("forecasts:")
    for sid, manifest, every, problem in published:
        if manifest is None:
            print(f"  {sid}: NOT READABLE: {problem}")
            continue
        unit = f" [{manifest.unit}]" if manifest.unit else ""
        print(
            f"  {manifest.series_id}{unit}: champion {manifest.model_name} v{manifest.model_version} "
            f"({manifest.model_family}), as of {manifest.as_of_year}, {manifest.first_year}-{manifest.last_year}"
        )
        registered = champions.get(manifest.series_id)
        renamed = _renamed(client, sid) if registry_problem is None and registered is None else None
        if renamed is not None:
            print(f"      REGISTRY DISAGREES: {renamed}")
        elif registry_problem is None and registered != str(manifest.model_version) and _deleted(client, sid, manifest.model_version):
            print(
                f"      REGISTRY DISAGREES: latest.json serves v{manifest.model_version}, which is no longer in the registry "
                f"(deleted in MLflow); `co2cast rollback {sid}` serves the newest earlier version's forecast instead"
            )
        elif sid in left:  # the disagreement, if any, is this rollback's, not a move by hand
            print(
                f"      ROLLBACK LEFT PART WAY: {left[sid]} was killed before it finished "
                f"({store.uri(layout.rollback_intent(sid))}); the series' next forecast run, or `co2cast rollback {sid}`, finishes it"
            )
        elif registry_problem is None and registered != str(manifest.model_version):
            print(
                f"      REGISTRY DISAGREES: @champion is {'v' + registered if registered else 'not set'}, but latest.json serves "
                f"v{manifest.model_version}: the alias was moved outside co2cast; move it back to v{manifest.model_version} "
                "(`co2cast rollback` serves an earlier version together with its forecast)"
            )
        gate = gate_record(store, sid, manifest.run_key)
        print(f"      {champion_reason(manifest.model_family, every, selection_metric(manifest), gate, manifest.model_version)}")
        history = left_out_line((manifest.model_extra or {}).get("left_out"), manifest.as_of_year)
        if history:
            print(f"      {history}")
        print(f"      {store.uri(manifest.key)}")
        if every:
            ranked = sorted(every.items(), key=lambda kv: kv[1].get("mase", float("inf")))
            print("      backtest MASE by model: " + ", ".join(f"{family} {s.get('mase', float('nan')):.3f}" for family, s in ranked))
    if registry_problem:
        print(f"registry:      not compared with the forecasts ({registry_problem})")
    print(f"MLflow UI:     {mlflow_ui_hint(settings.resolved_tracking_uri)}")
    readable = [sid for sid, manifest, _, _ in published if manifest is not None]
    if readable:
        example = "canada.co2_per_capita" if "canada.co2_per_capita" in readable else readable[0]
        # The default store is under the home, which defaults to the working directory's .co2cast.
        home = "" if settings.store_uri else f"CO2CAST_HOME={shlex.quote(str(settings.home.resolve()))} "
        print(f"a forecast:    {home}{_bin('co2cast')} show {example}")
    return 0


def _champion_versions(settings: Settings) -> tuple[dict[str, str], str | None, Any]:
    """Every series' ``@champion`` version, or why the registry could not be read (the summary goes on without it), and the client."""
    from pipeline import tracking

    try:
        client = tracking.configure(settings)
        return tracking.champion_versions(client), None, client
    except Exception as error:  # the summary is read from the store; the registry only adds a check
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        return {}, f"{type(error).__name__}: {first}", None


def _rollbacks_left(store: Any) -> dict[str, str]:
    """Series id -> "a rollback from vA to vB" for every ``@champion`` rollback left part way (its intent in the store).

    An intent marked ``completed`` is not one: that rollback returned, and only deleting its intent
    failed (the registry and the store agree; the next rollback removes it and is a step of its own).
    """
    left = {}
    for sid in layout.rollback_intent_series(store.list(layout.ROLLBACK_INTENTS)):
        try:
            shape = {"from_version": str, "to_version": str, "completed?": bool}
            intent = store.read_json_or_none(layout.rollback_intent(sid), shape) or {}
        except Exception:  # damaged: the rollback that finishes it says so
            intent = {}
        if intent.get("completed") is True:
            continue
        moves = f" from v{intent['from_version']} to v{intent['to_version']}" if intent else ""
        left[sid] = f"a rollback{moves}"
    return left


def _renamed(client: Any, series_id: str) -> str | None:
    """Why a series' registered model is not under its name when it was renamed in MLflow, else ``None`` (or when unknown now)."""
    from pipeline import tracking

    try:
        tracking.check_not_renamed(client, series_id)
    except tracking.ModelRenamed as error:
        return str(error)
    except Exception:  # the summary is read from the store; the registry only adds a check
        return None
    return None


def _deleted(client: Any, series_id: str, version: object) -> bool:
    """Whether a served version was deleted from the registry (``False`` when the registry cannot tell now)."""
    from pipeline import tracking

    try:
        return not tracking.version_exists(client, series_id, str(version))
    except Exception:  # the summary is read from the store; the registry only adds a check
        return False


def _forecast(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import tasks
    from pipeline.payloads import RunTrigger

    trigger = RunTrigger(run_type="cli", as_of_year=args.as_of_year, series=args.series, vintage=args.vintage)
    tasks.forecast_all(settings, trigger, progress=lambda line: print(line, flush=True))
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    """Print the latest published forecast of a series, read through its manifest."""
    from pipeline import tasks
    from pipeline.report import left_out_line

    manifest, table = tasks.show_forecast(settings, args.series_id)
    if args.start is not None or args.end is not None:
        first, last = int(table["year"].min()), int(table["year"].max())
        start, end = args.start if args.start is not None else first, args.end if args.end is not None else last
        table = table[(table["year"] >= start) & (table["year"] <= end)]
        if table.empty:
            print(f"error: no forecast year in {start}-{end}: {manifest.series_id} is forecast for {first}-{last}", file=sys.stderr)
            return 1
    columns = ["year", "mean", "lo_80", "hi_80", "lo_95", "hi_95"]
    if args.csv:  # only CSV, so it can be piped into a file or another tool; the unit is a column
        if "unit" not in table.columns:
            table = table.assign(unit=manifest.unit or "")
        print(table[[*columns, "unit"]].to_csv(index=False, float_format="%.4f"), end="")
        return 0
    unit = manifest.unit or (table["unit"].iloc[0] if "unit" in table.columns and len(table) else "")
    print(
        f"{manifest.series_id}: {manifest.model_name} v{manifest.model_version}, vintage {manifest.vintage}, "
        f"as of {manifest.as_of_year}; values in {unit or 'unknown units'}"
    )
    history = left_out_line((manifest.model_extra or {}).get("left_out"), manifest.as_of_year)
    if history:
        print(history)
    print(table[columns].to_string(index=False, float_format="%.3f"))
    return 0


def _scorecard(args: argparse.Namespace, settings: Settings) -> int:
    """The track record of a series' published forecasts: errors by family and horizon."""
    from pipeline import tasks, track_record
    from pipeline.scorecard import summarize

    store = tasks.open_store(settings)
    card = track_record.read_scorecard(store, args.series_id)
    if card is None or card.empty:
        unknown = _not_published_hint(store, args.series_id)
        if unknown:
            print(f"no scorecard for {args.series_id}: it has no published forecast; {unknown}")
        else:
            print(
                f"nothing scored for {args.series_id} yet: a published forecast is scored when a later run finds actuals "
                "for the years it covered"
            )
        return 1
    print(
        f"{args.series_id}: {len(card)} scored years from {card.groupby(['as_of_year', 'vintage', 'model_version']).ngroups} "
        f"forecasts (as of {card['as_of_year'].min()}-{card['as_of_year'].max()}), actuals of vintage {card['scored_vintage'].iloc[0]}"
    )
    superseded = int(card["superseded"].sum()) if "superseded" in card.columns else 0
    if superseded:
        print(f"{superseded} of them from forecasts superseded by a later one for the same as-of year: not in the summary")
    print("relative_mae < 1: the published forecasts beat carrying the last value forward (naive)")
    print(summarize(card).to_string(index=False, float_format="%.4g"))
    if args.rows:
        columns = ["as_of_year", "family", "model_version", "year", "horizon", "actual", "mean", "error", "hit_80", "hit_95", "naive"]
        columns += ["superseded"] if "superseded" in card.columns else []
        print(card[columns].to_string(index=False, float_format="%.4g"))
    print(f"file: {store.uri(layout.scorecard(args.series_id))}")
    return 0


def _view(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the forecast viewer on 127.0.0.1 (replaces this process with Streamlit)."""
    from pipeline.viewer import streamlit_command

    command = streamlit_command(args.port)
    with socket.socket() as probe:  # Streamlit's own refusal comes after our URL line and without a hint
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError as error:
            raise PortInUse(
                f"port {args.port} on 127.0.0.1 is not free ({error.strerror}): pass --port N (make viewer VIEWER_PORT=N)"
            ) from None
    print(f"co2cast viewer: http://127.0.0.1:{args.port}  (store {settings.resolved_store_uri})", flush=True)
    os.execv(command[0], command)  # noqa: S606 (a fixed argv: this interpreter running streamlit)
    return 0  # not reached


def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import tasks, tracking

    old, new = tasks.rollback(settings, args.series_id, args.alias)
    print(f"{tracking.registered_name(args.series_id)}@{args.alias}: version {old} -> {new}")
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, two spaces apart, each as wide as its widest cell (the last unpadded)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=True)]
    for line in (columns, *rows):
        cells = [f"{cell:<{width}}" for cell, width in zip(line[:-1], widths, strict=False)]
        print("  ".join([*cells, str(line[-1])]))


def _history(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import tasks
    from pipeline.publish import published_hint

    records = tasks.alias_history(settings, args.series_id)
    if not records:
        print(f"no alias history for {args.series_id}; {published_hint(tasks.open_store(settings), args.series_id)}")
        return 1
    columns = ("at", "as of", "from", "to", "moved", "metric", "champion", "challenger", "naive", "reason")
    rows = [
        [_fmt(r.get(key)) for key in ("at", "as_of_year", "from_version", "to_version")]
        + ["yes" if r.get("moved") else "no"]
        + [_fmt(r.get(key)) for key in ("metric", "champion_score", "challenger_score", "naive_score", "reason")]
        for r in records
    ]
    _print_table(columns, rows)
    return 0


def _version_cell(row: dict[str, Any]) -> str:
    """A version number, marked when the forecast's version is no longer in the registry (deleted in MLflow)."""
    return str(row["version"]) + ("" if row["registered"] else " (not in the registry)")


def _not_published_hint(store: Any, series_id: str) -> str | None:
    """For an id with no published forecast (a typo, most often): the ids that are published, or the closest few; else ``None``."""
    from pipeline.publish import latest_pointer, published_hint

    return None if latest_pointer(store, series_id) is not None else published_hint(store, series_id)


def _published_as_of_years(store: Any, series_id: str) -> str:
    """The as-of years a published series has forecasts for, for a person who asked for another."""
    years = layout.published_as_of_years(series_id, store.list(layout.series_forecasts(series_id)))
    if not years:
        return f"no forecast of {series_id} is published"
    return f"forecasts of {series_id} are published as of {', '.join(map(str, years))}"


def _forecasts(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import tasks

    rows = tasks.forecasts_as_of(settings, args.series_id, args.as_of)
    if not rows:
        store = tasks.open_store(settings)
        hint = _not_published_hint(store, args.series_id) or _published_as_of_years(store, args.series_id)
        print(f"nothing registered or published for {args.series_id} as of {args.as_of}; {hint}")
        return 1
    _print_table(
        ("version", "family", "vintage", "published"),
        [[_version_cell(row), str(row["family"]), str(row["vintage"]), row["published"] or "-"] for row in rows],
    )
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Settings], int], str]] = {
    "ingest": (_ingest, "fetch, snapshot, validate and curate a release"),
    "check-source": (_check_source, "fetch the configured source once, writing nothing"),
    "validate": (_validate, "check a CSV/XLSX file as ingest does before GX, then against the raw GX suite, writing nothing"),
    "status": (_status, "show the latest curated vintage"),
    "summary": (_summary, "what the last run produced"),
    "forecast": (_forecast, "train, register and publish forecasts from the latest curated vintage"),
    "show": (_show, "print the latest published forecast of a series"),
    "scorecard": (_scorecard, "score earlier published forecasts of a series against later actuals (by family and horizon)"),
    "rollback": (_rollback, "move a model alias (default @champion) back to its previous version"),
    "history": (_history, "print a series' alias history: every champion decision and rollback"),
    "forecasts": (_forecasts, "what was forecast for a series as of a year (versions and published files)"),
    "view": (_view, "serve the forecast viewer (Streamlit) on 127.0.0.1"),
}


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file path or an http(s) URL, or leave --source out for CO2CAST_SOURCE")
    return text.strip()  # a pasted URL's trailing space would stay in the stored file name ('.csv ')


def port_arg(text: str) -> int:
    """A TCP port to listen on: 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: use a number from 1 to 65535")
    return port


def alias_arg(text: str) -> str:
    """A registry alias as typed: ``arima`` or ``@arima``."""
    alias = text.strip().removeprefix("@")
    if not alias:
        raise argparse.ArgumentTypeError(f"{text!r} is not an alias: use e.g. champion or arima")
    return alias


def series_id_arg(text: str) -> str:
    """A series id as typed: ``world.co2``, the ``--series`` form ``World:co2``, names as written
    (``United States.co2``) or the registered model's name as the MLflow UI shows it (``co2cast.world.co2``).

    Ids are lowercase with every run of other characters as ``_`` (:func:`pipeline.series.series_id`),
    so no id holds a ``:``, and normalising one that is already an id leaves it as it is.
    """
    from pipeline.series import series_id
    from pipeline.tracking import registered_name

    prefix = registered_name("")
    if text.startswith(prefix) and text.count(".") >= 2:
        text = text[len(prefix) :]
    entity, _, variable = text.rpartition(":" if ":" in text else ".")
    return series_id(entity, variable) if entity.strip() and variable.strip() else text


class PortInUse(Co2castError):
    """The viewer's port is taken by another process."""


class NoSeriesId(Co2castError):
    """A series id argument that is none after normalising (``..``, ``a/b``, ``a'b``)."""


def _check_series_id(text: str, settings: Settings) -> None:
    """Refuse a series id argument that :func:`series_id_arg` could not make an id of, as an unknown id is refused.

    Such text must reach no store key (``forecasts/../latest.json``, a ``locks/series/a/`` folder)
    and no MLflow filter string.

    Raises:
        NoSeriesId: with the ids that are published, as for an id with no forecast.
    """
    from pipeline import tasks
    from pipeline.publish import published_hint
    from pipeline.series import is_series_id

    if not is_series_id(text):
        hint = published_hint(tasks.open_store(settings), text)
        raise NoSeriesId(f"{text[:80]!r} is no series id (entity.variable, e.g. canada.co2_per_capita); {hint}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``co2cast`` command."""
    parser = argparse.ArgumentParser(prog="co2cast", description="Forecast yearly CO2 emissions.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name in ("ingest", "check-source"):
            command.add_argument("--source", type=_non_empty, help="path or URL of the release (default: CO2CAST_SOURCE)")
        if name == "validate":
            command.add_argument("file", help="path or URL of a CSV/XLSX release")
        if name == "forecast":
            command.add_argument("--as-of-year", type=int, help="last year of data to use (default: the vintage's latest)")
            command.add_argument("--series", help="default | all | Entity:variable,… (default: CO2CAST_SERIES)")
            command.add_argument("--vintage", help="a curated vintage id (default: the latest)")
        if name in ("show", "rollback", "history", "forecasts", "scorecard"):
            command.add_argument("series_id", type=series_id_arg, help="e.g. canada.co2_per_capita (or Canada:co2_per_capita)")
        if name == "show":
            command.add_argument("--start", type=int, help="first year to print")
            command.add_argument("--end", type=int, help="last year to print")
            command.add_argument("--csv", action="store_true", help="print CSV")
        if name == "rollback":
            command.add_argument(
                "--alias", type=alias_arg, default="champion", help="the alias to move back, e.g. arima (default: champion)"
            )
        if name == "scorecard":
            command.add_argument("--rows", action="store_true", help="also print every scored year")
        if name == "forecasts":
            command.add_argument("--as-of", type=int, required=True, help="the as-of year, e.g. 2010")
        if name == "view":
            command.add_argument("--port", type=port_arg, default=8501, help="port on 127.0.0.1 (default 8501)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``co2cast``."""
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    # The level is set on the handler too: some libraries (GX) raise their own loggers to INFO.
    output = logging.StreamHandler()
    output.setLevel(level)
    output.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[output])
    handler: Any = COMMANDS[args.command][0]
    try:
        settings = get_settings()
        if getattr(args, "series_id", None) is not None:
            _check_series_id(args.series_id, settings)
        return int(handler(args, settings))
    except Co2castError as error:  # a known failure: one line a person can act on, no traceback
        from pipeline.ingest import ValidationFailed

        if isinstance(error, ValidationFailed):
            print(f"REJECTED: {error}", file=sys.stderr)
            return 2
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: what was written is safe to repeat
        print(f"interrupted: co2cast {args.command} stopped; run it again to finish (every step is safe to repeat)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `co2cast show … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as error:  # anything else: one line, and the traceback with -v
        if args.verbose:
            raise
        text = str(error).strip()
        first = text.splitlines()[0][:300] if text else ""
        hint = f"unexpected; rerun with co2cast -v {args.command} … for the traceback"
        print(f"error: {type(error).__name__}: {first} ({hint})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
