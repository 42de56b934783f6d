//! Legacy SNS HTTPS deliveries: configured topic, verified signature, then
//! a confirmation visited or a notification recorded (deduplicated on
//! `MessageId`).

use crate::error::generic_error_response;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use marketbridge_aws::events::LegacyMessage;
use marketbridge_aws::sns::{Refusal, SnsMessage, message_type};
use marketbridge_core::Error;
use marketbridge_core::time::{parse_rfc3339, to_timestamp};
use marketbridge_proto::account::v1::RecordMarketplaceEventRequest;
use marketbridge_proto::common::v1::Marketplace;
use serde_json::json;

/// Channel name of SNS deliveries.
pub const SNS_CHANNEL: &str = "sns";

/// `POST {sns_path}`: 200 once confirmed or recorded; 403 for an unknown
/// topic or a signature that does not verify, 400 for an unreadable body.
#[utoipa::path(
    operation_id = "aws_sns_receive",
    post,
    path = "/aws/sns",
    tag = "aws",
    request_body(content = String, content_type = "text/plain", description = "An SNS message (JSON) of a configured AWS Marketplace topic"),
    responses(
        (status = 200, description = "Confirmed or recorded (`duplicate` when seen before)"),
        crate::openapi::doc::GenericErrors
    )
)]
pub async fn receive(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(adapter) = state.aws.adapter() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let message = match SnsMessage::parse(&body) {
        Ok(message) => message,
        Err(refusal) => {
            tracing::warn!(error = %refusal, "unreadable sns delivery refused");
            return generic_error_response(&Error::validation("the body is not an SNS message"));
        }
    };
    if !adapter.topics.contains(&message.topic_arn) {
        tracing::warn!(sns.topic = %message.topic_arn, "sns delivery from a topic not configured refused");
        return generic_error_response(&Error::permission_denied("the topic is not accepted"));
    }
    let now = state.signup.clock().now().timestamp();
    if let Err(refusal) = adapter.verifier.verify(&message, now).await {
        tracing::warn!(sns.message_id = %message.message_id, error = %refusal, "sns delivery refused");
        return generic_error_response(&match refusal {
            Refusal::CertificateUnavailable(_) => {
                Error::unavailable("the signing certificate could not be fetched")
            }
            Refusal::Unreadable(text) => Error::validation(text),
            _ => Error::permission_denied("the signature does not verify"),
        });
    }
    match message.kind.as_str() {
        message_type::SUBSCRIPTION_CONFIRMATION => confirm(adapter, &message).await,
        message_type::NOTIFICATION => record(&state, &message).await,
        _ => {
            tracing::info!(sns.topic = %message.topic_arn, kind = %message.kind, "sns message acknowledged");
            (StatusCode::OK, Json(json!({"recorded": false}))).into_response()
        }
    }
}

async fn confirm(adapter: &super::state::AwsAdapter, message: &SnsMessage) -> Response {
    let url = message.subscribe_url.clone().unwrap_or_default();
    if !adapter.certificates.allows_host(&url) {
        tracing::warn!(sns.topic = %message.topic_arn, "a subscribe url off the trusted host refused");
        return generic_error_response(&Error::permission_denied(
            "the SubscribeURL is not on a trusted host",
        ));
    }
    match adapter.http.get(&url).send().await {
        Ok(answer) if answer.status().is_success() => {
            tracing::info!(sns.topic = %message.topic_arn, "sns subscription confirmed");
            (StatusCode::OK, Json(json!({"confirmed": true}))).into_response()
        }
        Ok(answer) => {
            tracing::warn!(
                status = answer.status().as_u16(),
                "sns subscription confirmation refused"
            );
            generic_error_response(&Error::unavailable("the confirmation was not accepted"))
        }
        Err(error) => {
            tracing::warn!(error = %error, "sns subscription confirmation failed");
            generic_error_response(&Error::unavailable("the confirmation could not be sent"))
        }
    }
}

async fn record(state: &AppState, message: &SnsMessage) -> Response {
    let Some(payload) = LegacyMessage::parse(&message.message) else {
        tracing::warn!(sns.message_id = %message.message_id, "an sns message without a marketplace action refused");
        return generic_error_response(&Error::validation(
            "the message is not an AWS Marketplace notification",
        ));
    };
    let recorded = state
        .accounts
        .record_marketplace_event(RecordMarketplaceEventRequest {
            marketplace: Marketplace::Aws as i32,
            external_id: message.message_id.clone(),
            event_type: format!("sns.{}", payload.action),
            payload_json: message.message.clone(),
            occurred_at: parse_rfc3339("Timestamp", &message.timestamp)
                .ok()
                .map(to_timestamp),
            channel: SNS_CHANNEL.to_owned(),
        })
        .await;
    match recorded {
        Ok(answer) => {
            tracing::info!(sns.message_id = %message.message_id, action = %payload.action, duplicate = answer.duplicate, "aws sns notification recorded");
            (
                StatusCode::OK,
                Json(json!({"recorded": true, "duplicate": answer.duplicate})),
            )
                .into_response()
        }
        Err(error) => {
            tracing::warn!(sns.message_id = %message.message_id, error = %error, "aws sns notification not recorded; sns will retry");
            generic_error_response(&error)
        }
    }
}
