"""The episode state machine shared by the detectors that watch a condition over time.

An episode opens once the condition holds for `for_ms` of event time (its start is the
first reading of that run, its id `contract.alert_id(patient, rule, start)`), and resolves
once the readings are back beyond the clear level (hysteresis) without a break for
`clear_for_ms`. A pending run survives dips (readings that do not breach; a dip lasts
from its first reading to the next breaching one) while their total within the run stays
below `dip_ms`; then it breaks (with `dip_ms` 0, any non-breaching reading breaks it). A
value at a limit wobbles across it, and a reading a little under it must not restart the
persistence clock; the total keeps a condition that holds only now and then from
counting as sustained. Readings that neither breach nor clear (between the two levels)
restart the clear delay.

The machine runs over a window in event-time order and runs again from a late reading's
place (windows.py). What it emitted is a fact that late data cannot take back, so every
run is reconciled with the `EpisodeLog` of emitted episodes:

- an episode the log already holds is not emitted again (recompute, silent replay);
- a run that reaches persistence inside an emitted episode's span joins that episode
  (late data moved the run's start: no second alert for the same desaturation);
- an earlier episode revealed by late data is emitted as an opened/resolved pair once it
  resolves before the next emitted episode starts, and joins that episode otherwise;
- at an emitted episode's opening (or resolution) time the machine is put into that
  episode (or out of it) even where late data now tell another story.

So emitted episodes of one series and rule never overlap in event time, each id is
opened at most once and resolved at most once, after its opening. Where late data do not
contradict an emitted decision, the result is the same as for ordered input.

Suppression of repeats: an episode that opens less than `suppress_ms` after an emitted
episode of the same series and rule resolved is emitted `suppressed` (recorded, not to be
paged), and so is its resolution. It is decided from the log, so it is the same on replay
and for any arrival order that reproduces the same episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Protocol


class Condition(Protocol):
    """What a detector watches: a per-reading condition with persistence and hysteresis."""

    @property
    def rule(self) -> str: ...
    @property
    def for_ms(self) -> int: ...
    @property
    def clear_for_ms(self) -> int: ...
    def breaches(self, value: float) -> bool: ...
    def clears(self, value: float) -> bool: ...
    def worse(self, a: float, b: float) -> float: ...


class Phase(IntEnum):
    IDLE = 0
    PENDING = 1  # the condition holds, not yet for long enough
    OPEN = 2


# `Phase.OPEN` is looked up through the enum's descriptor on every use (~0.1 us on 3.11);
# the machine, which checks the phase several times per reading, uses these names.
_IDLE, _PENDING, _OPEN = Phase.IDLE, Phase.PENDING, Phase.OPEN


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True, unsafe_hash=True)
class EpisodeState:
    phase: Phase = Phase.IDLE
    start: int = 0  # PENDING: first reading of the run; OPEN: the episode's start (its id)
    worst: float = 0.0
    clear_since: int | None = None  # OPEN: first reading of the current clear run
    dip_since: int | None = None  # PENDING: first reading of the current dip
    dipped: int = 0  # PENDING: the run's earlier dips, in total
    # OPEN but not emitted yet: an earlier episode that late data revealed (see module doc)
    tentative: bool = False
    opened_at: int = 0
    opened_value: float = 0.0
    opened_device: str = ""


IDLE = EpisodeState()


@dataclass(frozen=True, slots=True)
class Change:
    """A state change the machine emitted: becomes a contract.Detection in the engine."""

    state: str  # "opened" | "resolved"
    start: int
    at: int
    value: float  # the worst value of the episode so far
    device_id: str
    suppressed: bool = False  # a repeat within the rule's suppression window


@dataclass(slots=True)
class Episode:
    """An emitted episode."""

    start: int
    opened_at: int
    value: float
    resolved_at: int | None = None
    suppressed: bool = False

    @property
    def end(self) -> float:
        return math.inf if self.resolved_at is None else self.resolved_at


class EpisodeLog:
    """The episodes of one series and rule already emitted: facts late data cannot undo."""

    __slots__ = ("_episodes",)

    def __init__(self) -> None:
        self._episodes: dict[int, Episode] = {}

    def __len__(self) -> int:
        return len(self._episodes)

    def get(self, start: int) -> Episode | None:
        return self._episodes.get(start)

    def copy(self) -> EpisodeLog:
        """A copy whose episodes are copies (resolving one changes it in place)."""
        made = EpisodeLog()
        made._episodes = {s: replace(e) for s, e in self._episodes.items()}
        return made

    def add(self, episode: Episode) -> None:
        self._episodes[episode.start] = episode

    def open_episode(self) -> Episode | None:
        return next((e for e in self._episodes.values() if e.resolved_at is None), None)

    def overlapping(self, lo: int, hi: int) -> Episode | None:
        """An emitted episode whose span [start, end) meets [lo, hi]."""
        return next((e for e in self._episodes.values() if e.start <= hi and e.end > lo), None)

    def next_after(self, t: int) -> Episode | None:
        later = [e for e in self._episodes.values() if e.start > t]
        return min(later, key=lambda e: e.start) if later else None

    def pins(self, after: int | None, upto: int) -> list[tuple[int, bool, Episode]]:
        """Emitted openings (True) and resolutions (False) in (after, upto], in time order."""
        lo = -math.inf if after is None else after
        found: list[tuple[int, bool, Episode]] = []
        for e in self._episodes.values():
            if lo < e.opened_at <= upto:
                found.append((e.opened_at, True, e))
            if e.resolved_at is not None and lo < e.resolved_at <= upto:
                found.append((e.resolved_at, False, e))
        found.sort(key=lambda pin: (pin[0], not pin[1]))
        return found

    def resolved_within(self, lo: int, hi: int) -> bool:
        """An emitted episode resolved at a time in (lo, hi]."""
        return any(
            e.resolved_at is not None and lo < e.resolved_at <= hi for e in self._episodes.values()
        )

    def prune(self, before: int) -> None:
        """Forget resolved episodes that ended before `before` (out of every window)."""
        for start in [s for s, e in self._episodes.items() if e.end < before]:
            del self._episodes[start]


class EpisodeMachine:
    """Runs one condition over one series; `step` is the windows' recompute step."""

    __slots__ = ("condition", "suppress_ms", "dip_ms", "log", "conflicts")

    def __init__(self, condition: Condition, suppress_ms: int = 0, dip_ms: int = 0) -> None:
        self.condition = condition
        self.suppress_ms = suppress_ms
        self.dip_ms = dip_ms
        self.log = EpisodeLog()
        self.conflicts = 0  # decisions late data contradicted (kept, see module doc)

    @property
    def is_quiet(self) -> bool:
        """No emitted episode is open (the series may be forgotten when idle)."""
        return self.log.open_episode() is None

    def step(
        self,
        state: EpisodeState,
        t: int,
        v: float,
        device_id: str,
        prev_t: int | None,
        out: list[Change],
    ) -> EpisodeState:
        """The condition judged on value `v` at event time `t`: the reading's own value or
        what a detector derived from it (a fault flag, a deviation, a score), so that no
        sample is built per reading and machine."""
        state = self._advance(state, t, v, device_id, out)
        # Nothing emitted, nothing to apply: the common case, checked here without a call
        # (the log is this module's own).
        return self.pass_over(state, t, prev_t) if len(self.log) else state

    def pass_over(self, state: EpisodeState, t: int, prev_t: int | None) -> EpisodeState:
        """A reading the condition must not judge (a sensor fault flagged it): the run and
        the clear delay carry on unchanged; only emitted decisions are applied."""
        if not len(self.log):
            return state
        for at, opening, episode in self.log.pins(prev_t, t):
            state = self._pin(state, at, opening, episode)
        return state

    def prune(self, before: int) -> None:
        """Forget what no recompute reaches, keeping resolutions suppression still needs."""
        self.log.prune(before - self.suppress_ms)

    def _repeat(self, opened_at: int) -> bool:
        """Opening at `opened_at` repeats an episode resolved less than suppress_ms ago."""
        return self.suppress_ms > 0 and self.log.resolved_within(
            opened_at - self.suppress_ms, opened_at
        )

    # --- the machine ----------------------------------------------------------------------

    def _advance(
        self, state: EpisodeState, t: int, v: float, device_id: str, out: list[Change]
    ) -> EpisodeState:
        cond = self.condition
        if state.phase is _OPEN:
            if cond.clears(v):
                since = t if state.clear_since is None else state.clear_since
                if t - since >= cond.clear_for_ms:
                    return self._resolve(state, t, device_id, out)
                return replace(state, clear_since=since)
            worst = cond.worse(state.worst, v) if cond.breaches(v) else state.worst
            return replace(state, clear_since=None, worst=worst)
        if not cond.breaches(v):
            if state.phase is _PENDING and self.dip_ms > 0:
                since = t if state.dip_since is None else state.dip_since
                if state.dipped + t - since < self.dip_ms:  # brief dips: the run carries on
                    return replace(state, dip_since=since)
            return IDLE
        dipped = state.dipped if state.dip_since is None else state.dipped + t - state.dip_since
        if state.phase is _IDLE or dipped >= self.dip_ms > 0:
            state = EpisodeState(_PENDING, start=t, worst=v)
        else:
            worst = cond.worse(state.worst, v)
            state = replace(state, worst=worst, dip_since=None, dipped=dipped)
        if t - state.start >= cond.for_ms:
            return self._open(state, t, v, device_id, out)
        return state

    def _open(
        self, run: EpisodeState, t: int, v: float, device_id: str, out: list[Change]
    ) -> EpisodeState:
        known = self.log.get(run.start)
        if known is not None:  # emitted before: recompute or silent replay
            if known.resolved_at is not None and known.resolved_at <= t:
                self.conflicts += 1
                return IDLE
            return EpisodeState(_OPEN, start=known.start, worst=run.worst)
        other = self.log.overlapping(run.start, t)
        if other is not None:
            self.conflicts += 1
            if other.resolved_at is None or other.resolved_at > t:
                # Late data moved this run's start: it is the episode already alerted.
                worst = self.condition.worse(other.value, run.worst)
                return EpisodeState(_OPEN, start=other.start, worst=worst)
            # `other` resolved inside this run: the breach from here on is a new run.
            restarted = EpisodeState(_PENDING, start=t, worst=v)
            if self.condition.for_ms == 0:
                return self._open(restarted, t, v, device_id, out)
            return restarted
        if self.log.next_after(t) is not None:
            # An earlier episode than one already emitted: wait for how it ends.
            return EpisodeState(
                _OPEN,
                start=run.start,
                worst=run.worst,
                tentative=True,
                opened_at=t,
                opened_value=run.worst,
                opened_device=device_id,
            )
        suppressed = self._repeat(t)
        self.log.add(Episode(run.start, t, run.worst, suppressed=suppressed))
        out.append(Change("opened", run.start, t, run.worst, device_id, suppressed))
        return EpisodeState(_OPEN, start=run.start, worst=run.worst)

    def _resolve(
        self, state: EpisodeState, t: int, device_id: str, out: list[Change]
    ) -> EpisodeState:
        episode = self.log.get(state.start)
        if episode is None and state.tentative:
            later = self.log.next_after(state.opened_at)
            if later is None or t <= later.start:
                suppressed = self._repeat(state.opened_at)
                self.log.add(
                    Episode(state.start, state.opened_at, state.opened_value, t, suppressed)
                )
                out.append(
                    Change(
                        "opened",
                        state.start,
                        state.opened_at,
                        state.opened_value,
                        state.opened_device,
                        suppressed,
                    )
                )
                out.append(Change("resolved", state.start, t, state.worst, device_id, suppressed))
            else:
                self.conflicts += 1
            return IDLE
        if episode is not None and episode.resolved_at is None:
            episode.resolved_at = t
            out.append(
                Change("resolved", episode.start, t, state.worst, device_id, episode.suppressed)
            )
        return IDLE

    def _pin(self, state: EpisodeState, at: int, opening: bool, episode: Episode) -> EpisodeState:
        inside = state.phase is _OPEN and state.start == episode.start
        if opening:
            if inside:
                return replace(state, tentative=False)
            if episode.end <= at:  # a recompute already resolved it before this time
                return state
            # The data now disagree with what was emitted: the emitted episode stands.
            self.conflicts += 1
            return EpisodeState(_OPEN, start=episode.start, worst=episode.value)
        if inside:  # emitted as resolved here, though the data now say otherwise
            self.conflicts += 1
            return IDLE
        return state
