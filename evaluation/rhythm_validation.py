"""`vitals validate rhythm`: the rhythm detector on real negatives and synthetic AF.

Negative controls (real recordings, copied into evaluation/data/ with their licences):
- normal sinus rhythm: pyhrv 0.5.0's `SampleNNISeriesLong.npy`, 4,684 NN intervals from
  PhysioNet's NSR database;
- ectopy: MIT-BIH record 208 (many PVCs, couplets) as SciPy 1.11 shipped it
  (`scipy/misc/ecg.dat`, 5 min at 360 Hz); R peaks found here with a Pan-Tompkins-style
  detector.

Positives are SYNTHETIC: RR series from a random-pulse model of the AV node in AF after
Cohen, Berger & Dushane 1983 (IEEE Trans Biomed Eng 30:769): atrial impulses arrive as a
Poisson process; the node conducts the first impulse after its refractory period, and each
blocked (concealed) impulse prolongs that period. No labelled AF recording ships in any
package found here, so these figures are not comparable to the MIT-BIH AF database ones
printed beside them.

Every series goes through the detector's own code: windows and verdicts from
RhythmTrack, episodes from the Engine with the configured rules.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from processors.engine import Engine
from processors.rhythm import RULE, RhythmRule, RhythmState, RhythmTrack
from processors.rules import Rules
from processors.windows import Sample
from vitals import progress
from vitals.contract import Reading, Upload
from vitals.errors import ConfigError

T0 = 1_800_000_000_000
UPLOAD_BEATS = 60  # a tachogram of about a minute per upload
PUBLISHED = {
    "Tateno & Glass 2001 (KS test on dRR, MIT-BIH AF)": {"se": 94.4, "sp": 97.2},
    "Tateno & Glass 2001 (CV of RR, MIT-BIH AF)": {"se": 86.6, "sp": 84.3},
    "Zhou 2014 (MIT-BIH AF)": {"se": 96.89, "sp": 98.25},
}


# --- data ----------------------------------------------------------------------------------


def synthetic_af(seed: int, beats: int) -> list[float]:
    """One synthetic AF RR series (ms), Cohen et al. 1983-style AV node (module doc)."""
    rng = random.Random(seed)
    atrial_rate = rng.uniform(5.0, 8.0)  # impulses per second (300-480 /min)
    refractory = rng.uniform(280.0, 520.0)  # ms, sets the ventricular rate
    concealed = rng.uniform(10.0, 40.0)  # ms added by each blocked impulse
    rr: list[float] = []
    t, last_beat = 0.0, 0.0
    ready = refractory
    while len(rr) < beats:
        t += rng.expovariate(atrial_rate) * 1000
        if t - last_beat >= ready:
            rr.append(t - last_beat)
            last_beat, ready = t, refractory * rng.uniform(0.9, 1.1)
        else:
            ready += concealed
    return rr


DATA = Path(__file__).parent / "data"  # real recordings, with their licences in NOTICE.md


def pyhrv_nsr() -> list[float]:
    """pyhrv's long NN series (ms): normal sinus rhythm from PhysioNet's NSR database."""
    import numpy as np

    return [float(x) for x in np.load(DATA / "nsr_long.npy")]


def mitbih_208() -> list[float]:
    """RR intervals (ms) of MIT-BIH record 208, from its ECG as SciPy 1.11 shipped it."""
    import numpy as np
    from scipy import signal

    with np.load(DATA / "mitbih_208_ecg.npz") as file:
        ecg = (file["ecg"].astype(float) - 1024.0) / 200.0  # ADC units -> mV
    return [float(x) for x in np.diff(r_peaks(ecg, 360.0, signal, np)) / 360.0 * 1000.0]


def r_peaks(ecg: Any, fs: float, signal: Any, np: Any) -> Any:
    """Pan-Tompkins-style R peaks: band-pass, derivative, square, integrate, peaks."""
    b, a = signal.butter(2, [5.0 / (fs / 2), 15.0 / (fs / 2)], btype="band")
    filtered = signal.filtfilt(b, a, ecg)
    energy = np.gradient(filtered) ** 2
    width = int(0.15 * fs)
    integrated = np.convolve(energy, np.ones(width) / width, mode="same")
    # Refractory 250 ms; height relative to the strong beats (PVCs are large: the median
    # of the top beats keeps small normal beats above the floor).
    floor = 0.2 * np.percentile(integrated, 99)
    peaks, _ = signal.find_peaks(integrated, height=floor, distance=int(0.25 * fs))
    half = int(0.08 * fs)
    # The R peak is the largest deflection near the energy peak.
    return np.array(
        [
            max(0, p - half) + int(np.argmax(np.abs(filtered[max(0, p - half) : p + half])))
            for p in peaks
        ]
    )


# --- evaluation ------------------------------------------------------------------------------


@dataclass(slots=True)
class SeriesResult:
    name: str
    af: bool
    beats: int
    windows: int
    irregular: int
    unreadable: int
    episodes: int


def verdicts(rr: Sequence[float], rule: RhythmRule) -> list[bool | None]:
    """Every window's verdict, through the detector's own windowing."""
    track = RhythmTrack(rule)
    state = RhythmState()
    found: list[bool | None] = []
    t = T0
    for value in rr:
        t += round(value)
        judged = state.judged
        state = track.advance(state, Sample(t, "d", value, "rr_interval"))
        if state.judged > judged:
            found.append(state.verdicts[-1])
    return found


def episodes(rr: Sequence[float], rules: Rules, patient: str) -> int:
    """Rhythm episodes the engine opens over the series, uploaded a minute at a time."""
    engine = Engine(rules)
    t = T0
    opened = 0
    for start in range(0, len(rr), UPLOAD_BEATS):
        readings = []
        for value in rr[start : start + UPLOAD_BEATS]:
            t += round(value)
            readings.append(Reading("rr_interval", t, value, "ms"))
        upload = Upload("u", "gw", "d", patient, t, tuple(readings))
        opened += sum(
            d.rule == RULE and d.state == "opened" for d in engine.feed("p0", upload, now=t)
        )
    return opened


def evaluate(name: str, rr: Sequence[float], af: bool, rules: Rules) -> SeriesResult:
    rule = rules.defaults.rhythm
    if rule is None:
        raise ConfigError("the rhythm rule is disabled in the rules file")
    found = verdicts(rr, rule)
    return SeriesResult(
        name=name,
        af=af,
        beats=len(rr),
        windows=len(found),
        irregular=sum(1 for v in found if v),
        unreadable=sum(1 for v in found if v is None),
        episodes=episodes(rr, rules, name),
    )


def summary(results: Iterable[SeriesResult]) -> dict[str, object]:
    results = list(results)
    pos = [r for r in results if r.af]
    neg = [r for r in results if not r.af]

    def pct(a: int, b: int) -> float | None:
        return None if b == 0 else round(100.0 * a / b, 2)

    pos_read = sum(r.windows - r.unreadable for r in pos)
    neg_read = sum(r.windows - r.unreadable for r in neg)
    return {
        "per_window": {
            "sensitivity": pct(sum(r.irregular for r in pos), pos_read),
            "specificity": pct(neg_read - sum(r.irregular for r in neg), neg_read),
            "af_windows": pos_read,
            "negative_windows": neg_read,
        },
        "per_episode": {
            "sensitivity": pct(sum(1 for r in pos if r.episodes > 0), len(pos)),
            "specificity": pct(sum(1 for r in neg if r.episodes == 0), len(neg)),
            "false_episodes": sum(r.episodes for r in neg),
        },
    }


def run(rules: Rules, *, af_series: int, af_beats: int, seed: int, out: Path) -> int:
    series = [
        ("NSR pyhrv SampleNNISeriesLong (real)", pyhrv_nsr, False),
        ("MIT-BIH 208 ectopy, scipy ecg.dat (real)", mitbih_208, False),
    ]
    series += [
        (f"synthetic AF #{i} (Cohen 1983 model)", partial(synthetic_af, seed + i, af_beats), True)
        for i in range(af_series)
    ]
    results = []
    with progress.bar("validate rhythm", len(series), "series") as shown:
        for name, intervals, positive in series:  # each series loaded as its turn comes
            results.append(evaluate(name, intervals(), positive, rules))
            shown.update(1)
    figures = summary(results)
    print(f"{'series':48} {'beats':>6} {'windows':>7} {'irreg':>6} {'unread':>6} {'episodes':>8}")
    for r in results:
        print(
            f"{r.name:48} {r.beats:6} {r.windows:7} {r.irregular:6} {r.unreadable:6} {r.episodes:8}"
        )
    for level in ("per_window", "per_episode"):
        f = figures[level]
        assert isinstance(f, dict)
        print(f"{level:12} sensitivity {f['sensitivity']} %  specificity {f['specificity']} %")
    print("published (MIT-BIH AF database, not reachable here: context, not a comparison):")
    for name, fig in PUBLISHED.items():
        print(f"  {name}: Se {fig['se']} % / Sp {fig['sp']} %")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(
        orjson.dumps(
            {
                "series": [asdict(r) for r in results],
                **figures,
                "published": PUBLISHED,
                "seed": seed,
                "synthetic_af": {"series": af_series, "beats": af_beats},
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"written to {out}")
    return 0
