"""Metric catalog: canonical UCUM unit, LOINC code, accepted units and plausible range.

Values outside the plausible range are physiologically impossible (or a sensor fault)
and are rejected at the door, item by item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def identity(value: float) -> float:
    """The conversion of a unit on the canonical scale (another name for the same unit)."""
    return value


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    loinc: str | None
    unit: str  # canonical UCUM unit
    low: float
    high: float
    # other accepted units -> conversion into the canonical unit
    conversions: dict[str, Callable[[float], float]] = field(default_factory=dict)

    def to_canonical(self, value: float, unit: str) -> float | None:
        """The value in the canonical unit, or None when the unit is not accepted."""
        if unit == self.unit:
            return value
        convert = self.conversions.get(unit)
        return None if convert is None else convert(value)


GLUCOSE_MG_DL_PER_MMOL_L = 18.016  # molar mass of glucose 180.16 g/mol

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("heart_rate", "8867-4", "/min", 20, 300, {"bpm": identity, "{beats}/min": identity}),
        Metric("spo2", "59408-5", "%", 50, 100),
        Metric("resp_rate", "9279-1", "/min", 2, 80, {"{breaths}/min": identity}),
        Metric(
            "body_temp",
            "8310-5",
            "Cel",
            30,
            45,
            {"[degF]": lambda f: (f - 32.0) * 5.0 / 9.0, "degF": lambda f: (f - 32.0) * 5.0 / 9.0},
        ),
        Metric("systolic_bp", "8480-6", "mm[Hg]", 40, 300, {"mmHg": identity}),
        Metric("diastolic_bp", "8462-4", "mm[Hg]", 20, 200, {"mmHg": identity}),
        # 15074-8: glucose [moles/volume] in blood; 2339-0 is the mass/volume code.
        Metric(
            "glucose",
            "15074-8",
            "mmol/L",
            1,
            40,
            {"mg/dL": lambda mg: mg / GLUCOSE_MG_DL_PER_MMOL_L},
        ),
        # No LOINC code for a beat-to-beat RR interval was verified here; kept as None
        # rather than guessed (IEEE 11073 MDC_ECG_TIME_PD_RR_GL is the device-side code).
        Metric("rr_interval", None, "ms", 200, 3000, {"s": lambda s: s * 1000.0}),
        Metric("steps", "55423-8", "{steps}", 0, 100_000, {"steps": identity}),
        # NEWS2 inputs a carer or clinician enters (processors/news2.py); codes, no LOINC
        # verified here. consciousness: ACVPU, 0 = Alert, 1 = new Confusion, 2 = Voice,
        # 3 = Pain, 4 = Unresponsive. supplemental_o2: 0 = on air, 1 = on oxygen.
        Metric("consciousness", None, "{ACVPU}", 0, 4),
        Metric("supplemental_o2", None, "{bool}", 0, 1),
    )
}
