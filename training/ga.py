"""Genetic-algorithm feature selection over binary masks, with DEAP's operators.

An individual is a mask over the backbone's features. Its fitness is the validation accuracy
of a small RandomForest fitted on the masked training features, minus ``penalty`` times the
fraction of features kept (so, between two equally accurate masks, the smaller one wins).
The forest's seed is the same for every mask, so two masks differ in fitness because of
their features, not because of the forest's dice.

DEAP supplies the machinery (tournament selection, uniform crossover, bit-flip mutation,
cloning, statistics, logbook, hall of fame). The generation loop is written out because
DEAP's ready-made ``eaSimple`` has neither elitism nor an early stop; it is ``varAnd``
plus those two. sklearn-genetic-opt's ``GAFeatureSelectionCV`` was the other candidate: it
scores by k-fold CV of the full estimator (k times the cost per mask on 2 cores) and has
no notion of FER's fixed validation split.

Fitness runs in parallel across individuals (a spawn-started process pool, ``jobs``), each
forest on one thread: a generation has 20+ masks to score and only 2 cores here, so the
whole fit-and-score of a mask is the unit of work, with no per-tree synchronisation; the
forest's seed makes the result the same for any ``jobs``. Masks already scored are not
scored again.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from deap import algorithms, base, creator, tools

if not hasattr(creator, "GAMask"):  # creator classes are process-global; create them once
    creator.create("GAFitness", base.Fitness, weights=(1.0,))
    creator.create("GAMask", list, fitness=creator.GAFitness, accuracy=None)


@dataclass
class ForestFitness:
    """Fitness of a mask: validation accuracy of a RandomForest on the masked features, minus a size penalty."""

    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    trees: int = 50
    penalty: float = 0.0
    seed: int = 0

    def __call__(self, mask: np.ndarray) -> tuple[float, float]:
        """``(fitness, accuracy)`` of a boolean mask; an empty mask scores 0."""
        from sklearn.ensemble import RandomForestClassifier

        if not mask.any():
            return 0.0, 0.0
        forest = RandomForestClassifier(n_estimators=self.trees, n_jobs=1, random_state=self.seed)
        forest.fit(self.x_fit[:, mask], self.y_fit)
        accuracy = float((forest.predict(self.x_val[:, mask]) == self.y_val).mean())
        return accuracy - self.penalty * float(mask.mean()), accuracy


@dataclass
class GAConfig:
    population: int = 24
    generations: int = 15
    crossover: float = 0.7  # probability that a pair of parents is mated (uniform crossover)
    mutation: float = 0.5  # probability that a child is mutated ...
    flip: float | None = None  # ... and then each bit's flip probability (default 2 / n_features)
    tournament: int = 3
    elite: int = 2  # best masks copied unchanged into the next generation
    init_fraction: float = 0.5  # share of features switched on in the first generation
    patience: int = 5  # stop after this many generations without a better best fitness
    min_delta: float = 1e-4
    seed: int = 0
    jobs: int = 1  # processes scoring masks in parallel

    def check(self) -> None:
        if self.population < 2 or self.generations < 0 or not 0 <= self.elite < self.population:
            raise ValueError("need population >= 2, generations >= 0 and 0 <= elite < population")
        if self.tournament < 1 or self.jobs < 1 or self.patience < 1:
            raise ValueError("tournament, jobs and patience must be at least 1")


@dataclass
class GAResult:
    mask: np.ndarray
    fitness: float
    accuracy: float
    history: list[dict] = field(default_factory=list)  # one row per generation (0 = the random start)
    evaluations: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def summary(self) -> dict:
        d = asdict(self)
        d["mask"] = np.flatnonzero(self.mask).tolist()
        d["selected"], d["n_features"] = int(self.mask.sum()), int(len(self.mask))
        return d


_WORKER_FITNESS: Callable | None = None


def _init_worker(fitness: Callable) -> None:
    global _WORKER_FITNESS
    _WORKER_FITNESS = fitness


def _score_in_worker(mask: np.ndarray) -> tuple[float, float]:
    return _WORKER_FITNESS(mask)


def select_features(fitness: Callable[[np.ndarray], tuple[float, float]], n_features: int,
                    cfg: GAConfig = GAConfig(), report: Callable[[dict], None] | None = None) -> GAResult:
    """Evolve masks over ``n_features`` to maximise ``fitness`` (returns ``(fitness, accuracy)``)."""
    cfg.check()
    saved = random.getstate()  # DEAP draws from the global ``random``: seed it, then give it back
    random.seed(cfg.seed)
    pool = (multiprocessing.get_context("spawn").Pool(cfg.jobs, _init_worker, (fitness,)) if cfg.jobs > 1
            else None)
    try:
        return _evolve(fitness, n_features, cfg, pool, report)
    finally:
        random.setstate(saved)
        if pool is not None:
            pool.terminate()


def _evolve(fitness, n_features: int, cfg: GAConfig, pool, report) -> GAResult:
    tb = base.Toolbox()
    tb.register("individual", tools.initRepeat, creator.GAMask, lambda: random.random() < cfg.init_fraction,
                n_features)
    tb.register("mate", tools.cxUniform, indpb=0.5)
    tb.register("mutate", tools.mutFlipBit, indpb=cfg.flip or min(1.0, 2.0 / n_features))
    tb.register("select", tools.selTournament, tournsize=cfg.tournament)
    def score_many(masks: list[np.ndarray]) -> list[tuple[float, float]]:
        return pool.map(_score_in_worker, masks) if pool else [fitness(m) for m in masks]

    stats = tools.MultiStatistics(fitness=tools.Statistics(lambda ind: ind.fitness.values[0]),
                                  size=tools.Statistics(sum))
    stats.register("mean", np.mean)
    stats.register("max", np.max)
    hof = tools.HallOfFame(1)
    cache: dict[bytes, tuple[float, float]] = {}
    started = time.time()

    def evaluate(individuals) -> int:
        """Score the individuals without a fitness; returns how many masks were actually fitted."""
        todo = [ind for ind in individuals if not ind.fitness.valid]
        keys = [np.asarray(ind, bool).tobytes() for ind in todo]
        new = list(dict.fromkeys(k for k in keys if k not in cache))
        cache.update(zip(new, score_many([np.frombuffer(k, bool) for k in new])))
        for ind, key in zip(todo, keys):
            ind.fitness.values, ind.accuracy = (cache[key][0],), cache[key][1]
        return len(new)

    def record(gen: int, population, fitted: int) -> dict:
        hof.update(population)
        s = stats.compile(population)
        best = hof[0]
        row = {"generation": gen, "fitted": fitted, "best_fitness": best.fitness.values[0],
               "best_accuracy": best.accuracy, "best_size": int(sum(best)), "mean_fitness": float(s["fitness"]["mean"]),
               "max_fitness": float(s["fitness"]["max"]), "mean_size": float(s["size"]["mean"]),
               "seconds": round(time.time() - started, 2)}
        history.append(row)
        if report:
            report(row)
        return row

    history: list[dict] = []
    population = [tb.individual() for _ in range(cfg.population)]
    fitted = evaluate(population)
    record(0, population, fitted)
    best_so_far, stalled, stopped_early = hof[0].fitness.values[0], 0, False
    for gen in range(1, cfg.generations + 1):
        elite = [tb.clone(ind) for ind in tools.selBest(population, cfg.elite)]
        offspring = algorithms.varAnd(tb.select(population, cfg.population - cfg.elite), tb, cfg.crossover,
                                      cfg.mutation)
        n = evaluate(offspring)
        fitted += n
        population = elite + offspring
        row = record(gen, population, n)
        if row["best_fitness"] > best_so_far + cfg.min_delta:
            best_so_far, stalled = row["best_fitness"], 0
        else:
            stalled += 1
        if stalled >= cfg.patience:
            stopped_early = True
            break
    best = hof[0]
    return GAResult(np.asarray(best, bool), best.fitness.values[0], best.accuracy, history, fitted,
                    round(time.time() - started, 1), stopped_early)


def plot_history(history: list[dict], path: Path, title: str = "GA feature selection") -> None:
    """Best and mean fitness, and best and mean mask size, per generation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens = [r["generation"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(gens, [r["best_fitness"] for r in history], "-o", ms=3, label="best fitness")
    ax1.plot(gens, [r["best_accuracy"] for r in history], "--", label="best's val accuracy")
    ax1.plot(gens, [r["mean_fitness"] for r in history], "-", alpha=0.7, label="mean fitness")
    ax1.set_ylabel("fitness / accuracy")
    ax2.plot(gens, [r["best_size"] for r in history], "-o", ms=3, label="best mask")
    ax2.plot(gens, [r["mean_size"] for r in history], "-", alpha=0.7, label="mean mask")
    ax2.set_ylabel("features selected")
    for ax in (ax1, ax2):
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
