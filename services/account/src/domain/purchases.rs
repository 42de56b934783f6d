//! Purchase tokens: the marketplaces that send the buyer's browser to us
//! with a token (AWS's fulfillment URL, Azure's landing page) rather than a
//! token we can verify ourselves. The adapter resolves the token with the
//! marketplace first, with no transaction open; then the account is recorded
//! (signup required) and a `purchase.resolved` event is recorded for the
//! marketplace's processor, which brings the subscription in.

use super::{AccountDomain, pb_marketplace};
use crate::adapter::{PURCHASE_RESOLVED, ResolvedPurchase};
use crate::convert::MAX_EXTERNAL_ID;
use marketbridge_core::crypto::{SecretString, sha256_hex};
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Marketplace, Result, Validator};
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::common::v1::MarketplaceRef;

/// The longest purchase token accepted (Azure's are around 1 KB).
const MAX_TOKEN: usize = 8 * 1024;

/// The recorded event's id: the same token gives the same id (a second
/// resolution is a duplicate delivery), a new token for the same
/// subscription a new event. Only a digest of the token is kept.
fn event_external_id(resolved: &ResolvedPurchase, token: &str) -> String {
    const PREFIX: &str = "purchase:";
    const DIGEST_CHARS: usize = 32;
    let digest = sha256_hex(token.as_bytes());
    let room = MAX_EXTERNAL_ID - PREFIX.len() - 1 - DIGEST_CHARS;
    let mut subscription = resolved.subscription_external_id.as_str();
    while subscription.len() > room {
        let mut end = room.min(subscription.len() - 1);
        while !subscription.is_char_boundary(end) {
            end -= 1;
        }
        subscription = &subscription[..end];
    }
    format!("{PREFIX}{subscription}:{}", &digest[..DIGEST_CHARS])
}

impl AccountDomain {
    /// Resolves a purchase token with its marketplace and records what it
    /// stands for.
    pub async fn resolve_purchase(
        &self,
        request: pb::ResolvePurchaseRequest,
    ) -> Result<pb::ResolvePurchaseResponse> {
        let marketplace = Marketplace::from_proto("marketplace", request.marketplace)?;
        let token = request.token.trim();
        let mut validator = Validator::new();
        validator.require("token", token);
        validator.max_len("token", token, MAX_TOKEN);
        validator.finish()?;
        let adapter = self.adapters.get(marketplace).cloned().ok_or_else(|| {
            Error::unprocessable(format!(
                "no adapter is configured for marketplace {marketplace}"
            ))
        })?;
        let resolved = adapter.resolve_purchase(&SecretString::new(token)).await?;
        let account_external_id = resolved.account_external_id.trim();
        if account_external_id.is_empty()
            || account_external_id.len() > MAX_EXTERNAL_ID
            || resolved.subscription_external_id.trim().is_empty()
        {
            return Err(Error::unavailable(format!(
                "{marketplace} resolved the purchase token to no usable account or subscription"
            )));
        }
        tracing::info!(
            marketplace = %marketplace,
            account.external_id = %account_external_id,
            subscription.external_id = %resolved.subscription_external_id,
            "purchase token resolved"
        );

        let snapshot = resolved.snapshot.clone();
        let mut upsert = pb::UpsertAccountRequest {
            context: request.context.clone().map(|mut context| {
                // Resolving is idempotent by itself; a key would replay a
                // stale answer once the signup moved on.
                context.idempotency_key.clear();
                context
            }),
            marketplace_ref: Some(MarketplaceRef::new(
                pb_marketplace(marketplace),
                account_external_id.to_owned(),
            )),
            display_name: snapshot.display_name.unwrap_or_default(),
            url: snapshot.url.unwrap_or_default(),
            contact: snapshot.contact,
            marketplace_state: snapshot.marketplace_state,
            marketplace_update_time: snapshot.update_time.map(to_timestamp),
            attributes: snapshot.attributes.into_iter().collect(),
            signup_required: true,
            ..Default::default()
        };
        if let Some(signup) = snapshot.signup {
            upsert.marketplace_signup_state = signup as i32;
        }
        let account = self.upsert(upsert).await?;

        let payload = serde_json::to_string(&resolved.payload())
            .map_err(|e| Error::internal(format!("purchase payload: {e}")))?;
        self.record_event(pb::RecordMarketplaceEventRequest {
            marketplace: marketplace.to_proto(),
            external_id: event_external_id(&resolved, token),
            event_type: PURCHASE_RESOLVED.to_owned(),
            payload_json: payload,
            occurred_at: Some(to_timestamp(self.clock.now())),
            channel: "purchase_token".to_owned(),
        })
        .await?;

        Ok(pb::ResolvePurchaseResponse {
            account: Some(account),
            purchase: Some(pb::Purchase {
                subscription_external_id: resolved.subscription_external_id,
                product_id: resolved.product_id,
                plan_id: resolved.plan_id,
                quantity: resolved.quantity.unwrap_or_default(),
                purchaser: resolved.purchaser,
                attributes: resolved.attributes.into_iter().collect(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_the_token_not_the_call() {
        let resolved = ResolvedPurchase {
            subscription_external_id: "sub-1".into(),
            ..Default::default()
        };
        let first = event_external_id(&resolved, "token-a");
        assert_eq!(first, event_external_id(&resolved, "token-a"));
        assert_ne!(first, event_external_id(&resolved, "token-b"));
        assert!(first.starts_with("purchase:sub-1:"));
        assert!(!first.contains("token-a"));
        let long = ResolvedPurchase {
            subscription_external_id: "s".repeat(400),
            ..Default::default()
        };
        assert_eq!(event_external_id(&long, "t").len(), MAX_EXTERNAL_ID);
        let wide = ResolvedPurchase {
            subscription_external_id: "é".repeat(300),
            ..Default::default()
        };
        assert!(event_external_id(&wide, "t").len() <= MAX_EXTERNAL_ID);
    }
}
