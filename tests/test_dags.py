"""DAG integrity: every DAG file imports cleanly, fast, with no network, database or heavy import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ["pandas", "numpy", "statsmodels", "mlflow", "great_expectations", "boto3", "matplotlib", "pipeline.ingest"]

# Imports every DAG file the way the DAG processor does, with sockets and SQLite connections
# made to fail, then reports the DAG ids and which heavy modules got imported.
PROBE = textwrap.dedent(
    """
    import importlib.util, json, socket, sqlite3, sys

    def refuse(*args, **kwargs):
        raise RuntimeError("DAG parsing must not touch the network or a database")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    sqlite3.connect = refuse
    before = set(sys.modules)
    dags = {}
    for path in sys.argv[1:]:
        spec = importlib.util.spec_from_file_location("dagfile_" + str(len(dags)), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        from airflow.sdk import DAG
        dags[path] = [obj.dag_id for obj in vars(module).values() if isinstance(obj, DAG)]
    print(json.dumps({"dags": dags, "modules": sorted(set(sys.modules) - before)}))
    """
)


def test_dag_files_exist() -> None:
    assert {p.stem for p in DAG_FILES} >= {"co2_ingest", "co2_forecast"}


def test_dagbag_has_no_import_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert {"co2_ingest", "co2_forecast"} <= set(bag.dag_ids)
    for dag_id in bag.dag_ids:
        dag = bag.dags[dag_id]
        assert dag.catchup is False, dag_id
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert all(task.retries >= 2 for task in dag.tasks), dag_id
        # A task annotated as returning a dict would push every key as one more XCom (one more
        # call to the API server each, per mapped task); nothing reads them by key.
        assert [task.task_id for task in dag.tasks if getattr(task, "multiple_outputs", False)] == [], dag_id


def test_dag_parse_is_light_and_offline(tmp_path: Path) -> None:
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, DAG_FILES)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["dags"]) == {str(path) for path in DAG_FILES} and len(DAG_FILES) >= 2
    assert all(report["dags"].values()), report["dags"]
    heavy = [m for m in report["modules"] if m.split(".")[0] in HEAVY or m in HEAVY]
    assert heavy == [], f"DAG files import heavy modules at parse time: {heavy[:10]}"


def test_ingest_dag_shape() -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / "co2_ingest.py")).dags["co2_ingest"]
    order = ["fetch_source", "check_new_vintage", "snapshot_raw", "validate_raw", "curate_vintage"]
    assert set(order) <= set(dag.task_ids)
    assert dag.get_task("snapshot_raw").upstream_task_ids == {"fetch_source", "check_new_vintage"}
    assert dag.get_task("validate_raw").upstream_task_ids == {"snapshot_raw"}
    outlets = [getattr(o, "name", None) for o in dag.get_task("curate_vintage").outlets]
    assert outlets == ["co2_emissions_curated"]
    assert dag.schedule == "@daily"


def test_forecast_dag_shape() -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["co2_forecast"]
    assert set(dag.task_ids) == {"resolve_run", "list_series", "forecast_series", "summarize"}
    # One mapped task per series (train, then publish), over what list_series returns.
    assert dag.get_task("forecast_series").upstream_task_ids == {"list_series", "resolve_run"}
    assert dag.task_dict["forecast_series"].op_kwargs_expand_input.value.keys() == {"item"}
    assert dag.get_task("forecast_series").max_active_tis_per_dag == 2
    assert dag.get_task("summarize").trigger_rule == "all_done"
    assert dag.get_task("summarize").upstream_task_ids == {"forecast_series", "resolve_run"}
    assert set(dag.params.keys()) == {"as_of_year", "series", "vintage"}
    # Scheduled on the curated Asset or yearly.
    assert "co2_emissions_curated" in str(dag.timetable.asset_condition)


def test_max_active_series_bounds_the_mapped_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("CO2CAST_MAX_ACTIVE_SERIES", "5")
    dag = DagBag(dag_folder=str(ROOT / "dags" / "co2_forecast.py")).dags["co2_forecast"]
    assert dag.get_task("forecast_series").max_active_tis_per_dag == 5

    monkeypatch.setenv("CO2CAST_MAX_ACTIVE_SERIES", "two")
    errors = DagBag(dag_folder=str(ROOT / "dags" / "co2_forecast.py")).import_errors
    assert len(errors) == 1 and "CO2CAST_MAX_ACTIVE_SERIES='two'" in next(iter(errors.values()))


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "", "many"])
def test_max_active_series_refuses_what_is_not_a_count(raw: str) -> None:
    from pipeline.config import max_active_series

    with pytest.raises(ValueError, match="CO2CAST_MAX_ACTIVE_SERIES"):
        max_active_series({"CO2CAST_MAX_ACTIVE_SERIES": raw})
    assert max_active_series({}) == 2
    assert max_active_series({"CO2CAST_MAX_ACTIVE_SERIES": " 3 "}) == 3


def test_every_task_has_the_execution_timeout_of_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung task (a stalled S3 or MLflow connection) is stopped by Airflow and retried, not left holding its slot."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("CO2CAST_TASK_TIMEOUT_MINUTES", raising=False)
    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    assert {"co2_ingest", "co2_forecast"} <= set(dags)
    for dag in (dags["co2_ingest"], dags["co2_forecast"]):
        for task in dag.tasks:
            assert task.execution_timeout == timedelta(minutes=30), (dag.dag_id, task.task_id)

    monkeypatch.setenv("CO2CAST_TASK_TIMEOUT_MINUTES", "7.5")
    dag = DagBag(dag_folder=str(ROOT / "dags" / "co2_ingest.py")).dags["co2_ingest"]
    assert {task.execution_timeout for task in dag.tasks} == {timedelta(minutes=7.5)}

    monkeypatch.setenv("CO2CAST_TASK_TIMEOUT_MINUTES", "half an hour")
    errors = DagBag(dag_folder=str(ROOT / "dags" / "co2_forecast.py")).import_errors
    assert len(errors) == 1 and "CO2CAST_TASK_TIMEOUT_MINUTES='half an hour'" in next(iter(errors.values()))


@pytest.mark.parametrize("raw", ["0", "-5", "nan", "inf", "", "30m"])
def test_task_timeout_refuses_what_is_not_a_number_of_minutes(raw: str) -> None:
    from pipeline.config import task_timeout

    with pytest.raises(ValueError, match="CO2CAST_TASK_TIMEOUT_MINUTES"):
        task_timeout({"CO2CAST_TASK_TIMEOUT_MINUTES": raw})
    assert task_timeout({"CO2CAST_TASK_TIMEOUT_MINUTES": " 45 "}) == timedelta(minutes=45)


def _task_bodies(path: Path) -> dict[str, list]:
    import ast

    tree = ast.parse(path.read_text())
    bodies = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(ast.unparse(d).startswith("task") for d in node.decorator_list):
            bodies[node.name] = [s for s in node.body if not isinstance(s, (ast.Import, ast.ImportFrom, ast.Expr))]
    return bodies


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_files_are_wiring(path: Path) -> None:
    """Task bodies are a line or two; run types, asset events and error mapping live in pipeline.runner."""
    bodies = _task_bodies(path)
    assert bodies, f"no tasks found in {path.name}"
    for name, statements in bodies.items():
        assert len(statements) <= 2, f"{path.name}: task {name} has {len(statements)} statements; move the logic to pipeline/"
    source = path.read_text()
    for parsing in ("run_type", "triggering_asset_events", "AirflowFailException", "get_current_context", "outlet_events"):
        assert parsing not in source, f"{path.name} handles {parsing} itself; pipeline.runner does that"
