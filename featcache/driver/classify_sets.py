"""Every feature set of a run through the classifier zoo, here or on worker processes.

At 10^2-10^4 rows a zoo spends its time in one core's Python and small solvers, so on a machine
with more cores several feature sets are classified at once, each on a worker process, while this
process goes on extracting the next backbone. The workers fork from a server that imported the
classify stack (and torch) once, so the first zoo does not wait for its imports. Each worker
classifies one feature set with one job; its rows, fitted models and log lines come back, and
this process logs the lines and keeps the results in the order the sets were given, so the run's
leaderboard and console read as they do when the zoos run one after another.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits

from classify import budget as budgets
from classify import progress, selection
from classify.job import prepare
from classify.outputs import Writer
from classify.plan import Budget
from classify.zoo import compare_zoo
from featcache.common.files import safe_name
from featcache.driver import worker_server
from featcache.driver.budget import RunBudget
from featcache.driver.config import RunConfig
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)

# Feature sets are classified on workers only while a store is at most this many rows: above it a
# zoo's sweeps and solvers use every core themselves, and its fitted models are large to send back.
PARALLEL_MAX_ROWS = 20_000


@dataclass(frozen=True)
class Pass:
    """Which zoo a pass of :func:`classify_all` runs: ``models`` (None: the run's), whether it is
    the first pass of a time budget (fast models only, no few-shot curve, its seconds recorded),
    how many feature sets come after these stores, and what an earlier pass fitted (by folder)."""

    models: tuple[str, ...] | None = None
    first: bool = False
    sets_after: int = 0
    reuse: dict = field(default_factory=dict)  # classify folder name -> its Writer's recorded rows


@dataclass
class Classified:
    """What :func:`classify_all` returns, all in memory."""

    rows: list[ResultRow] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    few_shot: list[dict] = field(default_factory=list)
    recorded: dict = field(default_factory=dict)  # classify folder name -> rows by ledger key (Pass.reuse)
    metrics: set = field(default_factory=set)  # what ranked each feature set (--metric auto, resolved)

    def __iadd__(self, other: Classified) -> Classified:
        self.rows += other.rows
        self.skipped += other.skipped
        self.few_shot += other.few_shot
        self.recorded.update(other.recorded)
        self.metrics |= other.metrics
        return self

    def metric(self, asked: str) -> str:
        """The dataset's ranking metric: balanced accuracy when any of its feature sets' zoo chose it."""
        return asked if asked != "auto" else joint_metric(self.metrics)


def joint_metric(metrics: set[str]) -> str:
    """One ranking metric for rows ranked by several: balanced accuracy when any chose it (on
    balanced classes it is close to accuracy; on imbalanced ones accuracy rewards the prior)."""
    return "balanced_accuracy" if "balanced_accuracy" in metrics else "accuracy"


def zoo_budget(budget: RunBudget | None, rec: dict, cfg: RunConfig, todo: int) -> Budget:
    """One feature set's budget: an equal share of what is left of a time budget, or under
    ``--budget auto`` its backbone's allowance (sizing the default zoo only: models named on the
    command line all run)."""
    cls = cfg.classify
    if budget is None:
        return Budget()
    auto = budget.auto and "all" not in cls.models and "default" in cls.models
    return Budget(seconds=budget.share(todo),
                  allowance_s=budget.allowance(rec["backbone"], rec["rows"] or 0, len(rec["features"])) if auto else None)


def classify_one(cfg: RunConfig, rec: dict, key: str, out: Path, dataset: str, budget: RunBudget | None = None,
                 step: Pass = Pass(), todo: int = 1) -> Classified:
    """Feature set ``key`` of store ``rec`` through the zoo -> its rows, skipped models and few-shot
    curve, in memory (its files written under ``out``)."""
    cls = cfg.classify
    started = time.perf_counter()
    name = safe_name(f"{rec['backbone']}__{key}")
    log.info("classifying %s%s %s with %s", f"{dataset}: " if dataset else "", rec["backbone"], key,
             ",".join(cls.models))
    tb = str(Path(cls.tensorboard) / (f"{dataset}__" if dataset else "") / name) if cls.tensorboard else None
    job = cls.job(features=rec["store"], out=str(out / name), feature=key, tensorboard=tb,
                  models=tuple(step.models or cls.models), few_shot=cls.few_shot and not step.first,
                  allow_partial=cls.allow_partial and rec["status"] == "given")
    data, zoo = prepare(job, zoo_budget(budget, rec, cfg, todo))
    writer = Writer(out / name, data, resume=cls.resume, reuse=step.reuse.get(name))
    (out / name / "models").mkdir(parents=True, exist_ok=True)
    board = compare_zoo(data, zoo, writer)
    tag = {"dataset": dataset} if dataset else {}
    got = Classified(
        rows=[dataclasses.replace(r, backbone=rec["backbone"], store=rec["store"], dataset=dataset) for r in board.rows],
        skipped=[{**tag, "backbone": rec["backbone"], "feature": key, **s} for s in board.skipped],
        few_shot=[{**c, **tag} for c in board.few_shot], recorded={name: writer.recorded}, metrics={zoo.metric})
    if step.first:
        budget.classify_s.append(time.perf_counter() - started)
    return got


def classify_all(cfg: RunConfig, stores: list[dict], out: Path, dataset: str, budget: RunBudget | None = None,
                 step: Pass = Pass()) -> Classified:
    """Every feature set of every store through the zoo, one after another, in this process.

    With a run ``budget``, each feature set's zoo gets an equal share of what is left, counting
    ``step.sets_after`` feature sets still to come after these stores."""
    got = Classified()
    todo = sum(len(rec["features"]) for rec in stores) + step.sets_after
    for rec in stores:
        for key in rec["features"]:
            got += classify_one(cfg, rec, key, out, dataset, budget, step, todo)
            todo -= 1
    return got


# -- on worker processes


def workers_for(cfg: RunConfig, sets: int, rows: int) -> int:
    """How many worker processes classify this run's ``sets`` feature sets of ``rows`` rows at
    most: 0 (here, one after another) for one set, one core, ``--jobs 1``, Ray or large stores,
    and for stores whose zoos spread their own folds (``selection.PARALLEL_FROM`` rows) over more
    cores than one worker a set would use."""
    cores = os.cpu_count() or 1
    jobs = cfg.classify.jobs
    if not worker_server.likely_needed(sets, jobs, cfg.classify.engine) or rows > PARALLEL_MAX_ROWS:
        return 0
    if rows >= selection.PARALLEL_FROM and cores > sets + 1:
        return 0
    # One more worker than cores: three sets on two cores then finish together instead of the third
    # starting when the first two are done.
    return min(sets, cores + 1 if jobs == -1 else jobs)


class _Collect(logging.Handler):
    """Keeps a worker's log records, made picklable, for this process to log."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _logged(fn: Callable, args: tuple, level: int) -> tuple[object, list[logging.LogRecord]]:
    """``fn(*args)`` on a worker, on one thread, its log lines kept -> (what it returned, or the
    error it raised; its log records)."""
    collect = _Collect()
    root = logging.getLogger()
    handlers, old_level, bars = root.handlers[:], root.level, progress.enabled()
    root.handlers = [collect]
    root.setLevel(level)
    progress.set_enabled(False)  # two processes drawing bars on one terminal would garble both
    if "torch" in sys.modules:  # one thread a worker: the workers share the cores, and idle OpenMP threads spin
        sys.modules["torch"].set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return fn(*args), collect.records
    except BaseException as e:  # noqa: BLE001 - handed back with the lines logged before it
        return e, collect.records
    finally:
        root.handlers = handlers
        root.setLevel(old_level)
        progress.set_enabled(bars)


def _classify_with_one_job(gflops: float, cfg: RunConfig, *args: object) -> Classified:
    budgets.adopt_gflops(gflops)  # the run's rate, not this worker's under its siblings' load
    return classify_one(dataclasses.replace(cfg, classify=dataclasses.replace(cfg.classify, jobs=1)), *args)


def _collected(future: Future) -> object:
    """A worker's result, after its log lines are logged here; its error raised here."""
    result, records = future.result()
    for r in records:
        logger = logging.getLogger(r.name)
        if logger.isEnabledFor(r.levelno):
            logger.handle(r)
    if isinstance(result, BaseException):
        raise result
    return result


def _warm() -> int:
    return os.getpid()


class SetPool:
    """Feature sets classified on ``workers`` processes as they are submitted; :meth:`results`
    returns them in submission order. The run keeps it for its ensembles (:meth:`call`), then
    leaves it: the workers end with it."""

    def __init__(self, workers: int, torch: bool = True):
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=worker_server.context(torch))
        self.futures: list[Future] = []
        # The server's imports take seconds and the first worker waits for them: start it on a
        # thread, so that this process goes on to extract (or to hand over the cached sets).
        threading.Thread(target=self.executor.submit, args=(_warm,), name="warm-set-workers", daemon=True).start()
        if torch:  # the votes and the audit need torch here later: import it now, beside the server's imports
            threading.Thread(target=importlib.import_module, args=("torch",), name="import-torch", daemon=True).start()

    def submit(self, cfg: RunConfig, rec: dict, out: Path, dataset: str, budget: RunBudget | None) -> None:
        level, gflops = logging.getLogger().getEffectiveLevel(), budgets.machine_gflops()
        for key in rec["features"]:
            log.info("%s %s: classifying on a worker process (its log follows when it is done)", rec["backbone"], key)
            self.futures.append(self.executor.submit(_logged, _classify_with_one_job,
                                                     (gflops, cfg, rec, key, out, dataset, budget), level))

    def results(self) -> Classified:
        """Every submitted set's results, in order; each set's log lines are logged here as it is
        collected. The first error a set raised is raised here, after the lines logged before it."""
        got = Classified()
        for future in self.futures:
            got += _collected(future)
        self.futures = []
        return got

    def call(self, fn: Callable, *args: object) -> Callable[[], object]:
        """``fn(*args)`` started on a worker -> a function that waits for it, logs its lines here
        and returns its result (the ensembles' concatenated fits, side by side)."""
        future = self.executor.submit(_logged, fn, args, logging.getLogger().getEffectiveLevel())
        return lambda: _collected(future)

    def __enter__(self) -> SetPool:
        return self

    def __exit__(self, *exc: object) -> None:
        # Not waiting: a worker's exit took ~1 s, which it spends beside the report.
        self.executor.shutdown(wait=False, cancel_futures=True)
