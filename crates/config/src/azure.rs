//! Azure Marketplace settings.

use serde::{Deserialize, Serialize};

/// Azure Marketplace (Microsoft commercial marketplace) SaaS settings. Empty
/// `client_id` leaves Azure off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AzureOptions {
    /// The Entra application (client) id of the offer's technical
    /// configuration; empty leaves Azure Marketplace off.
    pub client_id: String,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            client_id: String::new(),
        }
    }
}
