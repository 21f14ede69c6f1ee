"""co2cast: a scheduled forecasting pipeline for yearly CO2 emissions.

The package is importable without Airflow; the DAGs in ``dags/`` are thin wiring around it.
"""

__version__ = "0.1.0"
