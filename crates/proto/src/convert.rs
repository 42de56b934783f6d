//! Small conversions between generated types and plain Rust values.

use crate::common::v1::{AccountSelector, Marketplace, MarketplaceRef, account_selector};

impl AccountSelector {
    /// Selects an account by our id.
    pub fn by_id(account_id: impl Into<String>) -> Self {
        Self {
            selector: Some(account_selector::Selector::AccountId(account_id.into())),
        }
    }

    /// Selects an account by its marketplace identity.
    pub fn by_ref(marketplace: Marketplace, external_id: impl Into<String>) -> Self {
        Self {
            selector: Some(account_selector::Selector::MarketplaceRef(
                MarketplaceRef::new(marketplace, external_id),
            )),
        }
    }
}

impl MarketplaceRef {
    /// A marketplace identity.
    pub fn new(marketplace: Marketplace, external_id: impl Into<String>) -> Self {
        Self {
            marketplace: marketplace as i32,
            external_id: external_id.into(),
        }
    }
}
