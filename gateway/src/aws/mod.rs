//! The AWS Marketplace adapter: the fulfillment URL and notifications.
//!
//! - `POST {aws.fulfillment_path}`: the buyer's browser with
//!   `x-amzn-marketplace-token` (form; the query string is accepted too).
//!   The account service resolves it with `ResolveCustomer`; then a 303 to
//!   the shared signup page ([`crate::signup`]) with our ticket, never the
//!   token. `GET` with the token in the query string does the same; `GET`
//!   with `?ticket=` shows the form, and `POST {path}/complete` records the
//!   signup.
//! - `POST {aws.events_path}`: EventBridge's API destination. Events are not
//!   signed: the connection's API key header is compared in constant time,
//!   then the event is recorded (deduplicated on its `id`).
//! - `POST {aws.sns_path}`: legacy SNS HTTPS deliveries. The topic must be
//!   configured and the signature verify with a certificate from a trusted
//!   URL; a `SubscriptionConfirmation` is confirmed by visiting its
//!   `SubscribeURL`, a `Notification` recorded (deduplicated on
//!   `MessageId`).

mod events;
mod fulfillment;
mod sns;
pub mod state;

use crate::openapi::doc::relocated;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use state::AwsState;

/// The AWS routes (none when AWS is not configured), at the configured
/// paths.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let Some(adapter) = state.aws.adapter() else {
        return OpenApiRouter::new();
    };
    let mut router = OpenApiRouter::new()
        .routes(relocated(
            &adapter.fulfillment_path,
            routes!(fulfillment::start, fulfillment::visit),
        ))
        .routes(relocated(
            &format!("{}/complete", adapter.fulfillment_path),
            routes!(fulfillment::complete),
        ));
    if adapter.event_key.is_some() {
        router = router.routes(relocated(&adapter.events_path, routes!(events::receive)));
    }
    if !adapter.topics.is_empty() {
        router = router.routes(relocated(&adapter.sns_path, routes!(sns::receive)));
    }
    router
}
