//! The SSO code exchange of "Open in provider".

use super::VercelApi;
use crate::model::vercel_api::{SsoTokenRequest, SsoTokens};
use marketbridge_core::Result;
use reqwest::Method;

impl VercelApi {
    /// `POST /v1/integrations/sso/token`: trades the redirect's `code` for
    /// the user's `id_token` (verify it before trusting it; never store it).
    pub async fn exchange_sso_code(&self, request: &SsoTokenRequest) -> Result<SsoTokens> {
        let answer = self
            .call_unauthenticated(
                Method::POST,
                "/v1/integrations/sso/token",
                "/v1/integrations/sso/token",
                request,
            )
            .await?;
        answer.json()
    }
}
