"""``CollectReport``: what a collection run did, counted from its workers' events."""

from __future__ import annotations

import dataclasses

from icrl.collect.units import Event


@dataclasses.dataclass
class CollectReport:
    """What a collection run did. ``planned`` counts the episodes that were missing at start."""

    store: str
    tasks: int
    levels: int
    episodes_per_level: int
    already_stored: int = 0
    planned: int = 0
    stored: int = 0
    dropped: int = 0  # failed attempts not stored
    gave_up: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    attempts: int = 0
    successes: int = 0
    steps: int = 0
    stored_steps: int = 0
    seconds: float = 0.0
    workers: int = 0
    dead_workers: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    unreported: int = 0  # episodes a dead worker stored without reporting them (counted in ``stored``)

    @property
    def done(self) -> int:
        """Episodes resolved this run: stored or given up."""
        return self.stored + len(self.gave_up)

    @property
    def unfinished(self) -> int:
        """Planned episodes neither stored nor given up (a dead worker, an interrupt)."""
        return self.planned - self.done

    @property
    def complete(self) -> bool:
        return self.unfinished == 0 and not self.dead_workers

    def add(self, ev: Event) -> None:
        if ev.outcome != "gave_up":
            self.attempts += 1
            self.successes += ev.success
            self.steps += ev.steps
        if ev.outcome == "stored":
            self.stored += 1
            self.stored_steps += ev.steps
        elif ev.outcome == "dropped":
            self.dropped += 1
        else:
            self.gave_up.append((ev.task, ev.level, ev.episode))

    def summary(self) -> str:
        """A few lines for people: counts, rates, and what to do about anything missing."""
        lines = [
            f"store {self.store}: {self.tasks} tasks x {self.levels} levels x {self.episodes_per_level} episodes; "
            f"{self.already_stored:,} already stored, {self.planned:,} to play",
        ]
        if not self.planned:
            return "\n".join(lines + ["nothing to do: every episode is stored"])
        where = f"{self.workers} worker process(es)" if self.workers else "this process"
        rate = max(self.seconds, 1e-9)
        lines += [
            f"stored {self.stored:,} episodes ({self.stored_steps:,} steps) in {self.seconds:.1f} s in "
            f"{where}: {self.stored / rate:.2f} episodes/s, {self.steps / rate:,.0f} steps/s",
            f"attempts {self.attempts:,}, successful {self.successes:,}"
            + (f" ({100 * self.successes / self.attempts:.1f}%)" if self.attempts else "")
            + f"; failed attempts dropped {self.dropped:,}; episodes given up {len(self.gave_up):,}",
        ]
        for task, level, episode in self.gave_up[:10]:
            lines.append(f"  gave up: {task} level {level} episode {episode} (every attempt failed)")
        if len(self.gave_up) > 10:
            lines.append(f"  ... and {len(self.gave_up) - 10} more given up")
        for dead in self.dead_workers:
            lines.append(f"worker died: {dead}")
        if self.unreported:
            lines.append(f"{self.unreported:,} of the stored episodes were found in the store: a dead worker had "
                         "stored them without reporting them (their steps are not in the counts above)")
        if self.interrupted:
            lines.append("interrupted")
        if self.unfinished:
            lines.append(f"{self.unfinished:,} episodes unfinished: run the same command again to collect them")
        return "\n".join(lines)
