-- One Postgres server, three databases: Airflow's metadata, MLflow's tracking store, and the
-- users and permissions of MLflow's basic-auth app.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
