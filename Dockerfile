# The co2cast image for docker-compose: Airflow 3 with the co2cast package and its pinned set.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
USER airflow

COPY --chown=airflow:root requirements.txt /opt/co2cast/requirements.txt
RUN pip install --no-cache-dir -r /opt/co2cast/requirements.txt psycopg2-binary==2.9.13 apache-airflow-providers-celery==3.26.0

COPY --chown=airflow:root pyproject.toml README.md /opt/co2cast/
COPY --chown=airflow:root pipeline /opt/co2cast/pipeline
COPY --chown=airflow:root expectations /opt/co2cast/expectations
RUN pip install --no-cache-dir --no-deps -e /opt/co2cast
COPY --chown=airflow:root dags /opt/airflow/dags
