//! Work units: the machines and lines KPIs are computed for, with the tags
//! that feed them, their ideal cycle time and their state model.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::state_model::StateModel;

/// How a unit's counters give the produced, good and scrap quantities.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Counting {
    /// Good and scrap counters: PQ = GQ + SQ.
    GoodAndScrap { good: String, scrap: String },
    /// Produced and scrap counters: GQ = PQ − SQ.
    ProducedAndScrap { produced: String, scrap: String },
    /// Produced and good counters: SQ = PQ − GQ.
    ProducedAndGood { produced: String, good: String },
    /// Only a produced counter: every unit is counted good.
    Produced { produced: String },
}

impl Counting {
    /// The counter tags, in (produced-or-good, scrap-or-good) order.
    pub fn tags(&self) -> Vec<&str> {
        match self {
            Counting::GoodAndScrap { good, scrap } => vec![good, scrap],
            Counting::ProducedAndScrap { produced, scrap } => vec![produced, scrap],
            Counting::ProducedAndGood { produced, good } => vec![produced, good],
            Counting::Produced { produced } => vec![produced],
        }
    }
}

/// One work unit (a machine) and how its KPIs are fed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkUnit {
    /// The equipment path (`acme/dallas/packaging/line-1/filler`).
    pub path: String,
    /// Tag names are relative to `path`.
    pub state_tag: String,
    pub reason_tag: Option<String>,
    pub counting: Counting,
    /// Counters wrap at this value (e.g. 65536); without it a drop is a
    /// reset.
    pub counter_modulus: Option<f64>,
    /// Planned run time per item (ideal cycle time), in milliseconds.
    pub ideal_cycle_ms: f64,
    /// Per product, with the tag that names the product being made.
    pub product_tag: Option<String>,
    pub ideal_cycle_ms_by_product: BTreeMap<String, f64>,
    /// A cumulative energy meter in kWh.
    pub energy_tag: Option<String>,
    pub state_model: StateModel,
    /// The shift calendar's name.
    pub calendar: String,
}

impl WorkUnit {
    /// The full topic of a tag of this unit.
    pub fn topic(&self, tag: &str) -> String {
        format!("{}/{tag}", self.path)
    }

    /// The ideal cycle time for a product (the unit's default when the
    /// product is unknown or not listed).
    pub fn ideal_cycle_for(&self, product: Option<&str>) -> f64 {
        product
            .and_then(|p| self.ideal_cycle_ms_by_product.get(p))
            .copied()
            .unwrap_or(self.ideal_cycle_ms)
    }

    /// Every topic whose values the computation reads.
    pub fn input_topics(&self) -> Vec<String> {
        let mut tags: Vec<&str> = vec![&self.state_tag];
        tags.extend(self.reason_tag.as_deref());
        tags.extend(self.counting.tags());
        tags.extend(self.product_tag.as_deref());
        tags.extend(self.energy_tag.as_deref());
        tags.into_iter().map(|t| self.topic(t)).collect()
    }
}
