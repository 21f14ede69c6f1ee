"""Import the pipeline and its heavy libraries once, in the process Airflow forks tasks from.

Airflow's LocalExecutor (and a Celery worker's prefork pool) starts every task as a fork of a
long-lived process. A module that process imported is already in memory in each task; one it
did not is imported again by every mapped task: pandas, statsmodels, scikit-learn, MLflow and
Great Expectations cost a few seconds of CPU per task (paid once per series now, twice when
train and publish were separate tasks). It also draws every chart kind once
(:func:`pipeline.plots.warm_up`), so a task's charts go on figures whose axes and ticks already
exist. ``deploy/airflow/airflow_local_settings.py`` calls :func:`preload` in the scheduler and the
Celery worker only; ``benchmarks/bench_all_series.py --no-preload`` measures the difference.
"""

from __future__ import annotations

import importlib
import logging
import os
import time

logger = logging.getLogger(__name__)

#: What a train or publish task imports on its way (the libraries first, then the pipeline):
#: the modules a task still imported after a preload of the obvious ones (``sys.modules``
#: before and after a train and a publish), by their roots.
MODULES = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "scipy.optimize",
    "statsmodels.api",
    "statsmodels.tsa.api",
    "statsmodels.tsa.forecasting.theta",
    "sklearn.linear_model",
    "matplotlib.pyplot",
    "matplotlib.backends.backend_agg",
    "boto3",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.store.tracking.sqlalchemy_store",  # MLflow imports its SQL stores on first use: about 0.7 s
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.tracing.export",
    "mlflow.tracing.processor",
    "great_expectations",
    "pipeline.tasks",
    "pipeline.core",
    "pipeline.candidates",
    "pipeline.models.registry",
    "pipeline.tracking",
    "pipeline.artifacts",
    "pipeline.pyfunc_loader",
    "pipeline.selection",
    "pipeline.locks",
    "pipeline.revisions",
    "pipeline.publish",
    "pipeline.ingest",
    "pipeline.scorecard",
    "pipeline.track_record",
    "pipeline.plots",
    "pipeline.diagnostics_plots",
)


def preload(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Import ``modules``; one that fails is logged and skipped (a task would then fail with its own error).

    Returns:
        The modules that could not be imported.
    """
    from pydantic import ValidationError

    from pipeline.config import Settings

    try:
        if not Settings().preload:  # CO2CAST_PRELOAD=false: each task imports what it needs itself
            return []
    except ValidationError as error:  # a bad setting fails each task with its own message; the scheduler starts
        logger.warning("co2cast preload: settings are invalid (%s); preloading anyway", str(error).splitlines()[0])
    os.environ.setdefault("MPLBACKEND", "Agg")  # no display in a scheduler
    started, failed = time.perf_counter(), []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # never stop a scheduler for a module a task may not need
            logger.warning("co2cast preload: could not import %s: %s", name, error)
            failed.append(name)
    if "pipeline.plots" in modules and "pipeline.plots" not in failed:
        try:
            # Every chart kind drawn once: the tasks forked from here draw on warm figures.
            importlib.import_module("pipeline.plots").warm_up()
        except Exception as error:  # a task then builds its figures itself
            logger.warning("co2cast preload: could not warm up the charts: %s", error)
    logger.info("co2cast preload: %d modules and the charts in %.1f s", len(modules) - len(failed), time.perf_counter() - started)
    return failed
