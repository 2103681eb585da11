"""Peak memory of the processes under test, sampled from /proc by a thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from nova_bench.common import SAMPLE_INTERVAL
from nova_bench.processes import descendants, proc_parents


def _read_memory(pid: int) -> tuple[int, int, int, str] | None:
    """(VmRSS kB, VmHWM kB, Pss kB, name) of a process, or None if it is gone."""
    rss = hwm = pss = 0
    name = "?"
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except (OSError, ValueError):
        return None
    return rss, hwm, pss, name


@dataclass
class MemoryPeak:
    rss_kb: int = 0  # largest sum of VmRSS over the tree in one sample
    pss_kb: int = 0  # largest sum of Pss over the tree in one sample
    hwm_kb: int = 0  # largest VmHWM of any single process of the tree
    hwm_name: str = ""
    hwm_by_name: dict[str, int] = field(default_factory=dict)  # largest VmHWM per program
    processes: int = 0  # processes in the tree at the RSS peak
    samples: int = 0


class MemorySampler(threading.Thread):
    """Samples the process trees of named roots every SAMPLE_INTERVAL seconds.

    Peaks are kept per (root name, label); the main thread sets ``label`` to the case it
    is measuring, so every solve gets its own peak.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self._lock = threading.Lock()
        self._roots: dict[str, int] = {}
        self._halt = threading.Event()  # not _stop: that is a Thread method (called after fork)
        self.label = "idle"
        self.peaks: dict[tuple[str, str], MemoryPeak] = {}
        # Set while the poll load runs: reading /proc ten times a second is not the service's
        # work, and it would take CPU from the server being measured.
        self.paused = threading.Event()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._roots[name] = pid

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._roots.pop(name, None)

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_INTERVAL):
            if self.paused.is_set():
                continue
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failed sample must never stop the benchmark
                continue

    def sample(self) -> None:
        with self._lock:
            roots = dict(self._roots)
        label = self.label
        if not roots:
            return
        parents = proc_parents()
        for name, root in roots.items():
            rss = pss = count = 0
            top = (0, "")
            by_name: dict[str, int] = {}
            for pid in [root, *descendants(root, parents)]:
                memory = _read_memory(pid)
                if memory is None:
                    continue
                rss += memory[0]
                pss += memory[2]
                count += 1
                by_name[memory[3]] = max(by_name.get(memory[3], 0), memory[1])
                if memory[1] > top[0]:
                    top = (memory[1], memory[3])
            if count == 0:
                continue
            with self._lock:
                peak = self.peaks.setdefault((name, label), MemoryPeak())
                peak.samples += 1
                if rss > peak.rss_kb:
                    peak.rss_kb, peak.processes = rss, count
                peak.pss_kb = max(peak.pss_kb, pss)
                if top[0] > peak.hwm_kb:
                    peak.hwm_kb, peak.hwm_name = top
                for program, hwm in by_name.items():
                    peak.hwm_by_name[program] = max(peak.hwm_by_name.get(program, 0), hwm)

    def get(self, name: str, label: str) -> MemoryPeak | None:
        with self._lock:
            return self.peaks.get((name, label))


# -- bare solve-field -----------------------------------------------------------------------
