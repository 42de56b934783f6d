//! Money as integer minor units plus a currency. Prices below a cent (per
//! unit of usage) are kept in micro-units so that sums stay exact.

use crate::error::{Error, Result};
use marketbridge_proto::common::v1::Money as ProtoMoney;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Micro-units in one major unit (1 USD = 1,000,000 micros).
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units (cents for USD).
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
}

/// Digits after the decimal point for a currency.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "CLP" | "VND" => 0,
        _ => 2,
    }
}

impl Money {
    /// An amount in minor units of `currency`.
    pub fn new(amount_minor: i64, currency: impl Into<String>) -> Self {
        Self {
            amount_minor,
            currency: currency.into(),
        }
    }

    /// An amount in US cents.
    pub fn usd_cents(cents: i64) -> Self {
        Self::new(cents, "USD")
    }

    /// Zero in `currency`.
    pub fn zero(currency: impl Into<String>) -> Self {
        Self::new(0, currency)
    }

    /// The amount as a decimal string with the currency's digits (`"12.34"`),
    /// as marketplaces want it on the wire.
    pub fn to_decimal_string(&self) -> String {
        let digits = minor_digits(&self.currency);
        if digits == 0 {
            return self.amount_minor.to_string();
        }
        let scale = 10_i64.pow(digits);
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale as u64,
            abs % scale as u64,
            width = digits as usize
        )
    }

    /// Parses a decimal string (`"12.34"`, `"5"`, `"0.5"`) in `currency`.
    /// More digits than the currency has is an error, never a rounding.
    pub fn parse_decimal(field: &str, text: &str, currency: &str) -> Result<Self> {
        let invalid =
            || Error::invalid_field(field, format!("`{text}` is not an amount in {currency}"));
        let trimmed = text.trim();
        let (negative, unsigned) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = minor_digits(currency) as usize;
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || fraction.len() > digits
        {
            return Err(invalid());
        }
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let fraction_value: i64 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<digits$}")
                .parse()
                .map_err(|_| invalid())?
        };
        let scale = 10_i64.pow(digits as u32);
        let amount = whole
            .checked_mul(scale)
            .and_then(|v| v.checked_add(fraction_value))
            .ok_or_else(invalid)?;
        Ok(Self::new(if negative { -amount } else { amount }, currency))
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> ProtoMoney {
        ProtoMoney {
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
        }
    }

    /// From the protobuf form; an empty currency means USD.
    pub fn from_proto(money: &ProtoMoney) -> Self {
        let currency = if money.currency.is_empty() {
            "USD".to_owned()
        } else {
            money.currency.clone()
        };
        Self::new(money.amount_minor, currency)
    }

    /// Converts an amount in micro-units to minor units, rounding half away
    /// from zero.
    pub fn from_micros(micros: i128, currency: impl Into<String>) -> Self {
        let currency = currency.into();
        let per_minor = (MICROS_PER_UNIT / 10_i64.pow(minor_digits(&currency))) as i128;
        let half = per_minor / 2;
        let rounded = if micros >= 0 {
            (micros + half) / per_minor
        } else {
            (micros - half) / per_minor
        };
        Self::new(
            rounded.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            currency,
        )
    }

    /// The amount in micro-units.
    pub fn to_micros(&self) -> i128 {
        let per_minor = (MICROS_PER_UNIT / 10_i64.pow(minor_digits(&self.currency))) as i128;
        self.amount_minor as i128 * per_minor
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_round_trip() {
        for (text, minor) in [
            ("12.34", 1234),
            ("0.05", 5),
            ("5", 500),
            ("0.5", 50),
            ("-3.10", -310),
        ] {
            let money = Money::parse_decimal("amount", text, "USD").unwrap();
            assert_eq!(money.amount_minor, minor, "{text}");
        }
        assert_eq!(Money::usd_cents(1234).to_decimal_string(), "12.34");
        assert_eq!(Money::usd_cents(5).to_decimal_string(), "0.05");
        assert_eq!(Money::usd_cents(-310).to_decimal_string(), "-3.10");
        assert_eq!(Money::new(1500, "JPY").to_decimal_string(), "1500");
    }

    #[test]
    fn bad_amounts_are_rejected_not_rounded() {
        for text in ["12.345", "abc", "", ".5", "1.2.3", "1e3", "--1"] {
            assert!(
                Money::parse_decimal("amount", text, "USD").is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn micros_round_half_away_from_zero() {
        assert_eq!(Money::from_micros(5_000, "USD").amount_minor, 1);
        assert_eq!(Money::from_micros(4_999, "USD").amount_minor, 0);
        assert_eq!(Money::from_micros(-5_000, "USD").amount_minor, -1);
        assert_eq!(Money::usd_cents(250).to_micros(), 2_500_000);
    }
}
