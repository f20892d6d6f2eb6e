//! The KPI formulas of ISO 22400-2, applied to [`Elements`]: one definition
//! for every unit, line, site and period, each value carrying its formula
//! and the inputs it was computed from.

use serde::Serialize;

use crate::elements::Elements;

/// The KPIs Gantry computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    Oee,
    Availability,
    Effectiveness,
    Quality,
    Throughput,
    ScrapRatio,
    TechnicalEfficiency,
    Mtbf,
    Mttr,
    EnergyPerGoodUnit,
}

impl Kpi {
    pub const ALL: [Kpi; 10] = [
        Kpi::Oee,
        Kpi::Availability,
        Kpi::Effectiveness,
        Kpi::Quality,
        Kpi::Throughput,
        Kpi::ScrapRatio,
        Kpi::TechnicalEfficiency,
        Kpi::Mtbf,
        Kpi::Mttr,
        Kpi::EnergyPerGoodUnit,
    ];

    /// The topic segment under `_kpi/` and the name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kpi::Oee => "oee",
            Kpi::Availability => "availability",
            Kpi::Effectiveness => "effectiveness",
            Kpi::Quality => "quality",
            Kpi::Throughput => "throughput",
            Kpi::ScrapRatio => "scrap_ratio",
            Kpi::TechnicalEfficiency => "technical_efficiency",
            Kpi::Mtbf => "mtbf",
            Kpi::Mttr => "mttr",
            Kpi::EnergyPerGoodUnit => "energy_per_good_unit",
        }
    }

    pub fn parse(text: &str) -> Option<Kpi> {
        Kpi::ALL.into_iter().find(|k| k.name() == text)
    }

    /// The unit of the value.
    pub fn unit(self) -> &'static str {
        match self {
            Kpi::Oee
            | Kpi::Availability
            | Kpi::Effectiveness
            | Kpi::Quality
            | Kpi::ScrapRatio
            | Kpi::TechnicalEfficiency => "ratio",
            Kpi::Throughput => "units/h",
            Kpi::Mtbf | Kpi::Mttr => "min",
            Kpi::EnergyPerGoodUnit => "kWh/unit",
        }
    }

    /// The formula in ISO 22400 element names.
    pub fn formula(self) -> &'static str {
        match self {
            Kpi::Oee => "Availability × Effectiveness × Quality ratio",
            Kpi::Availability => "APT / PBT",
            Kpi::Effectiveness => "PRI × PQ / APT",
            Kpi::Quality => "GQ / PQ",
            Kpi::Throughput => "PQ / AOET",
            Kpi::ScrapRatio => "SQ / PQ",
            Kpi::TechnicalEfficiency => "APT / (APT + ADET)",
            Kpi::Mtbf => "APT / FE",
            Kpi::Mttr => "TTR / FE",
            Kpi::EnergyPerGoodUnit => "energy / GQ",
        }
    }
}

/// One input of a KPI value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    /// The element's ISO name (`APT`, `PBT`, `PRI × PQ`, …).
    pub name: &'static str,
    pub value: f64,
    /// `min`, `units`, `kWh`.
    pub unit: &'static str,
}

/// A computed KPI with its formula and inputs. `value` is `None` when the
/// formula's denominator is zero (e.g. no production time yet), and `why`
/// then says which.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiValue {
    pub kpi: Kpi,
    pub value: Option<f64>,
    pub unit: &'static str,
    pub formula: &'static str,
    pub inputs: Vec<Input>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

fn minutes(ms: f64) -> f64 {
    ms / 60_000.0
}

fn ratio(
    kpi: Kpi,
    num: (&'static str, f64, &'static str),
    den: (&'static str, f64, &'static str),
) -> KpiValue {
    let value = (den.1 > 0.0).then(|| num.1 / den.1);
    KpiValue {
        kpi,
        why: value
            .is_none()
            .then(|| format!("{} is 0: nothing to divide by", den.0)),
        value,
        unit: kpi.unit(),
        formula: kpi.formula(),
        inputs: vec![
            Input {
                name: num.0,
                value: num.1,
                unit: num.2,
            },
            Input {
                name: den.0,
                value: den.1,
                unit: den.2,
            },
        ],
    }
}

/// Every KPI of `e`, in [`Kpi::ALL`] order.
pub fn compute(e: &Elements) -> Vec<KpiValue> {
    Kpi::ALL.into_iter().map(|k| compute_one(e, k)).collect()
}

/// One KPI of `e`.
pub fn compute_one(e: &Elements, kpi: Kpi) -> KpiValue {
    let apt = minutes(e.apt_ms as f64);
    let pbt = minutes(e.pbt_ms() as f64);
    match kpi {
        Kpi::Availability => ratio(kpi, ("APT", apt, "min"), ("PBT", pbt, "min")),
        Kpi::Effectiveness => ratio(
            kpi,
            ("PRI × PQ", minutes(e.ideal_produced_ms), "min"),
            ("APT", apt, "min"),
        ),
        Kpi::Quality => ratio(kpi, ("GQ", e.good, "units"), ("PQ", e.produced, "units")),
        Kpi::Oee => {
            let a = compute_one(e, Kpi::Availability);
            let eff = compute_one(e, Kpi::Effectiveness);
            let q = compute_one(e, Kpi::Quality);
            let why = [&a, &eff, &q].iter().find(|v| v.value.is_none()).map(|v| {
                format!(
                    "{} has no value ({})",
                    v.kpi.name(),
                    v.why.clone().unwrap_or_default()
                )
            });
            let value = match (a.value, eff.value, q.value) {
                (Some(a), Some(e), Some(q)) => Some(a * e * q),
                _ => None,
            };
            KpiValue {
                kpi,
                value,
                unit: kpi.unit(),
                formula: kpi.formula(),
                inputs: vec![
                    Input {
                        name: "Availability",
                        value: a.value.unwrap_or(f64::NAN),
                        unit: "ratio",
                    },
                    Input {
                        name: "Effectiveness",
                        value: eff.value.unwrap_or(f64::NAN),
                        unit: "ratio",
                    },
                    Input {
                        name: "Quality ratio",
                        value: q.value.unwrap_or(f64::NAN),
                        unit: "ratio",
                    },
                ],
                why,
            }
        }
        Kpi::Throughput => {
            let mut v = ratio(
                kpi,
                ("PQ", e.produced, "units"),
                ("AOET", minutes(e.aoet_ms() as f64) / 60.0, "h"),
            );
            v.inputs[1].name = "AOET";
            v
        }
        Kpi::ScrapRatio => ratio(kpi, ("SQ", e.scrap, "units"), ("PQ", e.produced, "units")),
        Kpi::TechnicalEfficiency => ratio(
            kpi,
            ("APT", apt, "min"),
            ("APT + ADET", apt + minutes(e.adet_ms as f64), "min"),
        ),
        Kpi::Mtbf => ratio(
            kpi,
            ("APT", apt, "min"),
            ("FE", e.failures as f64, "events"),
        ),
        Kpi::Mttr => ratio(
            kpi,
            ("TTR", minutes(e.failure_ms as f64), "min"),
            ("FE", e.failures as f64, "events"),
        ),
        Kpi::EnergyPerGoodUnit => match e.energy_kwh {
            Some(kwh) => ratio(kpi, ("energy", kwh, "kWh"), ("GQ", e.good, "units")),
            None => KpiValue {
                kpi,
                value: None,
                unit: kpi.unit(),
                formula: kpi.formula(),
                inputs: Vec::new(),
                why: Some("no energy meter is configured for this work unit".into()),
            },
        },
    }
}
