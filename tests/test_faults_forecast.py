"""Fault injection for the forecast half of issue #9.

Each case starts from a store with a curated vintage and (mostly) one forecast already published
as of 2013, injects one fault into a run as of 2014, and checks: the error is one line; nothing
is published, registered or moved that should not be (``latest.json`` and ``@champion`` as
before, no manifest a reader can follow); and a rerun heals (one version per family for the run
key, lineage on a FINISHED run, the forecast published and verified).

Kills are made deterministic with the test-only hook of :mod:`pipeline.testhooks`: the run
sleeps at a named point, the test waits for its "paused at" line and sends SIGKILL. The
subprocess runs the real forecast code (``tasks.forecast_all``) with a cheap baseline line-up
so a case takes seconds; one case runs the ``co2cast forecast`` command itself.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline import ingest, plausibility, tasks, tracking
from pipeline.candidates import NewestFamilyChampion
from pipeline.config import Settings
from pipeline.core import ForecastSpec
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.payloads import RunTrigger
from pipeline.publish import PublishFailed, read_latest
from pipeline.store import LocalStore, StoreDataError, StoreUnavailable, open_store

SERIES = "Canada:co2_per_capita"
SID = "canada.co2_per_capita"
ROOT = Path(__file__).resolve().parents[1]
CO2CAST = Path(sys.executable).parent / "co2cast"

#: The subprocess: the real forecast steps with a cheap line-up, for the series and as-of year given.
DRIVER = """
import sys
from pipeline import tasks
from pipeline.candidates import NewestFamilyChampion
from pipeline.config import get_settings
from pipeline.core import ForecastSpec
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.payloads import RunTrigger

settings = get_settings()
lineup = tasks.Lineup(
    candidates={"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()},
    select=NewestFamilyChampion(champion="drift", always_register=("drift", "naive")),
    spec=ForecastSpec(horizon_end=settings.horizon_end),
)
trigger = RunTrigger(run_type="cli", series=sys.argv[1], as_of_year=int(sys.argv[2]))
tasks.forecast_all(settings, trigger, lineup, progress=lambda line: print(line, flush=True))
"""


def _lineup(settings: Settings) -> tasks.Lineup:
    return tasks.Lineup(
        candidates={"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()},
        select=NewestFamilyChampion(champion="drift", always_register=("drift", "naive")),
        spec=ForecastSpec(horizon_end=settings.horizon_end),
    )


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "MLFLOW_"))}
    env.update(
        CO2CAST_HOME=str(settings.home),
        CO2CAST_STORE_URI=settings.resolved_store_uri,
        MLFLOW_TRACKING_URI=settings.resolved_tracking_uri,
        **extra,
    )
    return env


def _driver(settings: Settings, as_of: int = 2014, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, SERIES, str(as_of)],
        env=_env(settings, **extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_pause(process: subprocess.Popen[str], point: str) -> None:
    assert process.stderr is not None
    for line in process.stderr:  # blocks until the line comes (or the process ends)
        if f"co2cast-test: paused at {point}" in line:
            return
    pytest.fail(f"the run ended without pausing at {point}: {process.wait()}")


@pytest.fixture
def settings(tmp_path: Path, small_owid: Path) -> Settings:
    """A curated vintage and a forecast published as of 2013 (the previous champion)."""
    settings = Settings(
        home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
    )
    ingest.ingest(settings, tasks.open_store(settings), str(small_owid))
    tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2013), _lineup(settings))
    return settings


def _state(settings: Settings) -> dict[str, Any]:
    """What a reader or a model user can see: latest.json, @champion, the registry's versions."""
    store = tasks.open_store(settings)
    client = tracking.configure(settings)
    champion = tracking.alias_version(client, SID, "champion")
    aliases = {alias: tracking.alias_version(client, SID, alias) for alias in ("champion", "drift", "naive")}
    return {
        "latest": store.read_bytes(f"forecasts/{SID}/latest.json"),
        "champion": str(champion.version) if champion else None,
        "aliases": {alias: str(version.version) if version else None for alias, version in aliases.items()},
        "versions": sorted(str(v.version) for v in client.search_model_versions(f"name = '{tracking.registered_name(SID)}'")),
    }


def _run_key(settings: Settings, as_of: int = 2014) -> str:
    plan = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=as_of), _lineup(settings))
    return plan.series[0].run_key


def _assert_healed(settings: Settings, run_key: str) -> None:
    """One version per registered family for the key, lineage on a FINISHED complete run, published and verified."""
    client = tracking.configure(settings)
    versions = client.search_model_versions(f"name = '{tracking.registered_name(SID)}' and tags.`{tracking.RUN_KEY_TAG}` = '{run_key}'")
    families = [v.tags[tracking.FAMILY_TAG] for v in versions]
    assert sorted(families) == sorted(set(families)) == ["drift", "naive"], families
    champion = tracking.alias_version(client, SID, "champion")
    assert champion.tags[tracking.RUN_KEY_TAG] == run_key
    lineage = client.get_run(champion.tags["co2cast.mlflow_run_id"])
    assert lineage.info.status == "FINISHED" and lineage.data.tags.get(tracking.COMPLETE_TAG) == "true"
    manifest, table = read_latest(tasks.open_store(settings), SID)
    assert manifest.run_key == run_key and manifest.as_of_year == 2014 and table["year"].min() == 2015
    runs = client.search_runs(
        [client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id], filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = '{run_key}'"
    )
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run of the key may stay RUNNING"


# -- kill -9 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["after_log", "after_register", "after_gate", "after_files", "after_manifest"])
def test_kill_9_then_a_healed_rerun(settings: Settings, point: str) -> None:
    before = _state(settings)
    run_key = _run_key(settings)
    process = _driver(settings, CO2CAST_TEST_PAUSE_AT=point)
    _wait_for_pause(process, point)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)

    # Nothing visible moved: a reader still follows latest.json to the 2013 forecast.
    store = tasks.open_store(settings)
    assert store.read_bytes(f"forecasts/{SID}/latest.json") == before["latest"]
    assert read_latest(store, SID)[0].as_of_year == 2013
    client = tracking.configure(settings)
    if point in ("after_log", "after_register", "after_gate"):
        assert tracking.find_complete_run(client, run_key) is None
        assert store.list(f"forecasts/{SID}/asof=2014/") == []

    healed = _driver(settings)
    out, err = healed.communicate(timeout=600)
    assert healed.returncode == 0, err[-3000:]
    assert f"[1/1] {SID}: champion" in out
    _assert_healed(settings, run_key)
    if point in ("after_log", "after_register", "after_gate"):
        dead = client.search_runs(
            [client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id],
            filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = '{run_key}' and tags.`{tracking.ABANDONED_TAG}` = 'true'",
        )
        assert dead and all(r.info.status == "FAILED" for r in dead)
    # The previous champion is the rollback target of the new one, as after a clean run; so is each
    # family's previous version of its alias (the dead run's moves were undone, not deleted).
    for alias in ("champion", "drift", "naive"):
        moved = tracking.alias_version(client, SID, alias)
        assert json.loads(moved.tags[tracking.alias_tag(alias)])["previous"] == before["aliases"][alias], alias


#: The driver inside Airflow's own task timeout, as a task with ``execution_timeout`` runs
#: (``airflow.sdk.execution_time.task_runner``): SIGALRM raises ``AirflowTaskTimeout``.
TIMED_DRIVER = DRIVER.replace(
    "tasks.forecast_all(",
    "from airflow.sdk.execution_time.timeout import timeout\nwith timeout(3600):\n    tasks.forecast_all(",
)


@pytest.mark.parametrize("point", ["after_register", "after_files"])
def test_a_task_timeout_stops_the_run_and_releases_its_locks(settings: Settings, point: str) -> None:
    """Airflow's ``execution_timeout`` fires mid-run: nothing swallows it, the locks are released, a retry heals.

    The test sends the SIGALRM the timeout would send an hour later, while the run holds the run
    key's lock and the series' registry lock (``after_register``) or is writing the forecast
    (``after_files``). A per-candidate or per-series ``except`` that caught the timeout would let
    the run sleep on and finish instead.
    """
    before = _state(settings)
    run_key = _run_key(settings)
    process = subprocess.Popen(
        [sys.executable, "-c", TIMED_DRIVER, SERIES, "2014"],
        env=_env(settings, CO2CAST_TEST_PAUSE_AT=point),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_pause(process, point)
    process.send_signal(signal.SIGALRM)
    _, err = process.communicate(timeout=120)
    # Uncaught: the last line of the traceback, not a series reported failed and the run going on.
    assert process.returncode != 0 and err.strip().splitlines()[-1].startswith("airflow.sdk.exceptions.AirflowTaskTimeout"), err[-3000:]

    store = tasks.open_store(settings)
    assert store.list("locks/") == [], "a stopped task must not leave a lock for the next one to wait out"
    assert store.read_bytes(f"forecasts/{SID}/latest.json") == before["latest"]
    healed = _driver(settings)
    _, err = healed.communicate(timeout=600)
    assert healed.returncode == 0, err[-3000:]
    _assert_healed(settings, run_key)


def test_a_killed_champion_whose_alias_record_was_edited_goes_back_to_what_latest_json_serves(settings: Settings) -> None:
    """Two faults at once: a run killed after it took @champion, and that version's alias record edited by hand.

    Healing read "no previous champion" from the record and removed @champion, so the rerun's gate
    had nothing to compare with and the 2013 champion dropped out of the alias history.
    """
    before = _state(settings)
    process = _driver(settings, CO2CAST_TEST_PAUSE_AT="after_gate")
    _wait_for_pause(process, "after_gate")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    client = tracking.configure(settings)
    dead = tracking.alias_version(client, SID, "champion")
    assert str(dead.version) != before["champion"], "the killed run had taken @champion"
    client.set_model_version_tag(tracking.registered_name(SID), dead.version, tracking.alias_tag("champion"), "edited by hand")

    healed = _driver(settings)
    _, err = healed.communicate(timeout=600)
    assert healed.returncode == 0, err[-3000:]
    moved = tracking.alias_version(client, SID, "champion")
    assert json.loads(moved.tags[tracking.alias_tag("champion")])["previous"] == before["champion"]


def test_a_killed_run_rolled_back_then_run_again_leaves_champion_where_latest_json_is(settings: Settings) -> None:
    """A run killed after its gate took @champion, ``co2cast rollback``, then the same run key again.

    The rollback put the key's forecast (not out yet) in ``latest.json``'s ``rolled_back``; the
    rerun healed the dead run, trained anew and its gate moved @champion to a new version whose
    forecast ``point_latest`` then refused to serve: @champion and latest.json disagreed for good.
    """
    before = _state(settings)
    process = _driver(settings, CO2CAST_TEST_PAUSE_AT="after_gate")
    _wait_for_pause(process, "after_gate")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert _state(settings)["champion"] != before["champion"], "the killed run had taken @champion"
    tasks.rollback(settings, SID)
    rolled_back = _state(settings)
    assert rolled_back["champion"] == before["champion"]

    for _ in range(2):  # the rerun, and the nightly run after it: both converge on the rollback
        rerun = _driver(settings)
        _, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, err[-3000:]
        after = _state(settings)
        pointer = json.loads(after["latest"])
        assert after["champion"] == str(pointer["model_version"]) == before["champion"]
        assert after["latest"] == rolled_back["latest"]


# -- two runs of one key at once ----------------------------------------------------------------


def test_two_concurrent_runs_of_one_key_train_once(settings: Settings) -> None:
    run_key = _run_key(settings)
    first = _driver(settings, CO2CAST_TEST_PAUSE_AT="after_log", CO2CAST_TEST_PAUSE_SECONDS="6")
    _wait_for_pause(first, "after_log")  # the first holds the key's lock now
    second = _driver(settings)
    out2, err2 = second.communicate(timeout=600)
    first.wait(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, err2[-3000:]
    assert "waiting to reuse" in err2 and "reusing it" not in out2  # it waited, then found the result
    client = tracking.configure(settings)
    parents = [
        r
        for r in client.search_runs(
            [client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id], filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = '{run_key}'"
        )
        if "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 1, "one run key trains once"
    _assert_healed(settings, run_key)
    assert tasks.open_store(settings).list("locks/") == []


def test_a_lock_left_by_a_dead_owner_is_broken(settings: Settings) -> None:
    run_key = _run_key(settings)
    store = tasks.open_store(settings)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    owner = f"{socket.gethostname()}:{dead.stdout.strip()}"
    store.write_json(f"locks/{run_key}.json", {"owner": owner, "created": time.time(), "run_key": run_key})
    tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), _lineup(settings))
    _assert_healed(settings, run_key)


@pytest.mark.parametrize("scope", ["pointer", "registry"])
def test_a_lock_of_a_live_owner_on_this_machine_is_never_broken_however_old(scope: str, tmp_path: Path) -> None:
    """The registry lock is held around MLflow calls that may each be retried for minutes: an old lock whose owner
    still runs here is waited for, never broken (two runs would move the aliases at once); a pid now naming a later
    process is a dead owner's."""
    from pipeline import locks
    from pipeline.locks import SeriesBusy, series_lock

    store = LocalStore(tmp_path / "store")
    key = "locks/series/world.co2.json" if scope == "pointer" else "locks/series/world.co2.registry.json"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = f"{socket.gethostname()}:{live.pid}"
        old = time.time() - 10 * locks.DEFAULT_STALE_SECONDS
        record = {"owner": owner, "created": old, "started": locks._process_start(live.pid)}
        store.write_json(key, record)
        with pytest.raises(SeriesBusy, match=re.escape(owner)):
            with series_lock(store, "world.co2", scope=scope, wait=0.5):
                pass
        assert store.read_json(key) == record, "a live owner's lock stays"
        if record["started"] is not None:  # where a process's start is known (Linux): a reused pid is told apart
            store.write_json(key, {**record, "started": str(int(record["started"]) - 1)})
            with series_lock(store, "world.co2", scope=scope, wait=0.5):
                pass
            assert store.list("locks/") == []
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("unknown", ["lock", "proc"])
def test_a_lock_whose_owner_start_is_unknown_is_broken_after_the_stale_time(unknown: str, tmp_path: Path, monkeypatch) -> None:
    """A lock written before ``started`` was recorded (or where /proc cannot be read), its pid now another live
    process: never broken, so the series stayed locked for good. Without a start time the stale time applies."""
    from pipeline import locks
    from pipeline.locks import SeriesBusy, series_lock

    store = LocalStore(tmp_path / "store")
    key = "locks/series/world.co2.registry.json"
    owner = f"{socket.gethostname()}:{os.getpid()}"  # a pid that runs: the dead owner's, handed to another process
    record = {"owner": owner, "created": time.time() - 600}
    if unknown == "proc":
        record["started"] = locks._process_start(os.getpid()) or "1"
        monkeypatch.setattr(locks, "_process_start", lambda pid: None)
    store.write_json(key, record)
    with pytest.raises(SeriesBusy, match=re.escape(owner)):  # younger than the stale time: waited for
        with series_lock(store, "world.co2", scope="registry", wait=0.5):
            pass
    store.write_json(key, {**record, "created": time.time() - 2 * locks.DEFAULT_STALE_SECONDS})
    with series_lock(store, "world.co2", scope="registry", wait=0.5):
        pass
    assert store.list("locks/") == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_lock_of_a_zombie_owner_is_broken(tmp_path: Path) -> None:
    """An owner that exited but is not reaped yet (state Z) still has its pid and start time: its lock was never broken."""
    from pipeline import locks
    from pipeline.locks import series_lock

    store = LocalStore(tmp_path / "store")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:

        def state() -> str:
            return Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0]

        deadline = time.monotonic() + 10
        while state() != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state() == "Z", "precondition: the child exited and is not reaped"
        record = {"owner": f"{socket.gethostname()}:{zombie.pid}", "created": time.time(), "started": locks._process_start(zombie.pid)}
        store.write_json("locks/series/world.co2.json", record)
        with series_lock(store, "world.co2", wait=0.5):
            pass
        assert store.list("locks/") == []
    finally:
        zombie.wait()


def test_a_registry_lock_of_another_machine_is_broken_only_after_the_stale_time(tmp_path: Path) -> None:
    from pipeline import locks
    from pipeline.locks import SeriesBusy, series_lock

    store = LocalStore(tmp_path / "store")
    key = "locks/series/world.co2.registry.json"
    store.write_json(key, {"owner": "elsewhere:1", "created": time.time() - 600})  # a slow MLflow: ten minutes is not dead
    with pytest.raises(SeriesBusy, match="elsewhere:1"):
        with series_lock(store, "world.co2", scope="registry", wait=0.5):
            pass
    store.write_json(key, {"owner": "elsewhere:1", "created": time.time() - locks.DEFAULT_STALE_SECONDS - 1})
    with series_lock(store, "world.co2", scope="registry", wait=0.5):
        pass
    assert store.list("locks/") == []


class _BreakRace(LocalStore):
    """Two waiters both read one abandoned lock before either breaks it; the second's delete waits until the first
    has taken the lock (the interleaving that lets a late delete remove the lock the first breaker took)."""

    def __init__(self, root: Path, key: str) -> None:
        super().__init__(root)
        self.key = key
        self.both_read = threading.Barrier(2, timeout=5)
        self.taken = threading.Event()
        self.seen = threading.local()
        self.deletes = 0
        self.guard = threading.Lock()

    def read_json_or_none(self, key: str, shape: Any = None) -> Any:
        value = super().read_json_or_none(key, shape)
        if key == self.key and not getattr(self.seen, "read", False):
            self.seen.read = True
            self.both_read.wait()
        return value

    def create_exclusive(self, key: str, data: bytes) -> bool:
        created = super().create_exclusive(key, data)
        if key == self.key and created:
            self.taken.set()
        return created

    def delete(self, key: str) -> None:
        if key == self.key:
            with self.guard:
                self.deletes += 1
                second = self.deletes == 2
            if second and not self.taken.is_set():
                self.taken.wait(timeout=2)
        super().delete(key)


def test_two_waiters_breaking_one_abandoned_lock_never_both_hold_it(tmp_path: Path) -> None:
    """Only one waiter breaks an abandoned lock: a second, late delete would remove the lock the first then took, and
    both would run the body at once (two champion gates, or two writers of latest.json)."""
    from pipeline.locks import series_lock

    key = "locks/series/world.co2.json"
    store = _BreakRace(tmp_path / "store", key)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    LocalStore(tmp_path / "store").write_json(key, {"owner": f"{socket.gethostname()}:{dead.stdout.strip()}", "created": time.time()})
    held: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            with series_lock(store, "world.co2", wait=10):
                start = time.monotonic()
                time.sleep(0.3)
                held.append((start, time.monotonic()))
        except BaseException as error:  # reported below, with the thread's own traceback lost
            errors.append(error)

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert len(held) == 2, "both waiters got the lock, one after the other"
    first, second = sorted(held)
    assert second[0] >= first[1], f"the lock was held twice at once: {held}"
    assert store.list("locks/") == [], "no lock and no breaker's token is left behind"


def test_a_waiter_behind_a_stuck_breaker_gives_up_at_its_deadline(tmp_path: Path, monkeypatch) -> None:
    """The abandoned lock's breaker token is held by a process that still runs (hung in its delete, or stopped with
    Ctrl-Z): the waiter looped past its deadline for ever instead of giving up, retryably."""
    import hashlib

    from pipeline import layout, locks
    from pipeline.locks import SeriesBusy, series_lock

    store = LocalStore(tmp_path / "store")
    key = layout.series_lock("world.co2")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    abandoned = {"owner": f"{socket.gethostname()}:{dead.stdout.strip()}", "created": time.time()}
    store.write_json(key, abandoned)
    fingerprint = hashlib.sha256(f"{abandoned['owner']}|{abandoned['created']!r}".encode()).hexdigest()[:16]
    breaker = {"owner": locks.owner_id(), "created": time.time() - 3600, "started": locks._process_start(os.getpid())}
    store.write_json(layout.lock_breaker(key, fingerprint), breaker)
    start, real_break = time.monotonic(), locks._break

    def bounded_break(*args, **kwargs):
        if time.monotonic() - start > 15:
            raise AssertionError("still waiting 15 s after a deadline of 0.5 s")
        return real_break(*args, **kwargs)

    monkeypatch.setattr(locks, "_break", bounded_break)
    with pytest.raises(SeriesBusy, match=r"which is gone \(another waiter is breaking its lock\)"):
        with series_lock(store, "world.co2", wait=0.5):
            pass
    assert time.monotonic() - start < 10
    assert store.read_json(key) == abandoned, "the token's holder breaks it, not this waiter"


def test_a_series_registry_lock_and_pointer_lock_are_separate(settings: Settings) -> None:
    """The champion gate holds the registry lock and takes the pointer lock inside it; a live holder makes a waiter give up, retryably."""
    from pipeline.locks import SeriesBusy, series_lock

    store = tasks.open_store(settings)
    with series_lock(store, "world.co2", scope="registry"):
        with series_lock(store, "world.co2"):  # nested: a different lock object
            assert sorted(store.list("locks/series/")) == ["locks/series/world.co2.json", "locks/series/world.co2.registry.json"]
        with pytest.raises(SeriesBusy, match=r"world\.co2: its registry aliases are being moved by .*retry later"):
            with series_lock(store, "world.co2", scope="registry", wait=0.5):
                pass
    assert store.list("locks/") == []


def test_an_edited_lock_is_refused_in_one_line(settings: Settings) -> None:
    """A lock whose record is not a lock (edited by hand) is not taken for a live owner's, nor broken silently."""
    from pipeline.locks import series_lock
    from pipeline.store import StoreDataError

    store = tasks.open_store(settings)
    store.write_bytes("locks/series/world.co2.json", b"[]")
    refused = r"locks/series/world\.co2\.json is not what co2cast wrote \(it holds an array, not an object\)"
    with pytest.raises(StoreDataError, match=refused):
        with series_lock(store, "world.co2", wait=0.5):
            pass
    assert store.read_bytes("locks/series/world.co2.json") == b"[]"  # left for a person to look at


# -- the store fails mid-publish ---------------------------------------------------------------


class _FullDisk(LocalStore):
    """A local store whose writes fail with ENOSPC after ``room`` more files."""

    def __init__(self, root: Path, room: int) -> None:
        super().__init__(root)
        self.room = room

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.startswith("forecasts/"):
            if self.room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= 1
        super().write_bytes(key, data)


@pytest.mark.parametrize("room", [0, 2, 4, 5], ids=["first-file", "third-file", "manifest", "latest"])
def test_disk_full_during_publish(settings: Settings, room: int, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _state(settings)
    run_key = _run_key(settings)
    root = Path(settings.resolved_store_uri.removeprefix("file://"))
    monkeypatch.setattr(tasks, "open_store", lambda s: _FullDisk(root, room))
    with pytest.raises(PublishFailed) as raised:
        tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), _lineup(settings))
    message = str(raised.value)
    assert "\n" not in message and "No space left on device" in message and "latest.json did not move" in message
    store = LocalStore(root)
    assert store.read_bytes(f"forecasts/{SID}/latest.json") == before["latest"]
    assert read_latest(store, SID)[0].as_of_year == 2013

    monkeypatch.undo()
    tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), _lineup(settings))
    _assert_healed(settings, run_key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_s3_down_mid_publish(tmp_path: Path, small_owid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail in seconds while the server is down
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="down")
        settings = Settings(
            home=tmp_path / "home",
            store_uri="s3://down/co2cast",
            s3_endpoint_url=endpoint,
            mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        )
        ingest.ingest(settings, tasks.open_store(settings), str(small_owid))
        tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2013), _lineup(settings))
        before = _state(settings)
        run_key = _run_key(settings)

        from pipeline import publish

        def stop_server(name: str) -> None:
            if name == "after_files":
                server.stop()

        monkeypatch.setattr(publish, "pause_point", stop_server)
        with pytest.raises(StoreUnavailable) as raised:
            tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), _lineup(settings))
        assert "\n" not in str(raised.value) and "retry later" in str(raised.value)
    finally:
        server.stop()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # the same S3, back up
    server.start()
    try:
        monkeypatch.undo()
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        store = open_store("s3://down/co2cast", endpoint_url=endpoint)
        assert store.read_bytes(f"forecasts/{SID}/latest.json") == before["latest"]
        assert not [k for k in store.list(f"forecasts/{SID}/asof=2014/") if k.endswith("manifest.json")]
        tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), _lineup(settings))
        _assert_healed(settings, run_key)
    finally:
        server.stop()


# -- a tampered model in the registry -----------------------------------------------------------


def test_a_tampered_model_json_is_refused_on_publish(settings: Settings) -> None:
    from urllib.parse import unquote, urlparse

    import mlflow

    from pipeline.artifacts import IntegrityError

    before = _state(settings)
    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    client = tracking.configure(settings)
    source = client.get_model_version(trained.model_name, trained.champion_version).source
    stored = Path(unquote(urlparse(mlflow.get_logged_model(source.rsplit("/", 1)[-1]).artifact_location).path))
    model_json = next(stored.rglob("model.json"))
    original = model_json.read_bytes()
    document = json.loads(original)
    model_json.write_text(json.dumps(document).replace("1", "7", 1))  # one digit changed

    assert _state(settings)["champion"] == trained.champion_version != before["champion"]  # the gate moved it

    with pytest.raises(IntegrityError, match=r"model\.json does not match its recorded sha256") as raised:
        tasks.publish_series(settings, plan, trained, lineup=lineup)
    assert "\n" not in str(raised.value) and trained.model_name in str(raised.value)
    assert f"restore it from a backup (with none: `co2cast rollback {SID}` if it is served, else delete the version" in str(raised.value)
    store = tasks.open_store(settings)
    assert store.read_bytes(f"forecasts/{SID}/latest.json") == before["latest"]
    assert store.list(f"forecasts/{SID}/asof=2014/") == []
    _assert_champion_restored(settings, before, trained)

    model_json.write_bytes(original)  # restored from a backup: publishing heals
    tasks.publish_series(settings, plan, trained, lineup=lineup)
    _assert_healed(settings, trained.run_key)
    last = tasks.alias_history(settings, SID)[-1]
    assert (last["from_version"], last["to_version"]) == (before["champion"], trained.champion_version)
    assert "published now" in last["reason"]


def test_a_model_whose_files_were_garbage_collected_is_refused_once_then_trained_again(settings: Settings) -> None:
    """The chosen version's logged model deleted in the MLflow UI and removed by ``mlflow gc`` before its forecast is out:
    nothing is left to restore it from. One line, @champion back on what latest.json serves, and the rerun trains the
    run key afresh (it refused 'file MLmodel is missing' on every rerun, reusing the complete run for ever)."""
    import mlflow

    from pipeline.artifacts import IntegrityError

    before = _state(settings)
    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    client = tracking.configure(settings)
    model_id = client.get_model_version(trained.model_name, trained.champion_version).source.rsplit("/", 1)[-1]
    stored = Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    client.delete_logged_model(model_id)  # as the MLflow UI's Models tab does, then the operator's gc
    gc = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", settings.resolved_tracking_uri],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gc.returncode == 0 and not stored.exists(), gc.stderr[-2000:]

    with pytest.raises(IntegrityError) as refused:
        tasks.forecast_series(settings, plan, plan.series[0], lineup=lineup)
    message = str(refused.value)
    assert message.startswith(f"{trained.model_name} v{trained.champion_version}: its model files are gone from the artefact store")
    assert message.endswith("nothing was published: run the series again, which trains its run key afresh") and "\n" not in message
    assert tasks.open_store(settings).list(f"forecasts/{SID}/asof=2014/") == []
    _assert_champion_restored(settings, before, trained)
    retired = client.get_run(trained.run_id).data.tags
    assert retired[tracking.COMPLETE_TAG] == "false" and "model files are gone" in retired[tracking.RETIRED_TAG]

    again = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)  # the rerun trains and registers afresh
    assert again.run_key == trained.run_key and again.run_id != trained.run_id
    assert int(again.champion_version) > int(trained.champion_version)
    assert not tracking.version_exists(client, SID, trained.champion_version), "the key's versions of the retired run are healed"
    assert tasks.publish_series(settings, plan, again, lineup=lineup).served
    _assert_healed(settings, trained.run_key)


def _assert_champion_restored(settings: Settings, before: dict[str, Any], trained: Any) -> None:
    """After a refused publish, @champion names the version latest.json still serves, and the history says why."""
    after = _state(settings)  # versions were registered and family aliases moved: only @champion goes back
    assert after == {**before, "versions": after["versions"], "aliases": {**after["aliases"], "champion": before["champion"]}}
    assert tasks.open_store(settings).read_json(f"forecasts/{SID}/latest.json")["model_version"] == before["champion"]
    last = tasks.alias_history(settings, SID)[-1]
    assert last["publish_refused"] and last["run_key"] == trained.run_key
    assert (last["from_version"], last["to_version"]) == (trained.champion_version, before["champion"])
    assert f"@champion is back on v{before['champion']}" in last["reason"]


def _run_artifact(settings: Settings, run_id: str, path: str) -> Path:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(tracking.configure(settings).get_run(run_id).info.artifact_uri).path)) / path


@pytest.mark.parametrize(
    ("path", "damage", "message"),
    [
        (tracking.CANDIDATES_ARTIFACT, lambda b: b[: len(b) // 2], r"candidates\.parquet of MLflow run \w+ does not match the sha256"),
        (tracking.CANDIDATES_ARTIFACT, None, r"candidates\.parquet of MLflow run \w+ is missing"),
        (tracking.DIAGNOSTICS_ARTIFACT, lambda b: b.replace(b'"implied_d": 1', b'"implied_d": 0'), r"diagnostics\.json .* does not match"),
    ],
    ids=["candidates-truncated", "candidates-deleted", "diagnostics-edited"],
)
def test_a_tampered_run_artefact_is_refused_and_champion_restored(settings: Settings, path: str, damage: Any, message: str) -> None:
    """The run's files that are published beside the forecast are checked against the sha256 logged with them."""
    from pipeline.artifacts import IntegrityError

    before = _state(settings)
    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    stored = _run_artifact(settings, trained.run_id, path)
    original = stored.read_bytes()
    if damage is None:
        stored.unlink()
    else:
        assert damage(original) != original
        stored.write_bytes(damage(original))

    with pytest.raises(IntegrityError, match=message) as raised:
        tasks.publish_series(settings, plan, trained, lineup=lineup)
    assert "\n" not in str(raised.value)
    assert tasks.open_store(settings).list(f"forecasts/{SID}/asof=2014/") == []
    _assert_champion_restored(settings, before, trained)
    # The same run key again (a retry, the next nightly run): refused again, nothing moves twice.
    with pytest.raises(IntegrityError, match=message):
        tasks.forecast_series(settings, plan, plan.series[0], lineup=lineup)
    assert sum(1 for r in tasks.alias_history(settings, SID) if r.get("publish_refused")) == 1

    stored.write_bytes(original)  # restored from a backup
    tasks.forecast_series(settings, plan, plan.series[0], lineup=lineup)
    _assert_healed(settings, trained.run_key)


def test_an_unexpected_failure_on_one_series_does_not_stop_the_others(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault no one foresaw in one series' data (statsmodels' OverflowError on a stepped series,
    before that was handled) is that series' one line; the others are published. A transient fault
    (the store away) still stops the run, for Airflow or the operator to retry."""
    train = tasks.train_series

    def failing_on_world(settings: Settings, plan: Any, item: Any, **kwargs: Any) -> Any:
        if item.series_id == "world.co2":
            raise OverflowError("cannot convert float infinity to integer")
        return train(settings, plan, item, **kwargs)

    monkeypatch.setattr(tasks, "train_series", failing_on_world)
    lines: list[str] = []
    trigger = RunTrigger(run_type="cli", series=f"World:co2,{SERIES}", as_of_year=2014)
    with pytest.raises(tasks.RunIncomplete, match=r"^1 of 2 series refused, the others were published: world\.co2 \(OverflowError: cannot"):
        tasks.forecast_all(settings, trigger, _lineup(settings), progress=lines.append)
    assert lines[1].startswith("[1/2] world.co2: FAILED: OverflowError: cannot convert float infinity to integer (an unexpected")
    assert lines[3].startswith(f"[2/2] {SID}: champion v")
    manifest, _ = read_latest(tasks.open_store(settings), SID)
    assert manifest.as_of_year == 2014
    assert tasks.open_store(settings).read_json_or_none("forecasts/world.co2/latest.json") is None

    alone = RunTrigger(run_type="cli", series="World:co2", as_of_year=2014)  # no other series to speak of
    with pytest.raises(tasks.RunIncomplete, match=r"^1 of 1 series refused, nothing was published: world\.co2 \(OverflowError"):
        tasks.forecast_all(settings, alone, _lineup(settings))

    def store_away(settings: Settings, plan: Any, item: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("cannot reach s3://bucket: connection refused; retry later")

    monkeypatch.setattr(tasks, "train_series", store_away)
    lines.clear()
    with pytest.raises(StoreUnavailable):
        tasks.forecast_all(settings, trigger, _lineup(settings), progress=lines.append)
    assert lines == ["[1/2] world.co2: training and publishing (as of 2014)"]  # stopped at the first


def test_a_release_that_shrinks_a_published_history_to_1e_300_is_refused_and_changes_nothing(
    settings: Settings, small_owid: Path, tmp_path: Path
) -> None:
    """Every year of Canada's CO2 per capita divided by 1e300: the ingest's comparison with the
    previous vintage refuses it. Allow-listed as a restatement it passes the raw gates (no
    emissions floor but zero), and the run as of 2014 refuses the series in one line, the 2013
    forecast staying served (it used to fail with "ValueError: cannot convert float NaN to integer")."""
    before = _state(settings)
    lines = small_owid.read_text().splitlines()
    header = lines[0].split(",")
    country, column = header.index("country"), header.index("co2_per_capita")
    shrunk = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[country] == "Canada" and cells[column]:
            cells[column] = repr(float(cells[column]) * 1e-300)
        shrunk.append(",".join(cells))
    release = small_owid.with_name("owid-shrunk.csv")
    release.write_text("\n".join(shrunk) + "\n")
    with pytest.raises(ingest.ValidationFailed, match=r"revision_factor=\S+ entity=Canada variable=co2_per_capita"):
        ingest.ingest(settings, tasks.open_store(settings), str(release))
    restated = {"entity": "Canada", "variables": ["co2_per_capita"], "years": [1750, 2014], "checks": ["revision"], "why": "test"}
    (breaks := tmp_path / "breaks.json").write_text(json.dumps({"breaks": [*plausibility.load_allowed_breaks(), restated]}))
    ingest.ingest(settings.model_copy(update={"allowed_breaks": breaks}), tasks.open_store(settings), str(release))

    progress: list[str] = []
    trigger = RunTrigger(run_type="cli", series=SERIES, as_of_year=2014)
    with pytest.raises(tasks.RunIncomplete, match=r"^1 of 1 series refused, nothing was published: canada\.co2_per_capita") as raised:
        tasks.forecast_all(settings, trigger, _lineup(settings), progress=progress.append)
    assert "\n" not in str(raised.value)
    refused = rf"\[1/1\] {re.escape(SID)}: REFUSED: {re.escape(SID)}: its value \S+e-30\d in \d+ cannot be modelled"
    assert re.match(refused, progress[-1]), progress
    assert _state(settings) == before
    assert read_latest(tasks.open_store(settings), SID)[0].as_of_year == 2013


def test_a_first_forecast_refused_leaves_no_champion(tmp_path: Path, small_owid: Path) -> None:
    """Before any forecast of a series is published, a refusal takes @champion away again: both say "nothing"."""
    from pipeline.artifacts import IntegrityError

    settings = Settings(
        home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
    )
    ingest.ingest(settings, tasks.open_store(settings), str(small_owid))
    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    _run_artifact(settings, trained.run_id, tracking.CANDIDATES_ARTIFACT).write_bytes(b"PAR1 not a table PAR1")
    tracking.configure(settings).delete_tag(trained.run_id, tracking.sha_tag(tracking.CANDIDATES_ARTIFACT))  # as an older run

    with pytest.raises(IntegrityError, match=r"candidates\.parquet of MLflow run \w+ is not a readable table") as raised:
        tasks.publish_series(settings, plan, trained, lineup=lineup)
    assert "\n" not in str(raised.value)
    assert tracking.alias_version(tracking.configure(settings), SID, "champion") is None
    assert not tasks.open_store(settings).exists(f"forecasts/{SID}/latest.json")
    last = tasks.alias_history(settings, SID)[-1]
    assert last["publish_refused"] and last["to_version"] is None and "@champion removed" in last["reason"]


def test_a_tampered_run_summary_is_not_reused(settings: Settings) -> None:
    """A rerun trusts summary.json to say which version to publish: an edited one is refused, not followed."""
    from pipeline.artifacts import IntegrityError

    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    stored = _run_artifact(settings, trained.run_id, tracking.SUMMARY_ARTIFACT)
    original = stored.read_bytes()
    summary = json.loads(original)
    stored.write_text(json.dumps({**summary, "champion_version": "1"}, indent=2))  # the 2013 version

    with pytest.raises(IntegrityError, match=r"summary\.json of MLflow run \w+ does not match the sha256") as raised:
        tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    assert "\n" not in str(raised.value)
    stored.write_text("{not json")
    client = tracking.configure(settings)
    client.delete_tag(trained.run_id, tracking.sha_tag(tracking.SUMMARY_ARTIFACT))  # as a run logged before the digests
    with pytest.raises(IntegrityError, match=r"summary\.json of MLflow run \w+ cannot be read"):
        tasks.train_series(settings, plan, plan.series[0], lineup=lineup)

    stored.write_bytes(original)
    assert tasks.train_series(settings, plan, plan.series[0], lineup=lineup) == trained


@pytest.mark.parametrize("changed", ["forecast.parquet", "manifest.json", "trained"])
def test_a_changed_published_file_is_healed_by_a_rerun(settings: Settings, changed: str) -> None:
    """A published file changed by hand: ``show`` refuses it, and the rerun the error asks for republishes it for good.

    The rerun rewrote every file and the manifest but left ``latest.json`` as it was (it already named that
    manifest), still recording the old manifest's sha256: ``show`` then refused the healed forecast for ever.
    An edited manifest whose files still verify is not vouched for again either: it is republished too. And what
    an edited manifest says was trained (``trained``: another version) is not believed: the rerun took it, served
    that version's forecast and vouched for it, with ``@champion`` elsewhere.
    """
    from pipeline.publish import IntegrityError

    store = tasks.open_store(settings)
    served = read_latest(store, SID)[0]
    folder = Path(settings.resolved_store_uri.removeprefix("file://")) / served.key.rpartition("/")[0]
    if changed == "manifest.json":  # the files still match it: only latest.json's sha256 tells
        document = json.loads((folder / changed).read_text())
        (folder / changed).write_text(json.dumps({**document, "model_family": "naive"}, indent=2))
    elif changed == "trained":  # the record of what the run trained names the naive version instead
        document = json.loads((folder / "manifest.json").read_text())
        naive = tracking.alias_version(tracking.configure(settings), SID, "naive")
        assert str(naive.version) != str(served.model_version)
        trained = {**document["trained"], "champion_version": str(naive.version), "champion_family": "naive"}
        (folder / "manifest.json").write_text(json.dumps({**document, "trained": trained}, indent=2))
    else:
        with (folder / changed).open("ab") as handle:
            handle.write(b"x")
    with pytest.raises(IntegrityError, match="republish it"):
        read_latest(store, SID)
    plan = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2013), _lineup(settings))
    assert [item["series_id"] for item in tasks.pending_series(settings, plan)] == [SID]
    time.sleep(1.1)  # the republished manifest's published_at (in seconds) differs from the first's, as in real life

    for _run in range(2):  # the rerun heals, and the one after it finds nothing to do
        [(_, published)] = tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2013), _lineup(settings))
        manifest, table = read_latest(store, SID)
        assert published.served and manifest.key == served.key and manifest.model_family == served.model_family
        assert manifest.model_version == served.model_version == _state(settings)["champion"]
        assert table["year"].min() == 2014 and tasks.pending_series(settings, plan) == []


def _revised_release(source: Path, tmp_path: Path, entity: str, variable: str) -> Path:
    """A copy of ``source`` with ``entity``'s ``variable`` of 2005 raised by 0.1 %: a second vintage."""
    import csv
    import io

    with source.open() as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), reader.fieldnames
    for row in rows:
        if row["country"] == entity and row["year"] == "2005":
            row[variable] = repr(float(row[variable]) * 1.001)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    revised = tmp_path / f"v2-{entity}" / source.name
    revised.parent.mkdir()
    revised.write_text(buffer.getvalue())
    return revised


def test_a_pinned_run_that_heals_the_served_forecast_vouches_for_it_again(tmp_path: Path, small_owid: Path) -> None:
    """After a rollback, the forecast served again had a file changed; a ``--vintage`` run of its key heals it.

    The pinned run rewrote the files and the manifest but could not touch ``latest.json``, which went on recording
    the old manifest's sha256: ``show`` called co2cast's own rewrite "edited", and no later run healed it (the
    latest run key is rolled back, so settled). Now the pointer is written again, naming the same forecast, with
    what was rolled back kept.
    """
    from pipeline.publish import IntegrityError, latest_pointer

    settings = Settings(
        home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
    )
    store, lineup = tasks.open_store(settings), _lineup(settings)
    ingest.ingest(settings, store, str(small_owid))
    old = tasks.latest_vintage(settings)["vintage"]
    tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)
    assert ingest.ingest(settings, store, str(_revised_release(small_owid, tmp_path, "Canada", "co2_per_capita")))["status"] == "curated"
    tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)
    tasks.rollback(settings, SID)
    served, _ = read_latest(store, SID)
    assert served.vintage == old
    pointer = latest_pointer(store, SID)
    assert pointer["rolled_back"]
    folder = Path(settings.resolved_store_uri.removeprefix("file://")) / served.key.rpartition("/")[0]
    with (folder / "forecast.parquet").open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(IntegrityError, match="republish it"):
        read_latest(store, SID)
    time.sleep(1.1)  # the republished manifest's published_at (in seconds) differs from the first's

    pinned = RunTrigger(run_type="cli", series=SERIES, as_of_year=2014, vintage=old)
    [(_, published)] = tasks.forecast_all(settings, pinned, lineup)
    healed, _ = read_latest(store, SID)  # readable again: it said the manifest "was edited"
    assert published.served and healed.key == served.key and healed.model_version == served.model_version
    assert latest_pointer(store, SID)["rolled_back"] == pointer["rolled_back"]
    state = _state(settings)
    tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014), lineup)  # the latest: rolled back
    tasks.forecast_all(settings, pinned, lineup)
    assert _state(settings) == state and read_latest(store, SID)[0].key == served.key


def test_a_pinned_first_run_serves_nothing_and_the_next_run_on_the_latest_vintage_serves_through_the_gate(
    tmp_path: Path, small_owid: Path
) -> None:
    """``--vintage`` of an older release on a series with nothing published yet, then a run on the latest vintage.

    The pinned run wrote ``latest.json`` (there was none to keep) but moved no alias, so ``summary`` flagged the
    registry and ``rollback`` found no ``@champion``; the series' data being the same in both vintages, the next
    run had the same run key, found it served and repaired nothing. Now the pinned run serves nothing, and the next
    run (the asset-triggered path of ``co2_forecast``) trains the key through the gate: ``@champion``, the family
    aliases and ``latest.json`` as a run on that vintage alone would leave them, with the key's versions reused.
    """
    settings = Settings(
        home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
    )
    store = tasks.open_store(settings)
    ingest.ingest(settings, store, str(small_owid))
    old = tasks.latest_vintage(settings)["vintage"]
    revised = _revised_release(small_owid, tmp_path, "France", "co2")  # not Canada's per-capita series
    assert ingest.ingest(settings, store, str(revised))["status"] == "curated"
    new = tasks.latest_vintage(settings)["vintage"]
    lineup = _lineup(settings)

    said: list[str] = []
    trigger = RunTrigger(run_type="cli", series=SERIES, as_of_year=2014, vintage=old)
    [(pinned, published)] = tasks.forecast_all(settings, trigger, lineup, progress=said.append)
    # It said "latest.json serves vNone as of None instead (a rollback, or a newer forecast of the year, took this one's place)".
    assert said[-1].endswith(
        "(the vintage is not the latest curated one: like a backfill, it is not served; latest.json serves nothing yet)"
    )
    assert pinned.vintage == old and not published.served
    assert not store.exists(f"forecasts/{SID}/latest.json")
    assert pinned.pinned
    client = tracking.configure(settings)
    assert all(tracking.alias_version(client, SID, alias) is None for alias in ("champion", "drift", "naive"))

    trigger = RunTrigger(run_type="asset_triggered", series=SERIES, as_of_year=2014, asset_vintage=new)
    plan = tasks.plan_run(settings, trigger, lineup)
    item = plan.series[0]
    assert item.run_key == pinned.run_key, "precondition: Canada's data is the same in both vintages"
    assert [i["series_id"] for i in tasks.pending_series(settings, plan)] == [SID]
    published = tasks.forecast_series(settings, plan, item, lineup=lineup)
    assert published.served
    _assert_healed(settings, item.run_key)  # one version per family for the key: the pinned run's, reused
    state = _state(settings)
    registered = client.search_model_versions(f"name = '{tracking.registered_name(SID)}'")
    versions = {v.tags[tracking.FAMILY_TAG]: str(v.version) for v in registered}
    assert state["aliases"] == {"champion": versions["drift"], "drift": versions["drift"], "naive": versions["naive"]}
    assert tracking.champion_versions(client)[SID] == published.model_version == versions["drift"]  # summary agrees
    manifest, _ = read_latest(store, SID)
    assert manifest.vintage == new and manifest.trained.get("pinned") is False
    gated = manifest.trained["run_id"]  # its own MLflow run, the one a rerun of the key reuses from now on
    assert gated != pinned.run_id and tracking.find_complete_run(client, item.run_key).info.run_id == gated

    assert tasks.pending_series(settings, plan) == []  # settled now; a rerun moves and registers nothing
    assert tasks.forecast_series(settings, plan, item, lineup=lineup).served and _state(settings) == state
    again = tasks.plan_run(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014, vintage=old), lineup)
    assert tasks.pending_series(settings, again) == []  # the pinned run again: nothing to do, nothing moves
    tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES, as_of_year=2014, vintage=old), lineup)
    assert _state(settings) == state


# -- refusals and what a person reads -----------------------------------------------------------


def test_stale_series_and_an_as_of_year_beyond_the_data_are_refused(tmp_path: Path, owid_csv: Path) -> None:
    lines = owid_csv.read_text().splitlines()
    source = tmp_path / "owid.csv"
    source.write_text("\n".join([lines[0], *[ln for ln in lines[1:] if ln.split(",")[1] in {"Canada", "Czechoslovakia", "World"}]]) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "MLFLOW_"))}
    env["CO2CAST_HOME"] = str(tmp_path / "home")
    env["CO2CAST_DATA_DIRS"] = str(tmp_path)

    def co2cast(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CO2CAST), *args], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)

    assert co2cast("ingest", "--source", str(source)).returncode == 0
    beyond = co2cast("forecast", "--as-of-year", "2049")
    assert beyond.returncode == 1 and "Traceback" not in beyond.stderr
    assert beyond.stderr.strip().splitlines()[-1].startswith("error: as-of year 2049 is after the latest year 2014")
    assert not (tmp_path / "home" / "store" / "forecasts").exists()

    run = co2cast("forecast", "--series", "Czechoslovakia:co2,Canada:co2_per_capita")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 series refused") and "czechoslovakia.co2" in last and "data end in 1991" in last
    assert "[2/2] canada.co2_per_capita: champion" in run.stdout  # the other series was done
    store = LocalStore(tmp_path / "home" / "store")
    assert [k for k in store.list("forecasts/") if k.endswith("latest.json")] == [f"forecasts/{SID}/latest.json"]

    show = co2cast("show", SID, "--csv")
    assert show.returncode == 0 and show.stdout.splitlines()[0] == "year,mean,lo_80,hi_80,lo_95,hi_95,unit"
    rows = show.stdout.splitlines()[1:]
    assert [row.split(",", 1)[0] for row in rows] == [str(year) for year in range(2015, 2051)]  # every year up to the horizon
    assert all(row.endswith(",t CO2 per person") for row in rows)
    summary = co2cast("summary")
    assert "asof=2014" in summary.stdout and "%3D" not in summary.stdout
    assert re.search(r"champion \S+: backtest MASE \d+\.\d{3}.*naive \d+\.\d{3}", summary.stdout), summary.stdout

    # A tampered or deleted published file: one line each, no traceback.
    manifest = store.read_json(f"forecasts/{SID}/latest.json")["manifest"]
    parquet = manifest.replace("manifest.json", "forecast.parquet")
    store.write_bytes(parquet, store.read_bytes(parquet) + b"x")
    for command in (("show", SID), ("summary",)):
        result = co2cast(*command)
        assert "Traceback" not in result.stderr
        text = result.stderr if command[0] == "show" else result.stdout
        assert "forecast.parquet does not match its sha256" in text, text
    store.delete(manifest)
    shown = co2cast("show", SID)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr and "which is missing" in shown.stderr.strip().splitlines()[-1]
    summary = co2cast("summary")
    assert "Traceback" not in summary.stderr and f"{SID}: NOT READABLE" in summary.stdout and "which is missing" in summary.stdout

    # A damaged or hand-edited pointer or alias history: one line naming the file, no traceback.
    history = f"history/{SID}.json"
    assert isinstance(store.read_json(history), list) and co2cast("history", SID).returncode == 0
    store.write_bytes(history, store.read_bytes(history)[:40])  # cut short
    shown = co2cast("history", SID)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
    assert shown.stderr.strip().splitlines()[-1].startswith(f"error: {store.uri(history)} is not what co2cast wrote (")
    manifest = store.read_json(f"forecasts/{SID}/latest.json")["manifest"]
    store.write_bytes(manifest, b'{"key": "forecasts/')  # a manifest cut short
    shown = co2cast("show", SID)
    last = shown.stderr.strip().splitlines()[-1]
    assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
    assert last.startswith(f"error: {store.uri(manifest)} is not what co2cast wrote (Unterminated string"), last
    store.write_bytes(f"forecasts/{SID}/latest.json", b"[]")
    shown = co2cast("show", SID)
    last = shown.stderr.strip().splitlines()[-1]
    assert shown.returncode == 1 and "Traceback" not in shown.stderr and "it holds an array, not an object" in last, shown.stderr
    summary = co2cast("summary")
    assert "Traceback" not in summary.stderr and f"{SID}: NOT READABLE" in summary.stdout and "not what co2cast wrote" in summary.stdout
    store.write_json("curated/latest.json", {**store.read_json("curated/latest.json"), "latest_year": "2014"})
    planned = co2cast("forecast", "--series", "Canada:co2_per_capita")
    last = planned.stderr.strip().splitlines()[-1]
    assert planned.returncode == 1 and "Traceback" not in planned.stderr and "curated/latest.json is not what co2cast wrote" in last, last
    assert "its 'latest_year' is '2014'" in last


@pytest.mark.parametrize("damage", ["deleted", "replaced", "edited"])
def test_a_curated_table_deleted_replaced_or_edited_in_the_store_is_one_line(
    curated_settings: Settings, small_owid: Path, damage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """By hand in the bucket: it was an unexpected KeyError or ArrowInvalid; numbers edited in a table that still
    reads (Canada's 2010-2014 per-capita values times 1.5) were forecast and published under the validated vintage's
    id. Now one line, nothing published, and ingesting the same release again curates the table again."""
    from pipeline import cli, layout

    settings = curated_settings
    store = tasks.open_store(settings)
    vintage = ingest.latest_curated(store)["vintage"]
    key = f"curated/{vintage}/emissions.parquet"
    curated = store.read_bytes(key)
    if damage == "deleted":
        store.delete(key)
        expected = f"error: {store.uri(key)} is missing: vintage {vintage}'s curated table was deleted; restore it from a backup"
    elif damage == "replaced":
        store.write_bytes(key, b"not parquet")
        expected = f"error: {store.uri(key)} does not match the sha256 recorded at curation"
    else:
        table = pd.read_parquet(io.BytesIO(curated))
        rows = (table["entity"] == "Canada") & (table["variable"] == "co2_per_capita") & table["year"].between(2010, 2014)
        table.loc[rows, "value"] *= 1.5
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        store.write_bytes(key, buffer.getvalue())
        expected = f"error: {store.uri(key)} does not match the sha256 recorded at curation"
    for name, value in {"CO2CAST_HOME": str(settings.home), "CO2CAST_STORE_URI": settings.resolved_store_uri}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.resolved_tracking_uri)
    assert cli.main(["forecast", "--series", SERIES]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert "unexpected" not in lines[0] and f"ingest vintage {vintage}'s release again (`co2cast ingest --source {small_owid}`" in lines[0]
    with pytest.raises(StoreDataError):
        tasks.plan_run(settings, RunTrigger(series=SERIES))
    assert not store.list("forecasts/")

    healed = ingest.ingest(settings, store, str(small_owid))
    assert healed["status"] == "unchanged" and "curated again from the source" in healed["message"], healed["message"]
    assert store.read_bytes(key) == curated
    assert store.read_json(layout.curated_meta(vintage))[ingest.TABLE_SHA256] == hashlib.sha256(curated).hexdigest()
    assert len(ingest.read_curated(store, vintage)) == len(pd.read_parquet(io.BytesIO(curated)))
