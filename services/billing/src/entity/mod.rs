//! Tables the billing service owns. States, statuses and kinds are stored as
//! text and read as their enums ([`stored_as_text`]): a stored value no enum
//! knows fails the read instead of becoming a default. Stored ids are read
//! as typed ids through each model's accessors, which fail the same way.

pub mod account_closure;
pub mod balance;
pub mod billing_resource;
pub mod billing_subscription;
pub mod invoice;
pub mod plan_period;
pub mod prepayment;
pub mod usage_event;
pub mod usage_report;
pub mod usage_window;

use crate::lifecycle::closing::ClosureStatus;
use crate::lifecycle::invoice::InvoiceState;
use crate::lifecycle::report::ReportStatus;
use crate::submission::SubmissionKind;
use marketbridge_core::Result;
use marketbridge_core::ids::{AccountId, InvoiceId, ReportId, SubscriptionId};

/// Lets an enum with `as_str` and `FromStr` be a column stored as text (what
/// sea-orm's `DeriveValueType` generates for string values).
macro_rules! stored_as_text {
    ($($name:ty),+ $(,)?) => {$(
        impl From<$name> for sea_orm::Value {
            fn from(value: $name) -> Self {
                value.as_str().to_owned().into()
            }
        }

        impl sea_orm::TryGetable for $name {
            fn try_get_by<I: sea_orm::ColIdx>(
                res: &sea_orm::QueryResult,
                idx: I,
            ) -> std::result::Result<Self, sea_orm::TryGetError> {
                let text = String::try_get_by(res, idx)?;
                text.parse().map_err(|error| {
                    sea_orm::TryGetError::DbErr(sea_orm::DbErr::TryIntoErr {
                        from: "String",
                        into: stringify!($name),
                        source: std::sync::Arc::new(error),
                    })
                })
            }
        }

        impl sea_orm::sea_query::ValueType for $name {
            fn try_from(
                value: sea_orm::Value,
            ) -> std::result::Result<Self, sea_orm::sea_query::ValueTypeErr> {
                let text = <String as sea_orm::sea_query::ValueType>::try_from(value)?;
                text.parse().map_err(|_| sea_orm::sea_query::ValueTypeErr)
            }

            fn type_name() -> String {
                stringify!($name).to_owned()
            }

            fn array_type() -> sea_orm::sea_query::ArrayType {
                sea_orm::sea_query::ArrayType::String
            }

            fn column_type() -> sea_orm::sea_query::ColumnType {
                sea_orm::sea_query::ColumnType::String(sea_orm::sea_query::StringLen::None)
            }
        }

        impl sea_orm::sea_query::Nullable for $name {
            fn null() -> sea_orm::Value {
                sea_orm::Value::String(None)
            }
        }

        impl sea_orm::IntoActiveValue<$name> for $name {
            fn into_active_value(self) -> sea_orm::ActiveValue<$name> {
                sea_orm::ActiveValue::Set(self)
            }
        }
    )+};
}

stored_as_text!(InvoiceState, ReportStatus, ClosureStatus, SubmissionKind);

/// A stored id read back as its kind; an unreadable one is an error.
fn stored<T>(
    parse: impl FnOnce(&str, &str) -> Result<T>,
    field: &'static str,
    text: &str,
) -> Result<T> {
    parse(field, text).map_err(|error| {
        tracing::error!(field, value = %text, "a stored id is unreadable");
        marketbridge_core::Error::internal(format!("a stored {field} is unreadable"))
            .with_source(error)
    })
}

/// A stored account id, read back.
pub(crate) fn account_id(text: &str) -> Result<AccountId> {
    stored(AccountId::parse, "account id", text)
}

/// A stored subscription id, read back.
pub(crate) fn subscription_id(text: &str) -> Result<SubscriptionId> {
    stored(SubscriptionId::parse, "subscription id", text)
}

/// A stored invoice id, read back.
pub(crate) fn invoice_id(text: &str) -> Result<InvoiceId> {
    stored(InvoiceId::parse, "invoice id", text)
}

/// A stored report id, read back.
pub(crate) fn report_id(text: &str) -> Result<ReportId> {
    stored(ReportId::parse, "report id", text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Value;
    use sea_orm::sea_query::ValueType;

    #[test]
    fn states_are_stored_as_their_names_and_unknown_names_do_not_read() {
        assert_eq!(
            Value::from(InvoiceState::RefundRequested),
            Value::from("refund_requested")
        );
        assert_eq!(
            Value::from(ReportStatus::Suspended),
            Value::from("suspended")
        );
        assert_eq!(
            Value::from(ClosureStatus::Finalizing),
            Value::from("finalizing")
        );
        assert_eq!(
            Value::from(SubmissionKind::BillingData),
            Value::from("billing_data")
        );
        assert_eq!(
            <InvoiceState as ValueType>::try_from(Value::from("overdue")).ok(),
            Some(InvoiceState::Overdue)
        );
        assert!(<InvoiceState as ValueType>::try_from(Value::from("issued")).is_err());
        assert!(<ReportStatus as ValueType>::try_from(Value::from("")).is_err());
        assert!(<ClosureStatus as ValueType>::try_from(Value::from("closed")).is_err());
        assert!(<SubmissionKind as ValueType>::try_from(Value::from("usage ")).is_err());
    }

    #[test]
    fn stored_ids_read_back_and_unreadable_ones_are_errors() {
        let account = AccountId::generate();
        assert_eq!(account_id(account.as_str()).unwrap(), account);
        let error = account_id("acc_nope").unwrap_err();
        assert_eq!(error.code(), marketbridge_core::ErrorCode::Internal);
        assert!(!error.message().contains("acc_nope"), "{}", error.message());
        assert!(subscription_id(account.as_str()).is_err());
    }
}
