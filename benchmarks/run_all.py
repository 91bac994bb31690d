"""Run every meddx benchmark, each in a fresh process, and collect their tables.

    python benchmarks/run_all.py            # full suite (< 20 min on an idle 2-core CPU); updates README tables
    python benchmarks/run_all.py --quick    # smoke run, a couple of minutes; numbers meaningless

Each script prints its own table and writes benchmarks/results/<name>.json
(benchmarks/results/quick/ with --quick). The full run also writes results/run_all.json and
replaces the "Latest results" section of benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, machine_info, parser, print_header, results_dir, table  # noqa: E402

SCRIPTS = ["reading", "inference", "training_throughput", "threads", "time_to_accuracy"]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these benchmarks")
    args = p.parse_args(argv)
    out = results_dir(args)
    info = machine_info()
    print_header("meddx benchmarks" + (" (--quick)" if args.quick else ""), info)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    timings = []
    failed = []
    t_all = time.perf_counter()
    for name in args.only or SCRIPTS:
        cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--results-dir", str(out)] + (["--quick"] if args.quick else [])
        print(f"\n### {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, env=env, check=False).returncode
        timings.append({"benchmark": name, "seconds": time.perf_counter() - t, "exit": rc})
        if rc:
            failed.append(name)
    total = time.perf_counter() - t_all
    info_end = machine_info()
    summary = {"quick": args.quick, "machine": info, "loadavg_end": info_end["loadavg"], "total_s": total,
               "timings": timings, "failed": failed}
    (out / "run_all.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print("\n" + table(timings))
    print(f"total {total / 60:.1f} min; loadavg at end {info_end['loadavg']}")
    if not args.quick and not failed and not args.only:
        update_readme(out, summary)
    return 1 if failed else 0


def update_readme(out: Path, summary: dict) -> None:
    """Replace the README's results section with the tables from the JSON files just written."""
    readme = BENCH_DIR / "README.md"
    if not readme.is_file():
        return
    m = summary["machine"]
    parts = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; "
             f"loadavg at start {m['loadavg']}, at end {summary['loadavg_end']}"
             + (" (machine shared with other jobs: treat absolute numbers as noisy)"
                if m["shared_machine"] or summary["loadavg_end"][0] > 1.5 else "")
             + f"; whole suite {summary['total_s'] / 60:.1f} min.", ""]
    for name in SCRIPTS:
        f = out / f"{name}.json"
        if not f.is_file():
            continue
        data = json.loads(f.read_text())
        for tname, text in data.get("tables", {}).items():
            parts += [f"**{name} / {tname}**", "", text, ""]
    text = readme.read_text(encoding="utf-8")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        readme.write_text(head + START + "\n" + "\n".join(parts) + "\n" + END + tail, encoding="utf-8")
        print(f"updated {readme}")


if __name__ == "__main__":
    sys.exit(main())
