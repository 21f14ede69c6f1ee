#!/bin/sh
# The MLflow tracking server behind MLflow's basic-auth app. The auth config is written at
# start from the environment, so the database password lives only in .env.
set -eu
umask 077
cat > /tmp/mlflow-auth.ini <<INI
[mlflow]
default_permission = READ
database_uri = $MLFLOW_AUTH_DATABASE_URI
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
INI
export MLFLOW_AUTH_CONFIG_PATH=/tmp/mlflow-auth.ini
# Inside the compose network only (the published port is bound to 127.0.0.1 by default).
# --allowed-hosts replaces MLflow's own list: requests whose Host header is not in it are refused.
# Published elsewhere (CO2CAST_BIND_ADDRESS), set MLFLOW_ALLOWED_HOSTS to the names clients use.
exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 --workers 1 \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination s3://mlflow/artifacts --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost:*,127.0.0.1:*}"
