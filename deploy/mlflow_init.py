"""MLflow's init job: the pipeline's own MLflow user (not the admin), created once.

Run with the admin's credentials in ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
and the pipeline's in ``MLFLOW_PIPELINE_USER``/``MLFLOW_PIPELINE_PASSWORD``. The pipeline user
creates the ``co2cast`` experiment and its registered models, and so manages them; other users
get the server's default permission (READ).
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client


def main() -> int:
    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    user, password = os.environ["MLFLOW_PIPELINE_USER"], os.environ["MLFLOW_PIPELINE_PASSWORD"]
    try:
        client.create_user(username=user, password=password)
        print(f"co2cast: MLflow user {user} created")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            print(f"co2cast: cannot create MLflow user {user}: {error.message}", file=sys.stderr)
            return 1
        client.update_user_password(username=user, password=password)
        print(f"co2cast: MLflow user {user} exists; password updated from .env")
    return 0


if __name__ == "__main__":
    sys.exit(main())
