# The co2cast image for docker-compose: Airflow 3 with the co2cast package and its pinned set,
# the CeleryExecutor, PostgreSQL clients and MLflow's basic-auth app (requirements-stack.txt),
# and the FAB auth manager (apache-airflow-providers-fab) for the Airflow UI's users
# (requirements-image.txt: every version pinned).
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
USER airflow

COPY --chown=airflow:root requirements.txt requirements-stack.txt requirements-image.txt /opt/co2cast/
# Every version pinned (requirements-image.txt), so a rebuild installs the same set.
RUN pip install --no-cache-dir -r /opt/co2cast/requirements-image.txt

COPY --chown=airflow:root pyproject.toml README.md /opt/co2cast/
COPY --chown=airflow:root pipeline /opt/co2cast/pipeline
COPY --chown=airflow:root expectations /opt/co2cast/expectations
RUN pip install --no-cache-dir --no-deps -e /opt/co2cast
COPY --chown=airflow:root dags /opt/airflow/dags
# The scheduler and Celery workers pre-import the pipeline before forking tasks (pipeline/preload.py).
COPY --chown=airflow:root deploy/airflow/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py
