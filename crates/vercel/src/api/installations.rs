//! Calls about an installation: its plan and notice, its account and
//! members, events, and its token.

use super::{NO_BODY, VercelApi, path_segment};
use crate::model::vercel_api::{
    AccountInfo, CredentialRotation, EventDispatch, InstallationUpdate, IntegrationEvent, Member,
    RotatedCredential,
};
use marketbridge_core::Result;
use marketbridge_core::crypto::SecretString;
use reqwest::Method;

impl VercelApi {
    /// `PATCH /v1/installations/{id}`: the installation's status, plan or
    /// notice.
    pub async fn update_installation(
        &self,
        token: &SecretString,
        installation_id: &str,
        update: &InstallationUpdate,
    ) -> Result<()> {
        let id = path_segment("installationId", installation_id)?;
        self.call(
            token,
            Method::PATCH,
            "/v1/installations/{id}",
            &format!("/v1/installations/{id}"),
            Some(update),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/installations/{id}/account`: the team's name, URL and
    /// contact.
    pub async fn account_info(
        &self,
        token: &SecretString,
        installation_id: &str,
    ) -> Result<AccountInfo> {
        let id = path_segment("installationId", installation_id)?;
        self.call_json(
            token,
            Method::GET,
            "/v1/installations/{id}/account",
            &format!("/v1/installations/{id}/account"),
            NO_BODY,
        )
        .await
    }

    /// `GET /v1/installations/{id}/member/{memberId}`: a team member's role.
    pub async fn member(
        &self,
        token: &SecretString,
        installation_id: &str,
        member_id: &str,
    ) -> Result<Member> {
        let id = path_segment("installationId", installation_id)?;
        let member = path_segment("memberId", member_id)?;
        self.call_json(
            token,
            Method::GET,
            "/v1/installations/{id}/member/{memberId}",
            &format!("/v1/installations/{id}/member/{member}"),
            NO_BODY,
        )
        .await
    }

    /// `POST /v1/installations/{id}/events`: tells Vercel to re-read the
    /// installation or a resource.
    pub async fn dispatch_event(
        &self,
        token: &SecretString,
        installation_id: &str,
        event: IntegrationEvent,
    ) -> Result<()> {
        let id = path_segment("installationId", installation_id)?;
        self.call(
            token,
            Method::POST,
            "/v1/installations/{id}/events",
            &format!("/v1/installations/{id}/events"),
            Some(&EventDispatch { event }),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/installations/{id}/credentials/rotate`: a new token for the
    /// installation; the old one works until retired.
    pub async fn rotate_credentials(
        &self,
        token: &SecretString,
        installation_id: &str,
        rotation: &CredentialRotation,
    ) -> Result<RotatedCredential> {
        let id = path_segment("installationId", installation_id)?;
        self.call_json(
            token,
            Method::POST,
            "/v1/installations/{id}/credentials/rotate",
            &format!("/v1/installations/{id}/credentials/rotate"),
            Some(rotation),
        )
        .await
    }
}
