"""MLflow: one run per (series, run key), nested runs per candidate, a registry per series.

Models are logged as pyfunc "models from code" (``pipeline/pyfunc_model.py``) whose artefact is
the forecaster's own JSON + npz files: loading one unpickles nothing. Runs and model versions
carry the run key as a tag, so a rerun of the same key finds them and creates nothing new.
MLflow keeps no alias history, so every alias move is recorded as tags on the version it
moves to (previous version, reason, scores), and :func:`rollback_alias` moves an alias back.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pipeline.config import Settings

EXPERIMENT = "co2cast"
PYFUNC_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"
RUN_KEY_TAG = "co2cast.run_key"
FAMILY_TAG = "co2cast.family"


def registered_name(series_id: str) -> str:
    """The registered model of a series, e.g. ``co2cast.canada.co2_per_capita``."""
    return f"co2cast.{series_id}"


def configure(settings: Settings) -> Any:
    """Point MLflow at the configured tracking store; make sure the experiment exists.

    The embedded default is a SQLite file with artefacts in a directory beside it (MLflow would
    otherwise put artefacts in ``./mlruns`` of whatever directory a task runs in).

    Returns:
        An ``MlflowClient`` for the configured store.
    """
    # Task logs are read by people: no progress bars, no usage telemetry leaving the machine.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    uri = settings.resolved_tracking_uri
    artifact_location = None
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (database.parent / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        try:
            # The kind tag makes the MLflow UI open the experiment on its runs, not the GenAI view.
            tags = {"mlflow.experimentKind": "custom_model_development"}
            client.create_experiment(EXPERIMENT, artifact_location=artifact_location, tags=tags)
        except Exception:  # created by a parallel task in the meantime
            if client.get_experiment_by_name(EXPERIMENT) is None:
                raise
    mlflow.set_experiment(EXPERIMENT)
    return client


def find_run(client: Any, run_key: str, parent_only: bool = True) -> Any | None:
    """The finished parent run of a run key, if one exists."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    query = f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'FINISHED'"
    runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=20)
    if parent_only:
        runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return runs[0] if runs else None


def log_forecaster(model: Any, horizon_end: int, levels: tuple[int, ...] = (80, 95), name: str = "model") -> Any:
    """Log a fitted forecaster in the active run as a pyfunc model from code.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` is what :func:`register` takes).
    """
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        directory = model.save(Path(tmp) / "forecaster")
        first = int(model.years_[-1]) + 1
        example = pd.DataFrame({"year": [first, first + 1]})
        output = model.predict(2, levels=levels).to_frame()
        with warnings.catch_warnings():
            # MLflow hints about integer columns and input examples; the signature is explicit.
            warnings.simplefilter("ignore", UserWarning)
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(PYFUNC_CODE),
                artifacts={"model": str(directory)},
                model_config={"horizon_end": int(horizon_end), "levels": list(levels)},
                signature=infer_signature(example, output),
                pip_requirements=[],  # served from an environment with co2cast installed
            )


def register(client: Any, model_uri: str, series_id: str, run_key: str, family: str, tags: dict[str, str]) -> Any:
    """Register a logged model unless this run key already registered this family.

    Returns:
        The ``ModelVersion`` (existing or new).
    """
    import mlflow

    name = registered_name(series_id)
    existing = find_version(client, series_id, run_key, family)
    if existing is not None:
        return existing
    all_tags = {RUN_KEY_TAG: run_key, FAMILY_TAG: family, **tags}
    return mlflow.register_model(model_uri, name, tags=all_tags)


def find_version(client: Any, series_id: str, run_key: str, family: str) -> Any | None:
    """The model version a run key registered for a family, if any."""
    name = registered_name(series_id)
    query = f"name = '{name}' and tags.`{RUN_KEY_TAG}` = '{run_key}' and tags.`{FAMILY_TAG}` = '{family}'"
    versions = client.search_model_versions(query)
    return max(versions, key=lambda v: int(v.version)) if versions else None


def alias_version(client: Any, series_id: str, alias: str) -> Any | None:
    """The version an alias points at, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(registered_name(series_id), alias)
    except MlflowException:
        return None


def move_alias(client: Any, series_id: str, alias: str, version: str, reason: str, scores: dict[str, Any] | None = None) -> bool:
    """Point an alias at a version, recording the move as tags on that version.

    Returns:
        ``True`` when the alias moved, ``False`` when it already pointed there.
    """
    name = registered_name(series_id)
    previous = alias_version(client, series_id, alias)
    if previous is not None and str(previous.version) == str(version):
        return False
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), f"alias.{alias}.previous_version", str(previous.version) if previous else "")
    client.set_model_version_tag(name, str(version), f"alias.{alias}.reason", reason)
    for metric, value in (scores or {}).items():
        client.set_model_version_tag(name, str(version), f"alias.{alias}.{metric}", str(value))
    return True


def rollback_alias(client: Any, series_id: str, alias: str = "champion") -> tuple[str, str]:
    """Move an alias back to the version it pointed at before its last move.

    Returns:
        ``(from_version, to_version)``.
    """
    current = alias_version(client, series_id, alias)
    if current is None:
        raise ValueError(f"{registered_name(series_id)} has no @{alias}")
    previous = current.tags.get(f"alias.{alias}.previous_version")
    if not previous:
        raise ValueError(f"{registered_name(series_id)}@{alias} (version {current.version}) records no previous version to roll back to")
    client.set_registered_model_alias(registered_name(series_id), alias, previous)
    client.set_model_version_tag(registered_name(series_id), previous, f"alias.{alias}.reason", f"rollback from version {current.version}")
    return str(current.version), previous
