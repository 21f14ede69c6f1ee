"""Peak memory and time of ingesting a ~200 MB OWID-layout release through the real path.

The file is built in a temporary directory from the embedded OWID release (all its columns),
repeated with renamed entities (``Canada (copy 7)``) until it reaches the target size. It is
then ingested by ``pipeline.ingest.ingest`` (fetch, snapshot, every GX gate, curate) into a
local store, in a fresh child process so the peak resident set size (``ru_maxrss``) is the
ingest's own and not the file builder's. Then a second vintage, the same file with one value
revised, is ingested into the same store, again in a child of its own: it reads the previous
curated table and compares the two (the years each series lost and the ratio of its values,
``emissions_history``) on top of everything the first ingest does. Target: under 1.5 GB.

    python benchmarks/bench_ingest_memory.py [--mb 200]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(target: Path, megabytes: float) -> tuple[int, int]:
    """Write the OWID-layout file; returns (bytes, copies of the embedded release)."""
    from pipeline.config import EMBEDDED_SOURCE

    text = gzip.decompress(EMBEDDED_SOURCE.read_bytes()).decode()
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    entity = header.index("country")
    limit = int(megabytes * 1024 * 1024)
    copies = 0
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        while handle.tell() < limit:
            for row in body:
                if copies and row[entity] == "Statistical Difference":
                    continue  # a balancing line the raw gate exempts by name: keep the one original
                if copies:
                    row = [*row[:entity], f"{row[entity]} (copy {copies})", *row[entity + 1 :]]
                writer.writerow(row)
            copies += 1
    return target.stat().st_size, copies


def revise(source: Path, target: Path) -> None:
    """Copy the file with Canada's 2014 co2 raised by 0.1 % (a new vintage that revises one value)."""
    with source.open(newline="") as src, target.open("w", newline="") as out:
        reader, writer = csv.reader(src), csv.writer(out, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        entity, year, co2 = header.index("country"), header.index("year"), header.index("co2")
        done = False
        for row in reader:
            if not done and row[entity] == "Canada" and row[year] == "2014":
                row[co2], done = repr(float(row[co2]) * 1.001), True
            writer.writerow(row)


def allow_copies(target: Path, copies: int) -> None:
    """The allow-list of real breaks, extended to every renamed copy of an entity."""
    from pipeline.plausibility import ALLOWED_BREAKS

    document = json.loads(ALLOWED_BREAKS.read_text())
    originals = document["breaks"]
    document["breaks"] = originals + [{**e, "entity": f"{e['entity']} (copy {k})"} for k in range(1, copies) for e in originals]
    target.write_text(json.dumps(document))


def measure(path: Path, home: Path) -> dict[str, float]:
    """Ingest ``path`` into a store under ``home``; this process's peak RSS and the time."""
    from pipeline import ingest
    from pipeline.config import Settings
    from pipeline.store import LocalStore

    settings = Settings(
        home=home, store_uri=(home / "store").as_uri(), data_dirs=str(path.parent), allowed_breaks=path.parent / "allowed_breaks.json"
    )
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = ingest.ingest(settings, LocalStore(home / "store"), str(path))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"status": result["status"], "rows": result.get("rows", 0), "seconds": seconds, "baseline_mb": baseline, "peak_mb": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0, help="size of the generated file in MB")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.measure.parent / "home")))
        return 0
    with tempfile.TemporaryDirectory(prefix="co2cast-bench-") as tmp:
        path = Path(tmp) / "owid-big.csv"
        size, copies = build(path, args.mb)
        allow_copies(Path(tmp) / "allowed_breaks.json", copies)
        print(f"file: {size / 1e6:,.1f} MB, {copies} copies of the embedded release ({path})")
        revised = Path(tmp) / "owid-big-revised.csv"
        revise(path, revised)
        peaks = []
        for label, release in (("first vintage", path), ("second vintage (one value revised)", revised)):
            child = subprocess.run([sys.executable, __file__, "--measure", str(release)], capture_output=True, text=True)
            if child.returncode != 0:
                print(child.stderr[-3000:], file=sys.stderr)
                return child.returncode
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{label}: {figures['status']}, {figures['rows']:,} curated rows in {figures['seconds']:.1f} s")
            print(f"  peak RSS: {figures['peak_mb']:,.0f} MB (after imports: {figures['baseline_mb']:,.0f} MB); target under 1,536 MB")
            peaks.append(figures["peak_mb"])
    return 0 if max(peaks) < 1536 else 1


if __name__ == "__main__":
    raise SystemExit(main())
