//! What a plan charges: its base price for the time it was in force in a
//! billing period (prorated when that is not the whole period), and usage
//! beyond the quantities it includes at each metric's unit price. Amounts are
//! computed in micro-units and rounded once per line.

use crate::submission::ChargeLine;
use chrono::{DateTime, Utc};
use marketbridge_catalog::{Plan, PlanKind};
use marketbridge_core::Result;
use marketbridge_core::money::Money;
use std::collections::BTreeMap;

/// A stretch of time on one plan inside one billing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretch {
    /// Start (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
    /// The billing period's start.
    pub period_start: DateTime<Utc>,
    /// The billing period's end.
    pub period_end: DateTime<Utc>,
}

impl Stretch {
    /// True when the stretch covers the whole period.
    pub fn is_whole_period(&self) -> bool {
        self.start <= self.period_start && self.end >= self.period_end
    }
}

/// Who a line charges.
#[derive(Debug, Clone, Copy)]
pub struct Charged<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The marketplace's id of the plan.
    pub marketplace_plan_id: &'a str,
    /// The resource; `None` for account-level lines.
    pub resource_id: Option<&'a str>,
}

fn date(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The plan's base price for the stretch; `None` when the plan has none.
pub fn base_charge(charged: Charged<'_>, stretch: Stretch) -> Result<Option<ChargeLine>> {
    let plan = charged.plan;
    if plan.kind != PlanKind::Subscription {
        return Ok(None);
    }
    let price = plan.price()?;
    if price.amount_minor <= 0 || stretch.end <= stretch.start {
        return Ok(None);
    }
    let whole = (stretch.period_end - stretch.period_start)
        .num_microseconds()
        .unwrap_or(1)
        .max(1) as i128;
    let part = (stretch.end.min(stretch.period_end) - stretch.start.max(stretch.period_start))
        .num_microseconds()
        .unwrap_or(0)
        .clamp(0, whole as i64) as i128;
    let (total, details) = if stretch.is_whole_period() {
        (
            price.clone(),
            format!(
                "{} to {}",
                date(stretch.period_start),
                date(stretch.period_end)
            ),
        )
    } else {
        (
            Money::from_micros(price.to_micros() * part / whole, price.currency.clone()),
            format!(
                "{} to {}, prorated from {} per period",
                date(stretch.start),
                date(stretch.end),
                price.to_decimal_string()
            ),
        )
    };
    Ok(Some(ChargeLine {
        plan_id: plan.id.clone(),
        marketplace_plan_id: charged.marketplace_plan_id.to_owned(),
        resource_id: charged.resource_id.map(str::to_owned),
        start: stretch.start,
        end: stretch.end,
        name: plan.name.clone(),
        details,
        unit_price_micros: total.to_micros().clamp(0, i64::MAX as i128) as i64,
        quantity: 1,
        units: "period".to_owned(),
        total,
    }))
}

/// Usage beyond what the plan includes, one line per priced metric used
/// beyond its included quantity. `usage` is per metric id, for the stretch.
pub fn usage_charges(
    charged: Charged<'_>,
    stretch: Stretch,
    usage: &BTreeMap<String, i64>,
) -> Result<Vec<ChargeLine>> {
    let plan = charged.plan;
    let mut lines = Vec::new();
    if plan.kind != PlanKind::Subscription {
        return Ok(lines);
    }
    for metric in &plan.metrics {
        let unit_price_micros = metric.unit_price_micros()?;
        let used = usage.get(&metric.id).copied().unwrap_or(0);
        let beyond = used.saturating_sub(metric.included.max(0));
        if unit_price_micros <= 0 || beyond <= 0 {
            continue;
        }
        let total = Money::from_micros(
            i128::from(beyond) * i128::from(unit_price_micros),
            plan.currency.clone(),
        );
        lines.push(ChargeLine {
            plan_id: plan.id.clone(),
            marketplace_plan_id: charged.marketplace_plan_id.to_owned(),
            resource_id: charged.resource_id.map(str::to_owned),
            start: stretch.start,
            end: stretch.end,
            name: metric.name.clone(),
            details: format!(
                "{used} {unit} used, {included} included",
                unit = metric.unit,
                included = metric.included.max(0)
            ),
            unit_price_micros,
            quantity: beyond,
            units: metric.unit.clone(),
            total,
        });
    }
    Ok(lines)
}

/// What usage of a prepayment plan costs: usage beyond the included
/// quantities at each metric's unit price, in micro-units. `usage` is per
/// metric id, for one billing period.
pub fn prepaid_cost_micros(plan: &Plan, usage: &BTreeMap<String, i64>) -> Result<i128> {
    let mut cost = 0_i128;
    for metric in &plan.metrics {
        let used = usage.get(&metric.id).copied().unwrap_or(0);
        let beyond = used.saturating_sub(metric.included.max(0));
        if beyond > 0 {
            cost += i128::from(beyond) * i128::from(metric.unit_price_micros()?);
        }
    }
    Ok(cost)
}

/// The sum of lines, in the currency of the first.
pub fn total_of(lines: &[ChargeLine], currency: &str) -> Money {
    Money::new(
        lines.iter().map(|line| line.total.amount_minor).sum(),
        currency.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketbridge_catalog::Catalog;
    use marketbridge_core::time::{billing_period, parse_rfc3339};

    fn pro() -> Plan {
        Catalog::builtin()
            .unwrap()
            .product("database")
            .unwrap()
            .plan("pro")
            .unwrap()
            .clone()
    }

    fn stretch(start: &str, end: &str) -> Stretch {
        let start = parse_rfc3339("start", start).unwrap();
        let end = parse_rfc3339("end", end).unwrap();
        let (period_start, period_end) = billing_period(start);
        Stretch {
            start,
            end,
            period_start,
            period_end,
        }
    }

    #[test]
    fn whole_periods_charge_the_full_price_and_parts_are_prorated() {
        let plan = pro();
        let charged = Charged {
            plan: &plan,
            marketplace_plan_id: "pro",
            resource_id: Some("res_1"),
        };
        let whole = base_charge(
            charged,
            stretch("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(whole.total.amount_minor, 2000);
        let ten_days = base_charge(
            charged,
            stretch("2026-11-01T00:00:00Z", "2026-11-11T00:00:00Z"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ten_days.total.amount_minor, 667, "20.00 * 10/30, rounded");
        assert_eq!(ten_days.quantity, 1);
    }

    #[test]
    fn only_usage_beyond_the_included_quantity_is_charged() {
        let plan = pro();
        let charged = Charged {
            plan: &plan,
            marketplace_plan_id: "pro",
            resource_id: None,
        };
        let usage = BTreeMap::from([
            ("requests".to_owned(), 1_000_250_i64),
            ("storage_gb".to_owned(), 40),
        ]);
        let lines = usage_charges(
            charged,
            stretch("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
            &usage,
        )
        .unwrap();
        assert_eq!(lines.len(), 1, "storage stays within the included 100 GB");
        assert_eq!(lines[0].quantity, 250);
        assert_eq!(lines[0].unit_price_micros, 10);
        assert_eq!(
            lines[0].total.amount_minor, 0,
            "250 * 0.00001 rounds to 0.00"
        );
        let more = BTreeMap::from([("requests".to_owned(), 2_000_000_i64)]);
        let lines = usage_charges(
            charged,
            stretch("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
            &more,
        )
        .unwrap();
        assert_eq!(
            lines[0].total.amount_minor, 1000,
            "1,000,000 * 0.00001 = 10.00"
        );
    }
}
