"""Every feature set of a run through the classifier zoo, here or on worker processes.

At 10^2-10^4 rows a zoo spends its time in one core's Python and small solvers, so on a machine
with more cores the models are fitted on worker processes, each model of each feature set a task
of its own, while this process goes on extracting the next backbone. A feature set is planned
here (its data read, its zoo sized), its models and its few-shot curve go to the workers, longest
first, and each worker saves and records the model it fitted. The workers fork from a server that
imported the classify stack (and torch) once, so the first fit does not wait for its imports.
The rows, fitted models and log lines come back; this process logs the lines and ranks each set's
rows in the order the sets were given, so the run's leaderboard and console read as they do when
the zoos run one after another. Splitting by model rather than by feature set keeps every core
busy to the end: the last backbone's zoo no longer runs alone on one core after its extraction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits

from classify import budget as budgets
from classify import clock, progress, selection
from classify.config import ClassifyConfig
from classify.features import FeatureSet
from classify.fewshot import few_shot_curve
from classify.fit import fit
from classify.job import load, prepare
from classify.leaderboard import Leaderboard
from classify.outputs import Writer
from classify.plan import Budget, ModelPlan, ZooPlan
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
MAX_WORKERS = 16
LOADED = 2  # feature sets a worker keeps read: up to PARALLEL_MAX_ROWS rows each (100 MB at 1280-d)


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


@dataclass
class PlannedSet:
    """One feature set's comparison before it is fitted: its job, data, zoo and writer."""

    rec: dict
    key: str
    dataset: str
    name: str  # its folder under the run's classify/
    job: ClassifyConfig
    data: FeatureSet
    zoo: ZooPlan
    writer: Writer

    def classified(self, board: Leaderboard) -> Classified:
        """The set's compared rows, tagged with their backbone, store and dataset."""
        rec, tag = self.rec, {"dataset": self.dataset} if self.dataset else {}
        return Classified(
            rows=[dataclasses.replace(r, backbone=rec["backbone"], store=rec["store"], dataset=self.dataset)
                  for r in board.rows],
            skipped=[{**tag, "backbone": rec["backbone"], "feature": self.key, **s} for s in board.skipped],
            few_shot=[{**c, **tag} for c in board.few_shot], recorded={self.name: self.writer.recorded},
            metrics={self.zoo.metric})


def plan_set(cfg: RunConfig, rec: dict, key: str, out: Path, dataset: str, budget: RunBudget | None = None,
             step: Pass = Pass(), todo: int = 1) -> PlannedSet:
    """Feature set ``key`` of store ``rec``, read and its zoo planned (its folder under ``out``)."""
    cls = cfg.classify
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
    return PlannedSet(rec, key, dataset, name, job, data, zoo, writer)


def classify_one(cfg: RunConfig, rec: dict, key: str, out: Path, dataset: str, budget: RunBudget | None = None,
                 step: Pass = Pass(), todo: int = 1) -> Classified:
    """Feature set ``key`` of store ``rec`` through the zoo -> its rows, skipped models and few-shot
    curve, in memory (its files written under ``out``)."""
    started = time.perf_counter()
    planned = plan_set(cfg, rec, key, out, dataset, budget, step, todo)
    got = planned.classified(compare_zoo(planned.data, planned.zoo, planned.writer))
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
    """How many worker processes fit this run's models (``sets`` feature sets of ``rows`` rows at
    most): 0 (here, one set after another) for one core, ``--jobs 1``, Ray or large stores, and
    for stores whose zoos spread their own folds (``selection.PARALLEL_FROM`` rows)
    over more cores than one worker a set would use."""
    cores = os.cpu_count() or 1
    jobs = cfg.classify.jobs
    if not worker_server.likely_needed(sets, jobs, cfg.classify.engine) or rows > PARALLEL_MAX_ROWS:
        return 0
    if rows >= selection.PARALLEL_FROM and cores > sets + 1:
        return 0
    # One more worker than cores: a worker waiting on its data or on a pickled result leaves its
    # core to the others, and the extraction beside them waits on decoding now and then.
    return min(cores + 1 if jobs == -1 else jobs, MAX_WORKERS)


class _Collect(logging.Handler):
    """Keeps log records, made picklable, to be logged later as one block (here, or a worker's here)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


@contextlib.contextmanager
def _collecting() -> Iterator[list[logging.LogRecord]]:
    """What this process logs meanwhile, kept instead (for the set's block) -> the records."""
    collect = _Collect()
    root = logging.getLogger()
    handlers, root.handlers = root.handlers[:], [collect]
    try:
        yield collect.records
    finally:
        root.handlers = handlers


def _logged(fn: Callable, args: tuple, level: int) -> tuple[object, list[logging.LogRecord]]:
    """``fn(*args)`` on a worker, on one thread, its log lines kept -> (what it returned, or the
    error it raised; its log records)."""
    root = logging.getLogger()
    old_level, bars = root.level, progress.enabled()
    root.setLevel(level)
    progress.set_enabled(False)  # two processes drawing bars on one terminal would garble both
    if "torch" in sys.modules:  # one thread a worker: the workers share the cores, and idle OpenMP threads spin
        sys.modules["torch"].set_num_threads(1)
    with _collecting() as records:
        try:
            with threadpool_limits(limits=1), clock.cpu_seconds():  # the fits' seconds alone, not the shared cores'
                return fn(*args), records
        except BaseException as e:  # noqa: BLE001 - handed back with the lines logged before it
            return e, records
        finally:
            root.setLevel(old_level)
            progress.set_enabled(bars)


_loaded: dict[tuple, FeatureSet] = {}  # a worker's feature sets, by what they were read with


def _data(job: ClassifyConfig) -> FeatureSet:
    """The feature set ``job`` compares, read once per worker (its models come one at a time)."""
    key = (job.features, job.feature, job.allow_partial, job.train_on_views, job.tta)
    if key not in _loaded:
        while len(_loaded) >= LOADED:
            _loaded.pop(next(iter(_loaded)))
        _loaded[key] = load(job)[0]
    return _loaded[key]


def _fit_model(gflops: float, job: ClassifyConfig, plan: ModelPlan, folder: str) -> list[ResultRow]:
    """One planned model fitted on a worker, its files saved and recorded in ``folder``."""
    budgets.adopt_gflops(gflops)  # the run's rate, not this worker's under its siblings' load
    data = _data(job)
    return Writer(Path(folder), data, resume=False).record(plan, fit(plan, data))


def _few_shot(job: ClassifyConfig, seed: int) -> tuple[dict, float]:
    t = clock.now()
    return few_shot_curve(_data(job), seed=seed), clock.now() - t


def _log(records: list[logging.LogRecord]) -> None:
    for r in records:
        logger = logging.getLogger(r.name)
        if logger.isEnabledFor(r.levelno):
            logger.handle(r)


def _collected(future: Future) -> object:
    """A worker's result, after its log lines are logged here; its error raised here."""
    result, records = future.result()
    _log(records)
    if isinstance(result, BaseException):
        raise result
    return result


def _warm() -> int:
    return os.getpid()


@dataclass
class _Submitted:
    """A feature set on the workers: its plan, its models' and curve's waiters, what planning logged."""

    planned: PlannedSet
    fitted: dict[str, Callable[[], list[ResultRow]]]
    curve: Callable[[], tuple[dict, float]] | None
    records: list[logging.LogRecord]


class SetPool:
    """Feature sets' models fitted on ``workers`` processes as the sets are submitted;
    :meth:`results` returns the sets in submission order. The run keeps it for its ensembles
    (:meth:`call`), then leaves it: the workers end with it."""

    def __init__(self, workers: int, torch: bool = True):
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=worker_server.context(torch))
        self.submitted: list[_Submitted] = []
        # The server's imports take seconds and the first worker waits for them: start it on a
        # thread, so that this process goes on to extract (or to hand over the cached sets).
        threading.Thread(target=self.executor.submit, args=(_warm,), name="warm-set-workers", daemon=True).start()
        if torch:  # the votes and the audit need torch here later: import it now, beside the server's imports
            threading.Thread(target=importlib.import_module, args=("torch",), name="import-torch", daemon=True).start()

    def submit(self, cfg: RunConfig, rec: dict, out: Path, dataset: str, budget: RunBudget | None) -> None:
        """Plan each feature set of ``rec`` here and send its models to the workers, the longest
        first (their log lines are kept for :meth:`results`). Without a time budget: a model's
        plan does not depend on when it starts."""
        gflops = budgets.machine_gflops()
        one_job = dataclasses.replace(cfg, classify=dataclasses.replace(cfg.classify, jobs=1))
        for key in rec["features"]:
            log.info("%s %s: classifying on worker processes (its log follows when it is done)", rec["backbone"], key)
            with _collecting() as records:
                planned = plan_set(one_job, rec, key, out, dataset, budget)
            todo = [plan for plan in planned.zoo.models  # no time budget: within(plan, None) is the plan
                    if not plan.skip and planned.writer.recall(plan)[0] is None]  # resumed: no fit
            fitted = {plan.label: self.call(_fit_model, gflops, planned.job, plan, str(planned.writer.out))
                      for plan in sorted(todo, key=lambda plan: -plan.total_s)}
            curve = self.call(_few_shot, planned.job, planned.zoo.seed) if planned.zoo.few_shot else None
            self.submitted.append(_Submitted(planned, fitted, curve, records))

    def results(self) -> Classified:
        """Every submitted set's results, in order; each set's log lines are logged here as it is
        collected. The first error a model raised is raised here, after the lines logged before it."""
        got = Classified()
        for s in self.submitted:
            _log(s.records)
            p = s.planned
            got += p.classified(compare_zoo(p.data, p.zoo, p.writer, fitted=s.fitted, curve=s.curve))
        self.submitted = []
        return got

    def call(self, fn: Callable, *args: object) -> Callable[[], object]:
        """``fn(*args)`` started on a worker -> a function that waits for it, logs its lines here
        and returns its result (the models, and the ensembles' concatenated fits)."""
        future = self.executor.submit(_logged, fn, args, logging.getLogger().getEffectiveLevel())
        return lambda: _collected(future)

    def __enter__(self) -> SetPool:
        return self

    def __exit__(self, *exc: object) -> None:
        # Not waiting: a worker's exit took ~1 s, which it spends beside the report.
        self.executor.shutdown(wait=False, cancel_futures=True)
