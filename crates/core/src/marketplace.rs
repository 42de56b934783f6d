//! The marketplaces marketbridge speaks to, as one neutral enum. Adding a
//! marketplace adds a variant here and an adapter at the edge; nothing else in
//! the services changes shape.

use crate::error::{Error, Result};
use marketbridge_proto::common::v1::Marketplace as ProtoMarketplace;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a customer bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Marketplace {
    /// Vercel Marketplace native integrations.
    Vercel,
    /// Google Cloud Marketplace SaaS.
    Google,
    /// Customers of the provider itself, without a marketplace.
    Direct,
    /// AWS Marketplace SaaS products.
    Aws,
    /// Azure Marketplace (Microsoft commercial marketplace) SaaS offers.
    Azure,
}

impl Marketplace {
    /// Every marketplace.
    pub const ALL: [Marketplace; 5] = [
        Marketplace::Vercel,
        Marketplace::Google,
        Marketplace::Direct,
        Marketplace::Aws,
        Marketplace::Azure,
    ];

    /// The lowercase name stored in databases and shown in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Marketplace::Vercel => "vercel",
            Marketplace::Google => "google",
            Marketplace::Direct => "direct",
            Marketplace::Aws => "aws",
            Marketplace::Azure => "azure",
        }
    }

    /// Parses the name produced by [`Marketplace::as_str`].
    pub fn parse(field: &str, name: &str) -> Result<Self> {
        Marketplace::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| Error::invalid_field(field, format!("unknown marketplace `{name}`")))
    }

    /// Converts the protobuf enum value; UNSPECIFIED and unknown values are
    /// validation errors on `field`.
    pub fn from_proto(field: &str, value: i32) -> Result<Self> {
        match ProtoMarketplace::try_from(value) {
            Ok(ProtoMarketplace::Vercel) => Ok(Marketplace::Vercel),
            Ok(ProtoMarketplace::Google) => Ok(Marketplace::Google),
            Ok(ProtoMarketplace::Direct) => Ok(Marketplace::Direct),
            Ok(ProtoMarketplace::Aws) => Ok(Marketplace::Aws),
            Ok(ProtoMarketplace::Azure) => Ok(Marketplace::Azure),
            _ => Err(Error::invalid_field(field, "a marketplace is required")),
        }
    }

    /// The protobuf enum value.
    pub fn to_proto(self) -> i32 {
        let value = match self {
            Marketplace::Vercel => ProtoMarketplace::Vercel,
            Marketplace::Google => ProtoMarketplace::Google,
            Marketplace::Direct => ProtoMarketplace::Direct,
            Marketplace::Aws => ProtoMarketplace::Aws,
            Marketplace::Azure => ProtoMarketplace::Azure,
        };
        value as i32
    }
}

impl fmt::Display for Marketplace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_proto_values_round_trip() {
        for marketplace in Marketplace::ALL {
            assert_eq!(
                Marketplace::parse("m", marketplace.as_str()).unwrap(),
                marketplace
            );
            assert_eq!(
                Marketplace::from_proto("m", marketplace.to_proto()).unwrap(),
                marketplace
            );
        }
        assert!(Marketplace::from_proto("m", 0).is_err());
        assert!(Marketplace::parse("m", "amazon").is_err());
    }
}
