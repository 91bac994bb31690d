"""Shared helpers for the benchmark scripts: machine header, tables, JSON results, timing, memory.

No TensorFlow at import time (scripts choose thread settings before TF starts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SHARED_DATA = Path(os.environ.get("MEDDX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def parser(description: str) -> argparse.ArgumentParser:
    """The common command line: --quick and --results-dir."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script (numbers meaningless)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where to write the JSON (default benchmarks/results, or benchmarks/results/quick with --quick)")
    return p


def results_dir(args: argparse.Namespace) -> Path:
    d = args.results_dir or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 -- a missing package is just "not installed"
        return None


def git_state() -> str | None:
    """HEAD commit (short) plus '+dirty' when src/ has uncommitted changes: which code was measured."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty(src)" if dirty else "")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, date, load average and library versions (no TF import needed)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    load = os.getloadavg()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "ram_gib": _ram_gib(),
        "loadavg": [round(v, 2) for v in load],
        "shared_machine": load[0] > 1.5,
        "python": platform.python_version(),
        "git": git_state(),
        "versions": {m: _version(m) for m in ("meddx", "tensorflow", "keras", "numpy", "SimpleITK", "pydicom",
                                              "scikit-image")},
    }


def print_header(title: str, info: dict[str, Any]) -> None:
    v = ", ".join(f"{k} {val}" for k, val in info["versions"].items() if val)
    load = info["loadavg"]
    note = "  (load > 1.5: machine shared, numbers noisy)" if info["shared_machine"] else ""
    print(f"== {title} ==")
    print(f"{info['date']}  {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
          f"{info['ram_gib']} GiB RAM")
    print(f"loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}{note}")
    print(f"python {info['python']}, {v}; meddx git {info.get('git')}")
    sys.stdout.flush()


def fmt(v: Any) -> str:
    """Compact number formatting for tables (3 significant digits, thousands as integers)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text (also Markdown-compatible) table of dict rows."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out)


def write_results(args: argparse.Namespace, name: str, info: dict[str, Any], payload: dict[str, Any],
                  tables: dict[str, str]) -> Path:
    """benchmarks/results/<name>.json (temp name + rename), holding the machine header, results and tables."""
    out = results_dir(args) / f"{name}.json"
    data = {"benchmark": name, "quick": bool(args.quick), "machine": info, **payload, "tables": tables}
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return out


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs, dtype=float), q)) if len(xs) else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


# -- memory ------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB: VmHWM (resettable) or ru_maxrss."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float | None:
    v = _status_kib("VmRSS")
    return None if v is None else v / 1024


class EpochTimer:
    """Keras callback collecting per-epoch wall times (perf_counter)."""

    def __new__(cls) -> Any:
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.times: list[float] = []

            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self.times.append(time.perf_counter() - self._t)

        return _Timer()
