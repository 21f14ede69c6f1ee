#!/bin/sh
# MinIO's init job, the only place the root credentials are used: buckets, and one user per
# client with a least-privilege policy (the pipeline: its store bucket; MLflow: its artefacts).
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing local/co2cast local/mlflow
mc admin policy create local co2cast-pipeline /co2cast/deploy/minio-policy-pipeline.json
mc admin policy create local co2cast-mlflow /co2cast/deploy/minio-policy-mlflow.json
mc admin user add local "$MINIO_PIPELINE_USER" "$MINIO_PIPELINE_PASSWORD"
mc admin user add local "$MINIO_MLFLOW_USER" "$MINIO_MLFLOW_PASSWORD"
# Attaching a policy that is already attached is an error: check first (reruns stay green).
# Only the PolicyName line counts (`mc admin user info` prints AccessKey, Status, PolicyName,
# MemberOf; the policies comma-separated): a user named like its policy must not match itself.
attach() {
  if ! mc admin user info local "$2" | grep -Eq "^PolicyName: (.*,)?$1(,|\$)"; then
    mc admin policy attach local "$1" --user "$2"
  fi
}
attach co2cast-pipeline "$MINIO_PIPELINE_USER"
attach co2cast-mlflow "$MINIO_MLFLOW_USER"
echo "co2cast: MinIO buckets, users and policies ready"
