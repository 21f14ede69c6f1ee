"""Airflow local settings for co2cast: pre-import the pipeline where tasks are forked.

On ``PYTHONPATH`` (``make up``, the test/benchmark scheduler) or in ``$AIRFLOW_HOME/config``
(the docker image). Airflow imports this module in every one of its processes; only the
scheduler (LocalExecutor workers fork from it) and a Celery worker preload, so CLI commands and
the API server stay as quick to start as before. See :mod:`pipeline.preload`. The same processes
supervise the tasks; :mod:`pipeline.task_exit` lets them notice a finished task at once.
"""

import sys

if {"scheduler", "worker"} & set(sys.argv[1:3]):
    from pipeline.preload import preload
    from pipeline.task_exit import notice_task_exit_promptly

    notice_task_exit_promptly()
    preload()
