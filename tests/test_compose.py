"""docker-compose.yaml's invariants, read from the file (CI also runs `docker-compose config -q`).

Images pinned, every secret required and checked against the .env.example placeholders, health
checks on long-running services, `depends_on` with conditions, published ports on 127.0.0.1
unless a variable asks otherwise, the MinIO root credentials only where they are needed, MLflow
behind its basic-auth app, and the same variable names as the native stack test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import OWID_CO2_URL
from tests.stack.stack import COMPOSE_ENV

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ONE_SHOT = {"check-secrets", "minio-init", "mlflow-init", "airflow-init"}
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?])?([^}]*)\}")
SECRET = re.compile(r"PASSWORD|SECRET|FERNET_KEY")
FERNET_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()  # a valid key: 44 characters


def example_env() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items()} if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def all_references(node: Any) -> list[tuple[str, str, str]]:
    """Every ``${NAME…}`` in the file: (name, operator, argument)."""
    if isinstance(node, dict):
        return [ref for value in node.values() for ref in all_references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in all_references(value)]
    return VARIABLE.findall(node) if isinstance(node, str) else []


def test_images_are_pinned() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in SERVICES.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
        if repository == "co2cast":
            assert tag == version, f"{name}: the co2cast image is tagged {tag}, the package is {version}"


def requirement_lines(path: Path) -> list[str]:
    """The requirements of a file and of the files it includes with ``-r``, comments dropped."""
    out = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out += requirement_lines(path.parent / line[3:].strip())
        elif line:
            out.append(line)
    return out


def test_the_image_installs_pinned_versions_only() -> None:
    """A rebuild of the co2cast image installs the same set: what the Dockerfile installs names its version."""
    installs = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip install" in line]
    assert installs, "the Dockerfile installs nothing with pip"
    for line in installs:
        words = line.split("pip install", 1)[1].split()
        named = [w for w in words if not w.startswith("-") and not w.startswith("/opt/co2cast")]
        assert not named, f"the Dockerfile installs {named} outside a requirements file"
    image = requirement_lines(ROOT / "requirements-image.txt")
    assert "apache-airflow-providers-fab==3.10.2" in image
    unpinned = [line for line in image if not re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,_-]+\])?==[0-9][^ ;]*( *;.*)?", line)]
    assert not unpinned, f"not pinned: {unpinned}"


def test_minio_images_from_quay() -> None:
    """Docker Hub's minio/minio and minio/mc were deleted in September 2026: a pull there fails."""
    for name in ("minio", "minio-init"):
        assert SERVICES[name]["image"].startswith(("quay.io/minio/minio:", "quay.io/minio/mc:")), name


def test_every_secret_is_required() -> None:
    for name, operator, _ in all_references(COMPOSE):
        if SECRET.search(name):
            assert operator == ":?", f"${{{name}}} must be required (${{{name}:?…}}), not defaulted"
    secrets = {name for name, _, _ in all_references(COMPOSE) if SECRET.search(name)}
    assert secrets == {name for name in example_env() if SECRET.search(name)}, "docker-compose.yaml and .env.example name different secrets"


def test_placeholder_secrets_are_refused(tmp_path: Path) -> None:
    """check-secrets, the job every service waits for, rejects .env.example's values."""
    check = SERVICES["check-secrets"]
    assert set(environment(check)) == {name for name in example_env() if SECRET.search(name)}
    script = ROOT / "deploy" / "check-secrets.sh"
    base = {"PATH": os.environ["PATH"]}
    example = str(ROOT / ".env.example")
    placeholders = subprocess.run(["sh", str(script), example], env={**base, **example_env()}, capture_output=True, text=True)
    assert placeholders.returncode != 0
    assert "POSTGRES_PASSWORD is still the .env.example placeholder" in placeholders.stderr
    real = {name: f"{name.lower()}-0123456789abcdef" for name in example_env() if SECRET.search(name)}
    real["AIRFLOW_FERNET_KEY"] = FERNET_KEY
    real["AIRFLOW_JWT_SECRET"] = "j" * 64
    good = subprocess.run(["sh", str(script), str(ROOT / ".env.example")], env={**base, **real}, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    short = subprocess.run(
        ["sh", str(script), str(ROOT / ".env.example")], env={**base, **real, "REDIS_PASSWORD": "short"}, capture_output=True, text=True
    )
    assert short.returncode != 0 and "REDIS_PASSWORD is shorter" in short.stderr
    # Airflow signs its API tokens with HS512: PyJWT warns below a 64-byte key.
    jwt = {**base, **real, "AIRFLOW_JWT_SECRET": "j" * 63}
    refused = subprocess.run(["sh", str(script), example], env=jwt, capture_output=True, text=True)
    assert refused.returncode != 0 and "AIRFLOW_JWT_SECRET is shorter than 64 characters" in refused.stderr
    # secrets.token_urlsafe(32), the generator .env.example suggests for the others, is no Fernet
    # key (43 characters, unpadded): Airflow could then encrypt no connection or variable.
    for bad in ("ZDqWV0lW8o5Ssw3oFvi7EiKH7pSYd8zkpOHKD7bI1lM", "airflow_fernet_key-0123456789abcdef", FERNET_KEY[:-2] + "+="):
        env = {**base, **real, "AIRFLOW_FERNET_KEY": bad}
        refused = subprocess.run(["sh", str(script), example], env=env, capture_output=True, text=True)
        assert refused.returncode != 0 and "AIRFLOW_FERNET_KEY is not a Fernet key" in refused.stderr, bad
    rotating = {**base, **real, "AIRFLOW_FERNET_KEY": f"{FERNET_KEY[::-1][1:]}=,{FERNET_KEY}"}  # new,old while rotating
    assert subprocess.run(["sh", str(script), example], env=rotating, capture_output=True, text=True).returncode == 0
    for name, service in SERVICES.items():
        if name != "check-secrets" and "depends_on" not in service:
            pytest.fail(f"{name} starts without waiting for anything (check-secrets first)")


def url_secrets(node: Any = COMPOSE) -> set[str]:
    """The secrets docker-compose.yaml pastes into a URL (a value with ``://`` and ``${SECRET…}``)."""
    if isinstance(node, dict):
        return {name for value in node.values() for name in url_secrets(value)}
    if isinstance(node, list):
        return {name for value in node for name in url_secrets(value)}
    if isinstance(node, str) and "://" in node:
        return {name for name, _, _ in VARIABLE.findall(node) if SECRET.search(name)}
    return set()


@pytest.mark.parametrize(
    "bad", ["Ab3/x+Yz9Q==0123456789", "pass@word-0123456789", "pass#word-0123456789", "a?b%c:d-0123456789", "two\nlines-0123456789"]
)
def test_secrets_in_urls_are_url_safe(bad: str) -> None:
    """A password pasted unencoded into a SQLAlchemy or Celery URL: kombu's parse_url raises on
    'redis://:Ab3/x+Yz9Q==@redis:6379/0', and @ # ? % end or mangle the password in any URL."""
    assert url_secrets() == {"POSTGRES_PASSWORD", "REDIS_PASSWORD"}
    script = (ROOT / "deploy" / "check-secrets.sh").read_text()
    listed = set(re.search(r'URL_SECRETS=" ([A-Z_ ]+) "', script).group(1).split())  # type: ignore[union-attr]
    assert url_secrets() <= listed, "a secret pasted into a URL is not checked for URL-safe characters"
    real = {name: f"{name.lower()}-0123456789abcdef" for name in example_env() if SECRET.search(name)}
    real["AIRFLOW_FERNET_KEY"] = FERNET_KEY
    real["AIRFLOW_JWT_SECRET"] = "j/+=" * 16  # not in a URL: any character
    base = {"PATH": os.environ["PATH"], **real}
    example = str(ROOT / ".env.example")
    assert subprocess.run(["sh", str(ROOT / "deploy" / "check-secrets.sh"), example], env=base, capture_output=True).returncode == 0
    for name in sorted(url_secrets()):
        result = subprocess.run(
            ["sh", str(ROOT / "deploy" / "check-secrets.sh"), example], env={**base, name: bad}, capture_output=True, text=True
        )
        assert result.returncode != 0
        assert result.stderr.splitlines() == [
            f"co2cast: {name} has a character other than A-Z a-z 0-9 - _ . ~ (it goes into a connection URL unencoded): see .env.example"
        ]
    assert "letters, digits, - _ . and ~ only" in (ROOT / ".env.example").read_text()


def test_url_secrets_may_hold_dot_and_tilde() -> None:
    """RFC 3986 allows . and ~ unencoded in a URL's userinfo, and the libraries reading compose's URLs take them
    back as they are; check-secrets refused them."""
    from urllib.parse import urlsplit

    from sqlalchemy.engine import make_url

    password = "Ab.c~d-e_0123456789"
    # Celery's broker URL is read with kombu's parse_url, which splits it with urllib (kombu is a stack extra, not in this suite).
    assert urlsplit(f"redis://:{password}@redis:6379/0").password == password
    assert make_url(f"postgresql+psycopg2://postgres:{password}@postgres:5432/airflow").password == password
    real = {name: f"{name.lower()}-0123456789abcdef" for name in example_env() if SECRET.search(name)}
    real["AIRFLOW_FERNET_KEY"] = FERNET_KEY
    real["AIRFLOW_JWT_SECRET"] = "j" * 64
    env = {"PATH": os.environ["PATH"], **real, "POSTGRES_PASSWORD": password, "REDIS_PASSWORD": password}
    result = subprocess.run(
        ["sh", str(ROOT / "deploy" / "check-secrets.sh"), str(ROOT / ".env.example")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `*` and `?` stay within a path segment, `**` spans them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def docker_ignores(path: str) -> bool:
    """Whether `build: .` leaves ``path`` (relative to the context) out: the last matching pattern decides,
    and a pattern that matches a directory leaves out everything under it."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for line in (line for line in lines if line and not line.startswith("#")):
        negate = line.startswith("!")
        regex = dockerignore_regex(line.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in (prefixes[-1:] if negate else prefixes)):
            ignored = not negate
    return ignored


def test_build_context_has_what_the_dockerfile_copies_and_no_secrets() -> None:
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            args = [arg for arg in line.split()[1:] if not arg.startswith("--")]
            sources += args[:-1]
    assert {"requirements.txt", "pipeline", "dags", "deploy/airflow/airflow_local_settings.py"} <= set(sources)
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        assert files, f"{source} copied by the Dockerfile does not exist"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not docker_ignores(relative), f"{relative} is copied by the Dockerfile but ignored"
    private = (".env", ".env.local", ".venv", ".venv/bin/python", ".venv-bench/lib/x.py", ".co2cast/store/curated/latest.json", ".git/HEAD")
    for path in private:
        assert docker_ignores(path), f"{path} is sent to the Docker daemon as build context"
    assert docker_ignores("pipeline/__pycache__/core.cpython-311.pyc")


def test_long_running_services_have_health_checks() -> None:
    for name, service in SERVICES.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in service, f"{name} has no health check"
            assert service.get("restart") == "unless-stopped", f"{name} is not restarted"


def test_postgres_healthy_only_when_the_real_server_is_up() -> None:
    """The image's init server listens on the Unix socket only: a socket check passes against it."""
    test = SERVICES["postgres"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    options = dict(zip(test[2::2], test[3::2], strict=True))
    assert options == {"-h": "127.0.0.1", "-U": "postgres", "-d": "airflow"}
    assert "CREATE DATABASE airflow" in (ROOT / "deploy" / "postgres-init.sql").read_text()


def test_depends_on_with_conditions() -> None:
    conditions = {"service_healthy", "service_completed_successfully", "service_started"}
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            assert isinstance(spec, dict) and spec.get("condition") in conditions, f"{name} -> {dependency} has no condition"
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dependency}: {spec['condition']}, expected {expected}"


def test_task_runners_wait_for_the_api_server() -> None:
    """Airflow 3 tasks reach the database through the api-server's Execution API: the scheduler
    (whose LocalExecutor runs them) and the Celery worker start once it answers."""
    for name in ("airflow-scheduler", "airflow-worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends.get("airflow-apiserver") == {"condition": "service_healthy"}, name
        assert {"postgres", "minio-init", "mlflow-init", "airflow-init"} <= set(depends), name
    assert "healthcheck" in SERVICES["airflow-apiserver"]


FAKE_AIRFLOW = """#!{python}
# airflow's FAB user commands as apache-airflow-providers-fab's user_command.py runs them, on a
# JSON user table: `users create` prints "already exist" and exits 0 for a known username, and
# fails ("Failed to create user") on an e-mail another user has (FAB's unique column).
import json, sys
from pathlib import Path
table = Path({table!r})
users = json.loads(table.read_text()) if table.exists() else []
args = sys.argv[1:]
opt = lambda name: args[args.index(name) + 1] if name in args else None
if args[:2] == ["db", "migrate"]:
    sys.exit(0)
if args[:2] == ["users", "list"]:
    print("id | username | email | first_name | last_name | roles")
    for i, u in enumerate(users, 1):
        print(f"{{i}} | {{u['username']}} | {{u['email']}} | co2cast | admin | [{{u['role']}}]")
    sys.exit(0)
if args[:2] == ["users", "create"]:
    if any(u["username"] == opt("--username") for u in users):
        print(f"{{opt('--username')}} already exist in the db")
        sys.exit(0)
    if any(u["email"] == opt("--email") for u in users):
        sys.exit("Failed to create user")
    users.append({{"username": opt("--username"), "email": opt("--email"), "role": opt("--role"), "password": opt("--password")}})
elif args[:2] == ["users", "reset-password"]:
    user = next((u for u in users if u["username"] == opt("--username")), None)
    if user is None:
        sys.exit(f'User "{{opt("--username")}}" does not exist')
    user["password"] = opt("--password")
else:
    sys.exit(f"unexpected: {{args}}")
table.write_text(json.dumps(users))
"""


def test_airflow_init_creates_a_renamed_admin_and_sets_the_password(tmp_path: Path) -> None:
    """A renamed AIRFLOW_ADMIN_USER (even one that is a word of `users list`, like the role Admin)
    gets its own user, and the password in .env is the admin's after every start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    table = tmp_path / "users.json"
    (bin_dir / "airflow").write_text(FAKE_AIRFLOW.format(python=sys.executable, table=str(table)))
    (bin_dir / "airflow").chmod(0o755)
    init = SERVICES["airflow-init"]
    assert init["entrypoint"] == ["/bin/bash", "-c"]
    script = init["command"][0].replace("$$", "$")

    def start(user: str, password: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "AIRFLOW_ADMIN_USER": user, "AIRFLOW_ADMIN_PASSWORD": password}
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)

    def users() -> dict[str, str]:
        return {u["username"]: u["password"] for u in json.loads(table.read_text())}

    assert start("admin", "first-password-0123").returncode == 0
    assert users() == {"admin": "first-password-0123"}
    again = start("admin", "second-password-0123")  # AIRFLOW_ADMIN_PASSWORD changed in .env
    assert again.returncode == 0 and "already exist" in again.stdout, again.stderr
    assert users() == {"admin": "second-password-0123"}
    for renamed in ("ops", "Admin"):  # "Admin" is also a word of `users list` (the role)
        result = start(renamed, "third-password-0123")
        assert result.returncode == 0, result.stderr
        assert users()[renamed] == "third-password-0123"


def test_ports_on_localhost_unless_asked() -> None:
    published = 0
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            published += 1
            assert isinstance(port, str) and port.count(":") >= 2, f"{name}: {port} binds every interface"
            assert port.startswith(("127.0.0.1:", "${CO2CAST_BIND_ADDRESS:-127.0.0.1}:")), f"{name}: {port}"
    assert published >= 3
    assert example_env()["CO2CAST_BIND_ADDRESS"] == "127.0.0.1"


def test_minio_root_credentials_only_in_minio_and_its_init() -> None:
    for name, service in SERVICES.items():
        refs = {ref for ref, _, _ in all_references(service)}
        if name not in {"minio", "minio-init", "check-secrets"}:
            assert not refs & {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}, f"{name} sees MinIO's root credentials"
    init = (ROOT / "deploy" / "minio-init.sh").read_text()
    assert "mc admin user add" in init and "mc admin policy attach" in init
    for policy in ("pipeline", "mlflow"):
        text = (ROOT / "deploy" / f"minio-policy-{policy}.json").read_text()
        assert '"s3:*"' not in text and "arn:aws:s3:::*" not in text, f"{policy} policy is not limited to its bucket"


FAKE_MC = """#!/bin/sh
# mc as minio-init calls it: each call logged; `admin user info` prints mc's own format
# (minio/mc cmd/admin-user-add.go), the user's policies from FAKE_POLICY.
echo "$*" >> "$FAKE_MC_CALLS"
if [ "$1 $2 $3" = "admin user info" ]; then
  printf 'AccessKey: %s\\nStatus: enabled\\nPolicyName: %s\\nMemberOf: \\n' "$5" "$FAKE_POLICY"
fi
exit 0
"""


@pytest.mark.parametrize(
    ("policies", "attached"),
    [
        ("", {"co2cast-pipeline", "co2cast-mlflow"}),  # a new user: AccessKey names it like its policy
        ("co2cast-pipeline,co2cast-mlflow", set()),  # a rerun: both attached already
        ("readwrite,co2cast-mlflow", {"co2cast-pipeline"}),
        ("co2cast-pipeline-old", {"co2cast-pipeline", "co2cast-mlflow"}),  # another policy's name
    ],
)
def test_minio_init_attaches_each_policy_once(tmp_path: Path, policies: str, attached: set[str]) -> None:
    """minio-init attaches a policy exactly when the user's PolicyName line lacks it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mc").write_text(FAKE_MC)
    (bin_dir / "mc").chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_MC_CALLS": str(calls),
        "FAKE_POLICY": policies,
        **{name: value for name, value in example_env().items() if name.startswith("MINIO_")},
    }
    assert env["MINIO_PIPELINE_USER"] == "co2cast-pipeline" and env["MINIO_MLFLOW_USER"] == "co2cast-mlflow"
    result = subprocess.run(["sh", str(ROOT / "deploy" / "minio-init.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert "admin user info local co2cast-pipeline" in lines and "admin user info local co2cast-mlflow" in lines
    made = {line.split()[4] for line in lines if line.startswith("admin policy attach ")}
    assert made == attached, lines
    for policy in attached:
        assert f"admin policy attach local {policy} --user {policy}" in lines


def test_mlflow_behind_basic_auth_and_pipeline_not_admin() -> None:
    mlflow = SERVICES["mlflow"]
    script = (ROOT / "deploy" / "mlflow-server.sh").read_text()
    assert "--app-name basic-auth" in script
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in environment(mlflow)
    pipeline_env = environment(SERVICES["airflow-scheduler"])
    assert "MLFLOW_PIPELINE_PASSWORD" in pipeline_env["MLFLOW_TRACKING_PASSWORD"]
    assert "MINIO_PIPELINE_PASSWORD" in pipeline_env["AWS_SECRET_ACCESS_KEY"]
    assert "FabAuthManager" in pipeline_env["AIRFLOW__CORE__AUTH_MANAGER"]


def airflow_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in SERVICES.items() if name.startswith("airflow-")}


def test_one_fernet_key_for_every_airflow_container() -> None:
    """Each container would otherwise write its own random key: connections made in one are unreadable in the others."""
    for name, service in airflow_services().items():
        assert environment(service).get("AIRFLOW__CORE__FERNET_KEY") == "${AIRFLOW_FERNET_KEY:?set AIRFLOW_FERNET_KEY in .env}", name
    assert "AIRFLOW_FERNET_KEY" in environment(SERVICES["check-secrets"])


def test_task_logs_on_a_volume() -> None:
    for name, service in airflow_services().items():
        assert "airflow-logs:/opt/airflow/logs" in service.get("volumes", []), name
    assert "airflow-logs" in COMPOSE["volumes"]


def test_dags_start_unpaused() -> None:
    """Nothing unpauses the DAGs under compose, and a paused co2_forecast drops co2_ingest's Asset events."""
    assert len(airflow_services()) == 6
    for name, service in airflow_services().items():
        assert environment(service).get("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION") == "false", name


class FakeAuthClient:
    """MLflow's basic-auth client, answering each call as a server would."""

    def __init__(self, create: str | None = None, update: str | None = None) -> None:
        self.errors = {"create_user": create, "update_user_password": update}
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import ErrorCode

        self.calls.append(name)
        if code := self.errors[name]:
            raise MlflowException(f"API request failed ({code})", error_code=ErrorCode.Value(code))

    def create_user(self, username: str, password: str) -> None:
        self._call("create_user")

    def update_user_password(self, username: str, password: str) -> None:
        self._call("update_user_password")


@pytest.mark.parametrize(
    ("client", "code", "said"),
    [
        (FakeAuthClient(), 0, "co2cast: MLflow user co2cast created"),
        (FakeAuthClient(create="RESOURCE_ALREADY_EXISTS"), 0, "co2cast: MLflow user co2cast exists; password updated from .env"),
        # MLFLOW_ADMIN_PASSWORD changed in .env after the first start: MLflow kept the first one.
        (FakeAuthClient(create="UNAUTHENTICATED"), 1, "co2cast: MLflow refused the admin login 'admin' (MLFLOW_ADMIN_USER/"),
        (FakeAuthClient(create="RESOURCE_ALREADY_EXISTS", update="PERMISSION_DENIED"), 1, "co2cast: MLflow refused the admin login"),
        (FakeAuthClient(create="INTERNAL_ERROR"), 1, "co2cast: cannot create MLflow user co2cast: API request failed (INTERNAL_ERROR)"),
    ],
)
def test_mlflow_init_says_what_to_do(
    client: FakeAuthClient, code: int, said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlflow")
    import importlib.util

    spec = importlib.util.spec_from_file_location("mlflow_init", ROOT / "deploy" / "mlflow_init.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "get_app_client", lambda app, tracking_uri: client)
    for name, value in environment(SERVICES["mlflow-init"]).items():
        monkeypatch.setenv(name, re.sub(r"\$\{[A-Z_]+:[-?]([^}]*)\}", r"\1", value))
    assert module.main() == code
    out, err = capsys.readouterr()
    lines = (out if code == 0 else err).splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), lines
    if "refused the admin login" in said:
        assert "When the stack does not start" in lines[0] and "When the stack does not start" in (ROOT / "README.md").read_text()


def test_mlflow_allowed_hosts_configurable() -> None:
    """--allowed-hosts replaces MLflow's own list: published elsewhere, other Host headers must be addable."""
    script = (ROOT / "deploy" / "mlflow-server.sh").read_text()
    default = re.search(r'--allowed-hosts "\$\{MLFLOW_ALLOWED_HOSTS:-([^}]+)\}"', script)
    assert default, "deploy/mlflow-server.sh does not read MLFLOW_ALLOWED_HOSTS"
    assert environment(SERVICES["mlflow"])["MLFLOW_ALLOWED_HOSTS"] == "${MLFLOW_ALLOWED_HOSTS:-}"
    example = (ROOT / ".env.example").read_text()
    assert f"# MLFLOW_ALLOWED_HOSTS={default.group(1)}," in example, ".env.example's example drops the default names"


def test_same_variables_as_the_native_stack() -> None:
    compose_env = set(COMPOSE["x-co2cast-env"])
    assert compose_env == set(COMPOSE_ENV)
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert set(environment(SERVICES[name])) == compose_env, name
    assert set(environment(SERVICES["airflow-worker"])) == compose_env | {"DUMB_INIT_SETSID"}


#: Settings compose sets to its own services' values, not from .env.
COMPOSE_FIXED = {"home", "store_uri", "s3_endpoint_url", "mlflow_tracking_uri"}
#: Settings whose compose default differs from the code's on purpose: OWID's URL, the mounted
#: data directory, and the image's copy of expectations/ (the code's default names the same file).
COMPOSE_OWN_DEFAULT = {
    "source": OWID_CO2_URL,  # production: OWID's published file, not the embedded 2014 release
    "data_dirs": "/opt/airflow/data",
    "allowed_breaks": "/opt/co2cast/expectations/allowed_breaks.json",
}
#: Settings a compose user cannot set, each with the reason (none today).
COMPOSE_NOT_PASSED: dict[str, str] = {}


def test_every_pipeline_setting_reaches_compose() -> None:
    """Each setting of pipeline/config.py is in ``x-co2cast-env``, from .env with the code's default
    (a setting missing there cannot be set under compose: CO2CAST_ALLOWED_URLS was, so a source
    other than OWID's URL was refused with advice to set a variable .env could not deliver)."""
    from pydantic import TypeAdapter

    from pipeline.config import Settings
    from tests.stack.stack import PIPELINE_DEFAULTS

    env = COMPOSE["x-co2cast-env"]
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias if isinstance(field.validation_alias, str) else f"CO2CAST_{name.upper()}"
        if name in COMPOSE_NOT_PASSED:
            assert variable not in env, f"{variable} is passed: drop it from COMPOSE_NOT_PASSED"
            continue
        assert variable in env, f"{variable} (Settings.{name}) is not in docker-compose.yaml's x-co2cast-env"
        if name in COMPOSE_FIXED:
            assert "${" not in str(env[variable]), variable
            continue
        ref = re.fullmatch(r"\$\{([A-Z0-9_]+):-([^}]*)\}", str(env[variable]))
        assert ref and ref.group(1) == variable, f"{variable}: {env[variable]} does not come from .env with a default"
        default = ref.group(2)
        if name in COMPOSE_OWN_DEFAULT:
            assert default == COMPOSE_OWN_DEFAULT[name], variable
        else:
            parsed = TypeAdapter(field.annotation).validate_python(default)
            assert parsed == field.default, f"{variable}: compose's default {default!r}, the code's {field.default!r}"
        if name in PIPELINE_DEFAULTS and name != "allowed_breaks":
            assert PIPELINE_DEFAULTS[name] == default, f"{variable}: the native stack sets {PIPELINE_DEFAULTS[name]!r}"
    from pipeline.plausibility import ALLOWED_BREAKS

    image_copy = "/opt/co2cast/" + ALLOWED_BREAKS.relative_to(ROOT).as_posix()
    assert COMPOSE_OWN_DEFAULT["allowed_breaks"] == image_copy
    assert "COPY --chown=airflow:root expectations /opt/co2cast/expectations" in (ROOT / "Dockerfile").read_text()


def test_data_directory_mounted_for_file_sources() -> None:
    """A file CO2CAST_SOURCE must be in CO2CAST_DATA_DIRS: ./data is mounted there, read-only, in
    every container that runs tasks; it exists in a checkout (so no daemon creates it as root) and
    its release files stay out of git and the build context."""
    default = COMPOSE_OWN_DEFAULT["data_dirs"]
    for name in ("airflow-scheduler", "airflow-worker", "airflow-apiserver", "airflow-dag-processor", "airflow-triggerer"):
        assert f"./data:{default}:ro" in SERVICES[name]["volumes"], name
    assert (ROOT / "data" / "README.md").is_file()
    assert docker_ignores("data/owid-co2-data.csv") and docker_ignores("data")
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/owid-co2-data.csv"], cwd=ROOT).returncode
    kept = subprocess.run(["git", "check-ignore", "-q", "data/README.md"], cwd=ROOT).returncode
    assert (ignored, kept) == (0, 1)
    readme = (ROOT / "README.md").read_text()
    assert "CO2CAST_ALLOWED_URLS" in (ROOT / ".env.example").read_text() and "/opt/airflow/data" in readme


def test_celery_worker_shuts_down_warm() -> None:
    """SIGTERM to the worker alone (not its tasks), and time to finish them before SIGKILL."""
    worker = SERVICES["airflow-worker"]
    assert environment(worker)["DUMB_INIT_SETSID"] == "0"
    grace = re.fullmatch(r"(\d+)m", worker["stop_grace_period"])
    assert grace and int(grace.group(1)) >= 5, worker["stop_grace_period"]


def test_celery_profile_selectable_in_env() -> None:
    example = (ROOT / ".env.example").read_text().splitlines()
    assert "# COMPOSE_PROFILES=celery" in example and "# AIRFLOW__CORE__EXECUTOR=CeleryExecutor" in example
    assert {SERVICES[name].get("profiles", [None])[0] for name in ("redis", "airflow-worker")} == {"celery"}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) is not installed; CI installs it")
def test_docker_compose_config_parses(tmp_path: Path) -> None:
    for path in ("docker-compose.yaml", ".env.example"):
        shutil.copy(ROOT / path, tmp_path / path)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    env = {name: ("x" * 20 if SECRET.search(name) else value) for name, value in example_env().items()}
    env["AIRFLOW_FERNET_KEY"] = FERNET_KEY
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for profile in ([], ["--profile", "celery"]):
        result = subprocess.run(["docker-compose", *profile, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    (tmp_path / ".env").write_text("")
    missing = subprocess.run(["docker-compose", "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode != 0 and "set " in missing.stderr


def test_build_backend_reads_the_license_expression() -> None:
    """``license = "Apache-2.0"`` (a PEP 639 SPDX string) is an error to setuptools before 77."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    bounds = [re.fullmatch(r"setuptools>=(\d+)(\.[\d.]+)?", req) for req in pyproject["build-system"]["requires"]]
    assert any(b and int(b.group(1)) >= 77 for b in bounds), pyproject["build-system"]["requires"]
