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


def ensure_user(client, user: str, password: str) -> str:
    """Create the pipeline's user, or set its password from .env when it exists; say which."""
    try:
        client.create_user(username=user, password=password)
        return f"co2cast: MLflow user {user} created"
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    client.update_user_password(username=user, password=password)
    return f"co2cast: MLflow user {user} exists; password updated from .env"


def main() -> int:
    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    user, password = os.environ["MLFLOW_PIPELINE_USER"], os.environ["MLFLOW_PIPELINE_PASSWORD"]
    try:
        print(ensure_user(client, user, password))
    except MlflowException as error:
        if error.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            # MLflow sets the admin's password when it creates the admin, on its first start only.
            admin = os.environ["MLFLOW_TRACKING_USERNAME"]
            print(
                f"co2cast: MLflow refused the admin login {admin!r} (MLFLOW_ADMIN_USER/MLFLOW_ADMIN_PASSWORD in .env): "
                "MLflow keeps the admin password it was first started with, so a password changed in .env since "
                "is not the admin's; put the old one back in .env, or change the admin's password in MLflow "
                "(README: 'When the stack does not start')",
                file=sys.stderr,
            )
        else:
            print(f"co2cast: cannot create MLflow user {user}: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
