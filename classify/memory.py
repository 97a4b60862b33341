"""Will a feature set fit in memory? Checked before it is read, so a store too big for the machine
gets one clear line instead of an out-of-memory kill without a word.

The limit is the smallest of what the kernel says is available, the cgroup's (a container's or a
batch job's) limit less its usage, and the address-space rlimit less what this process maps.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

from featcache.common.errors import NotEnoughMemory, fmt_bytes

log = logging.getLogger(__name__)

FLOAT32 = 4


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes() -> tuple[int | None, str]:
    """(bytes this process can still allocate, what limits it); (None, "") where nothing says."""
    limits: list[tuple[int, str]] = []
    avail = _meminfo("MemAvailable")
    if avail is not None:
        limits.append((avail, "available memory"))
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):
            limits.append((max(0, limit - usage), "the cgroup's memory limit"))
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    vm = _vm_size()
    if soft != resource.RLIM_INFINITY and vm is not None:
        limits.append((max(0, soft - vm), "the address-space limit (ulimit -v)"))
    if not limits:
        return None, ""
    return min(limits)


def check_fits(store: str, feature: str, rows: int, dim: int, itemsize: int, view_values: int = 0) -> None:
    """Refuse to read what cannot be held, and warn when the fits may run short.

    Reading takes rows x dim in the store's dtype; the models then work on a float32 copy (and
    sweeps and scalers on more). Refused when the read and one float32 copy do not fit; a
    warning when two float32 copies do not."""
    values = rows * dim + view_values
    stored, working = values * itemsize, values * FLOAT32
    free, what = available_bytes()
    if free is None:
        return
    if stored + working > free:
        raise NotEnoughMemory(
            f"{store}: {feature} needs about {fmt_bytes(stored + working)} of memory ({rows} rows x {dim} values"
            f"{f' + {view_values // max(dim, 1)} view rows' if view_values else ''}, read as stored and copied "
            f"to float32) and {what} leaves {fmt_bytes(free)}; use a smaller feature set (--feature), a float16 "
            "store, or a machine with more memory")
    if stored + 2 * working > free:
        log.warning("%s: %s takes %s to read and %s per float32 copy, and %s leaves %s: models that copy it "
                    "(scalers, sweeps) may run out of memory", store, feature, fmt_bytes(stored), fmt_bytes(working),
                    what, fmt_bytes(free))
