"""The forecast half: from a curated vintage to registered models and a published forecast.

The per-series core (:func:`train_series`, :func:`publish_series`) is separate from the runner
that resolves which series to run (:func:`resolve_run`); the ``co2_forecast`` DAG maps the core
over series, and ``co2cast forecast`` runs the same functions in a loop.

A run is keyed by ``(series_id, vintage, as_of_year, config_hash)``. Training is seeded and
deterministic, the MLflow run and model versions carry the key as a tag, and the published
files live under the key: running the same key again finds all three and creates nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import ingest, tracking
from pipeline.config import Settings
from pipeline.models.base import Forecaster
from pipeline.store import store_from_settings

logger = logging.getLogger(__name__)

#: The study's series: it gets the study's own 200/15 split besides the rolling backtest.
STUDY_SERIES = "canada.co2_per_capita"
STUDY_TRAIN_YEARS = 200

#: Model families: import path and hyperparameters. Changing any of this changes the config
#: hash, hence the run key, so new settings retrain instead of reusing old results.
MODELS: dict[str, dict[str, Any]] = {
    "arima": {"class": "pipeline.models.arima.ArimaForecaster", "params": {"max_p": 3, "max_q": 3, "search": "stepwise"}},
    "lstm": {"class": "pipeline.models.lstm.LSTMForecaster", "params": {}},
    "rnn": {"class": "pipeline.models.rnn.RNNForecaster", "params": {}},
    "drift": {"class": "pipeline.models.baselines.DriftForecaster", "params": {}},
    "naive": {"class": "pipeline.models.baselines.NaiveForecaster", "params": {}},
}
#: Families registered every run; a baseline is registered too when it wins the backtest.
REGISTERED_FAMILIES = ("arima", "lstm")
#: Until a promotion gate exists the newest ARIMA serves forecasts.
CHAMPION_FAMILY = "arima"
BACKTEST = {"horizon": 5, "n_origins": 5}
LEVELS = (80, 95)


def run_config(settings: Settings) -> dict[str, Any]:
    """Everything that shapes a forecast; its hash is part of the run key."""
    return {
        "horizon_end": settings.horizon_end,
        "levels": list(LEVELS),
        "backtest": BACKTEST,
        "models": MODELS,
        "registered": list(REGISTERED_FAMILIES),
        "champion": CHAMPION_FAMILY,
        "min_points": 30,
    }


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a run config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def run_key(series_id: str, vintage: str, as_of_year: int, cfg_hash: str) -> str:
    """The identity of a forecast run (docs/design.md, "Identity and idempotency")."""
    return hashlib.sha256(f"{series_id}|{vintage}|{as_of_year}|{cfg_hash}".encode()).hexdigest()[:16]


def make_model(family: str) -> Forecaster:
    """A fresh, unfitted model of a family, with the configured hyperparameters."""
    spec = MODELS[family]
    module_name, _, class_name = spec["class"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**spec["params"])


def resolve_run(
    settings: Settings,
    *,
    as_of_year: int | None = None,
    series: str | None = None,
    vintage: str | None = None,
    logical_date: dt.datetime | None = None,
    triggered_by_data: bool = True,
) -> dict[str, Any]:
    """Decide what a forecast run covers.

    ``as_of_year``: an explicit value wins; a run started by new data (asset event) or by hand
    uses the latest year of its vintage; a scheduled or backfill run with logical date in year
    ``Y`` uses ``Y - 1`` (capped at the vintage's latest year).

    Returns:
        ``vintage``, ``as_of_year``, ``config_hash``, ``horizon_end`` and ``series``: a list of
        ``{"entity", "variable", "series_id", "run_key"}``.

    Raises:
        ValueError: no curated vintage, an unknown vintage, or an as-of year outside the data.
    """
    from pipeline.series import resolve_series, series_id

    store = store_from_settings(settings)
    if vintage:
        pointer = store.read_json_or_none(f"curated/{vintage}/meta.json")
        if pointer is None:
            raise ValueError(f"vintage {vintage} is not curated in {store.uri()}")
    else:
        pointer = ingest.latest_curated(store)
        if pointer is None:
            raise ValueError(f"no curated vintage in {store.uri()}: run co2_ingest (or `co2cast ingest`) first")
    latest_year = int(pointer["latest_year"])
    if as_of_year is None:
        if triggered_by_data or logical_date is None:
            as_of_year = latest_year
        else:
            as_of_year = min(logical_date.year - 1, latest_year)
    as_of_year = int(as_of_year)
    if as_of_year >= settings.horizon_end:
        raise ValueError(f"as-of year {as_of_year} is not before the horizon end {settings.horizon_end}")
    tidy = ingest.read_curated(store, pointer["vintage"])
    if as_of_year < int(tidy["year"].min()):
        raise ValueError(f"as-of year {as_of_year} is before the first year of vintage {pointer['vintage']}")
    cfg = run_config(settings)
    cfg_hash = config_hash(cfg)
    pairs = resolve_series(tidy, series or settings.series, min_points=cfg["min_points"], as_of_year=as_of_year)
    items = []
    for entity, variable in pairs:
        sid = series_id(entity, variable)
        items.append(
            {"entity": entity, "variable": variable, "series_id": sid, "run_key": run_key(sid, pointer["vintage"], as_of_year, cfg_hash)}
        )
    return {
        "vintage": pointer["vintage"],
        "as_of_year": as_of_year,
        "config_hash": cfg_hash,
        "horizon_end": settings.horizon_end,
        "series": items,
    }


def train_series(settings: Settings, run: dict[str, Any], item: dict[str, Any], airflow: dict[str, str] | None = None) -> dict[str, Any]:
    """Prepare, diagnose, backtest and fit every candidate of one series; register in MLflow.

    Reuses the finished MLflow run of the same run key when there is one.

    Returns:
        A small dict for XCom: ``series_id``, ``run_key``, ``run_id``, ``model_name``,
        ``champion_version``, ``champion_family``, ``versions`` (family -> version) and
        ``scores`` (family -> backtest metrics).
    """
    import mlflow

    client = tracking.configure(settings)
    key = item["run_key"]
    done = tracking.find_run(client, key)
    if done is not None and done.data.tags.get("co2cast.complete") == "true":
        logger.info("run key %s already trained in MLflow run %s: reusing it", key, done.info.run_id)
        return json.loads(_run_artifact(done.info.run_id, "summary.json"))

    from pipeline.backtest import backtest, study_split
    from pipeline.diagnostics import diagnose
    from pipeline.series import prepare_series

    store = store_from_settings(settings)
    tidy = ingest.read_curated(store, run["vintage"])
    prepared = prepare_series(tidy, item["entity"], item["variable"], run["as_of_year"], min_points=run_config(settings)["min_points"])
    sid = prepared.series_id
    gx = store.read_json_or_none(f"curated/{run['vintage']}/gx_result.json") or {}
    tags = {
        tracking.RUN_KEY_TAG: key,
        "co2cast.series_id": sid,
        "co2cast.vintage": run["vintage"],
        "co2cast.as_of_year": str(run["as_of_year"]),
        "co2cast.config_hash": run["config_hash"],
        "co2cast.gx_success": str(bool(gx) and all(r.get("success") for r in gx.values())).lower(),
        "co2cast.gx_result": store.uri(f"curated/{run['vintage']}/gx_result.json"),
        **{f"airflow.{k}": str(v) for k, v in (airflow or {}).items()},
    }
    scores: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    with mlflow.start_run(run_name=f"{sid} asof={run['as_of_year']}", tags=tags) as parent:
        mlflow.log_params(
            {
                "series_id": sid,
                "entity": prepared.entity,
                "variable": prepared.variable,
                "first_year": prepared.first_year,
                "last_year": prepared.last_year,
                "n_points": len(prepared.values),
                "horizon_end": settings.horizon_end,
                "backtest_horizon": BACKTEST["horizon"],
                "backtest_origins": BACKTEST["n_origins"],
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            report = diagnose(prepared.years, prepared.values, Path(tmp), title=sid)
            mlflow.log_artifacts(tmp, "diagnostics")
        mlflow.log_metric("implied_d", report["stationarity"]["implied_d"])

        fitted: dict[str, tuple[Forecaster, Any]] = {}
        for family in MODELS:
            factory: Callable[[], Forecaster] = lambda family=family: make_model(family)  # noqa: E731
            with mlflow.start_run(run_name=family, nested=True, tags={**tags, tracking.FAMILY_TAG: family}):
                result = backtest(factory, prepared.years, prepared.values, levels=LEVELS, **BACKTEST)
                metrics = {f"backtest_{k}": v for k, v in result.metrics.items() if v is not None and v == v}
                if sid == STUDY_SERIES and len(prepared.values) > STUDY_TRAIN_YEARS:
                    study = study_split(factory, prepared.years, prepared.values, train=STUDY_TRAIN_YEARS, levels=LEVELS)
                    metrics.update({f"study_{k}": v for k, v in study.metrics.items() if v is not None and v == v})
                mlflow.log_metrics(metrics)
                mlflow.log_dict(result.to_dict(), "backtest.json")
                model = make_model(family).fit(prepared.values, prepared.years)
                mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, tuple, dict)) else v for k, v in model.get_params().items()})
                if family == "arima":
                    mlflow.log_param("fitted_order", json.dumps([int(v) for v in model.order_]))
                info = tracking.log_forecaster(model, settings.horizon_end, LEVELS)
                scores[family] = {k.removeprefix("backtest_"): v for k, v in metrics.items() if k.startswith("backtest_")}
                scores[family].update({k: v for k, v in metrics.items() if k.startswith("study_")})
                fitted[family] = (model, info)

        best = min(scores, key=lambda f: scores[f].get("mase", float("inf")))
        to_register = [*REGISTERED_FAMILIES, *([best] if best not in REGISTERED_FAMILIES else [])]
        for family in to_register:
            version = tracking.register(
                client, fitted[family][1].model_uri, sid, key, family, {**tags, "co2cast.mlflow_run_id": parent.info.run_id}
            )
            versions[family] = str(version.version)
            tracking.move_alias(client, sid, family, version.version, reason=f"newest {family} (run key {key})", scores=scores[family])
        champion = versions[CHAMPION_FAMILY]
        tracking.move_alias(
            client, sid, "champion", champion, reason=f"newest {CHAMPION_FAMILY}: no promotion gate yet", scores=scores[CHAMPION_FAMILY]
        )
        summary = {
            "series_id": sid,
            "run_key": key,
            "run_id": parent.info.run_id,
            "model_name": tracking.registered_name(sid),
            "champion_family": CHAMPION_FAMILY,
            "champion_version": champion,
            "versions": versions,
            "best_backtest_family": best,
            "scores": {f: {k: round(float(v), 6) for k, v in s.items()} for f, s in scores.items()},
            "as_of_year": run["as_of_year"],
            "vintage": run["vintage"],
        }
        mlflow.log_dict(summary, "summary.json")
        # Set last: marks the run complete, so a rerun of the same key reuses it.
        mlflow.set_tag("co2cast.complete", "true")
    return summary


def publish_series(
    settings: Settings, run: dict[str, Any], trained: dict[str, Any], airflow: dict[str, str] | None = None
) -> dict[str, Any]:
    """Forecast with the champion version to the horizon end, gate the table, publish it.

    Returns:
        ``series_id``, ``manifest`` (key), ``latest`` (key), ``first_year``, ``last_year``,
        ``model_version``, ``uri``.
    """
    import mlflow

    from pipeline.publish import forecast_table, publish

    tracking.configure(settings)
    store = store_from_settings(settings)
    name, version = trained["model_name"], trained["champion_version"]
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    import pandas as pd

    frame = model.predict(pd.DataFrame({"year": range(run["as_of_year"] + 1, settings.horizon_end + 1)}))
    table = forecast_table(
        frame,
        series_id=trained["series_id"],
        model_name=name,
        model_version=version,
        family=trained["champion_family"],
        vintage=run["vintage"],
        as_of_year=run["as_of_year"],
    )
    extras = {
        "diagnostics.json": _run_artifact(trained["run_id"], "diagnostics/diagnostics.json"),
        "backtest.json": json.dumps(trained["scores"], indent=2, sort_keys=True).encode(),
    }
    meta = {
        "series_id": trained["series_id"],
        "vintage": run["vintage"],
        "as_of_year": run["as_of_year"],
        "model_name": name,
        "model_version": version,
        "model_family": trained["champion_family"],
        "mlflow_run_id": trained["run_id"],
        "airflow": airflow or {},
    }
    manifest = publish(
        store, table, series_id=trained["series_id"], run_key=trained["run_key"], horizon_end=settings.horizon_end, meta=meta, extras=extras
    )
    return {
        "series_id": trained["series_id"],
        "manifest": manifest["key"],
        "uri": store.uri(manifest["key"]),
        "latest": store.uri(f"forecasts/{trained['series_id']}/latest.json"),
        "first_year": manifest["first_year"],
        "last_year": manifest["last_year"],
        "model_version": version,
        "mase": trained["scores"][trained["champion_family"]].get("mase"),
    }


def run_summary(settings: Settings, run: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per series of a run: published for its run key, or not.

    Read from the object store, not from task results, so it also reports series whose tasks
    failed.
    """
    store = store_from_settings(settings)
    lines = []
    for item in run["series"]:
        sid, key = item["series_id"], item["run_key"]
        manifest_key = f"forecasts/{sid}/asof={run['as_of_year']}/{key}/manifest.json"
        manifest = store.read_json_or_none(manifest_key)
        if manifest is None:
            text = f"{sid}: NOT published for run key {key} (see the failed task's log)"
            lines.append({"series_id": sid, "published": False, "text": text})
            continue
        text = (
            f"{sid}: {manifest['model_name']} v{manifest['model_version']} ({manifest['model_family']}), "
            f"{manifest['first_year']}-{manifest['last_year']}, published {store.uri(manifest_key)}"
        )
        lines.append({"series_id": sid, "published": True, "manifest": manifest_key, "text": text})
    return lines


def _run_artifact(run_id: str, path: str) -> bytes:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        return Path(local).read_bytes()


def forecast_all(settings: Settings, **resolve_kwargs: Any) -> dict[str, Any]:
    """Resolve a run and train + publish every series in turn (the ``co2cast forecast`` command)."""
    run = resolve_run(settings, **resolve_kwargs)
    results = []
    for item in run["series"]:
        trained = train_series(settings, run, item)
        results.append({**trained, "published": publish_series(settings, run, trained)})
    return {**run, "results": results}
