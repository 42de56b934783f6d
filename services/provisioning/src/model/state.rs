//! States and kinds stored on the provisioning service's rows.

use sea_orm::{DeriveActiveEnum, EnumIter};
use std::fmt;

/// Our lifecycle states of a subscription: requested → approved → active ⇄
/// pending plan change / pending cancellation → cancelled (or rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum SubscriptionState {
    /// Asked for, not approved.
    #[sea_orm(string_value = "requested")]
    Requested,
    /// Approved by us, not yet active.
    #[sea_orm(string_value = "approved")]
    Approved,
    /// In use.
    #[sea_orm(string_value = "active")]
    Active,
    /// In use, a plan change pending.
    #[sea_orm(string_value = "pending_plan_change")]
    PendingPlanChange,
    /// In use until the end of the term.
    #[sea_orm(string_value = "pending_cancellation")]
    PendingCancellation,
    /// Ended.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
    /// Refused.
    #[sea_orm(string_value = "rejected")]
    Rejected,
}

impl SubscriptionState {
    /// Every state.
    pub const ALL: [SubscriptionState; 7] = [
        Self::Requested,
        Self::Approved,
        Self::Active,
        Self::PendingPlanChange,
        Self::PendingCancellation,
        Self::Cancelled,
        Self::Rejected,
    ];

    /// States in which the customer may use what they bought.
    pub fn is_usable(self) -> bool {
        matches!(
            self,
            Self::Active | Self::PendingPlanChange | Self::PendingCancellation
        )
    }

    /// States that never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Rejected)
    }
}

/// What a subscription pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum SubscriptionScope {
    /// One resource (a Vercel resource's plan).
    #[sea_orm(string_value = "resource")]
    Resource,
    /// The account (a Google entitlement, a Vercel installation-level plan).
    #[sea_orm(string_value = "account")]
    Account,
}

/// Where a resource stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum ResourceStatus {
    /// Waiting for its driver to provision it.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Usable once the customer finishes setup.
    #[sea_orm(string_value = "onboarding")]
    Onboarding,
    /// Usable.
    #[sea_orm(string_value = "ready")]
    Ready,
    /// Kept, not usable.
    #[sea_orm(string_value = "suspended")]
    Suspended,
    /// Provisioning failed.
    #[sea_orm(string_value = "error")]
    Error,
    /// Deleted.
    #[sea_orm(string_value = "uninstalled")]
    Uninstalled,
}

impl ResourceStatus {
    /// Every status.
    pub const ALL: [ResourceStatus; 6] = [
        Self::Pending,
        Self::Onboarding,
        Self::Ready,
        Self::Suspended,
        Self::Error,
        Self::Uninstalled,
    ];
}

/// Who runs a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Ownership {
    /// Created through the marketplace.
    #[sea_orm(string_value = "owned")]
    Owned,
    /// Imported: billed by the provider, detached when removed.
    #[sea_orm(string_value = "linked")]
    Linked,
}

/// Where a transfer claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum ClaimState {
    /// Offered.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Taken by the target account.
    #[sea_orm(string_value = "accepted")]
    Accepted,
}

/// Where an importable resource came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum ImportSource {
    /// Registered by the provider (`RegisterImportableResource`).
    #[sea_orm(string_value = "registered")]
    Registered,
    /// Listed by the product's plug-in (`ListImportable`).
    #[sea_orm(string_value = "plugin")]
    Plugin,
}

macro_rules! stored_text {
    ($($name:ident { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl $name {
            /// The stored (and logged) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value stored as `text`, if any.
            pub fn from_stored(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

stored_text! {
    SubscriptionState {
        Requested => "requested",
        Approved => "approved",
        Active => "active",
        PendingPlanChange => "pending_plan_change",
        PendingCancellation => "pending_cancellation",
        Cancelled => "cancelled",
        Rejected => "rejected",
    }
    SubscriptionScope {
        Resource => "resource",
        Account => "account",
    }
    ResourceStatus {
        Pending => "pending",
        Onboarding => "onboarding",
        Ready => "ready",
        Suspended => "suspended",
        Error => "error",
        Uninstalled => "uninstalled",
    }
    Ownership {
        Owned => "owned",
        Linked => "linked",
    }
    ClaimState {
        Pending => "pending",
        Accepted => "accepted",
    }
    ImportSource {
        Registered => "registered",
        Plugin => "plugin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ActiveEnum;

    #[test]
    fn stored_names_are_the_database_values() {
        for state in SubscriptionState::ALL {
            assert_eq!(state.to_value(), state.as_str());
            assert_eq!(
                SubscriptionState::try_from_value(&state.as_str().to_owned()).unwrap(),
                state
            );
            assert_eq!(SubscriptionState::from_stored(state.as_str()), Some(state));
        }
        for status in ResourceStatus::ALL {
            assert_eq!(status.to_value(), status.as_str());
            assert_eq!(ResourceStatus::from_stored(status.as_str()), Some(status));
        }
        assert!(SubscriptionState::try_from_value(&"bogus".to_owned()).is_err());
        assert!(ResourceStatus::try_from_value(&String::new()).is_err());
        assert_eq!(Ownership::Linked.to_value(), "linked");
        assert_eq!(ClaimState::Accepted.to_value(), "accepted");
        assert_eq!(ImportSource::Plugin.to_value(), "plugin");
        assert_eq!(SubscriptionScope::Account.to_value(), "account");
    }
}
