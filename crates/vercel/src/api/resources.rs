//! Calls about resources: reading, importing, updating and deleting them at
//! Vercel, pushing their secrets, and connecting them to projects.

use super::{NO_BODY, VercelApi, path_segment};
use crate::model::vercel_api::{
    ProjectConnection, ResourceImport, ResourceUpdate, SecretsUpdate, VercelResource,
    VercelResourceList,
};
use marketbridge_core::Result;
use marketbridge_core::crypto::SecretString;
use reqwest::Method;

const RESOURCE_ROUTE: &str = "/v1/installations/{id}/resources/{resourceId}";

fn resource_path(installation_id: &str, resource_id: &str) -> Result<String> {
    let id = path_segment("installationId", installation_id)?;
    let resource = path_segment("resourceId", resource_id)?;
    Ok(format!("/v1/installations/{id}/resources/{resource}"))
}

impl VercelApi {
    /// `GET /v1/installations/{id}/resources`: the resources as Vercel
    /// knows them.
    pub async fn list_resources(
        &self,
        token: &SecretString,
        installation_id: &str,
    ) -> Result<Vec<VercelResource>> {
        let id = path_segment("installationId", installation_id)?;
        let list: VercelResourceList = self
            .call_json(
                token,
                Method::GET,
                "/v1/installations/{id}/resources",
                &format!("/v1/installations/{id}/resources"),
                NO_BODY,
            )
            .await?;
        Ok(list
            .resources
            .into_iter()
            .map(|mut resource| {
                if resource.id.is_empty() {
                    resource.id = resource.partner_id.clone().unwrap_or_default();
                }
                resource
            })
            .collect())
    }

    /// `GET /v1/installations/{id}/resources/{rid}`.
    pub async fn get_resource(
        &self,
        token: &SecretString,
        installation_id: &str,
        resource_id: &str,
    ) -> Result<VercelResource> {
        let path = resource_path(installation_id, resource_id)?;
        self.call_json(token, Method::GET, RESOURCE_ROUTE, &path, NO_BODY)
            .await
    }

    /// `PUT /v1/installations/{id}/resources/{rid}`: creates or replaces a
    /// resource at Vercel.
    pub async fn import_resource(
        &self,
        token: &SecretString,
        installation_id: &str,
        resource_id: &str,
        resource: &ResourceImport,
    ) -> Result<()> {
        let path = resource_path(installation_id, resource_id)?;
        self.call(token, Method::PUT, RESOURCE_ROUTE, &path, Some(resource))
            .await
            .map(drop)
    }

    /// `PATCH /v1/installations/{id}/resources/{rid}`: status, notice, plan
    /// or name changed on our side.
    pub async fn update_resource(
        &self,
        token: &SecretString,
        installation_id: &str,
        resource_id: &str,
        update: &ResourceUpdate,
    ) -> Result<()> {
        let path = resource_path(installation_id, resource_id)?;
        self.call(token, Method::PATCH, RESOURCE_ROUTE, &path, Some(update))
            .await
            .map(drop)
    }

    /// `DELETE /v1/installations/{id}/resources/{rid}`.
    pub async fn delete_resource(
        &self,
        token: &SecretString,
        installation_id: &str,
        resource_id: &str,
    ) -> Result<()> {
        let path = resource_path(installation_id, resource_id)?;
        self.call(token, Method::DELETE, RESOURCE_ROUTE, &path, NO_BODY)
            .await
            .map(drop)
    }

    /// `PUT /v1/installations/{id}/resources/{rid}/secrets`: the resource's
    /// current secrets (all, or only the listed ones when `partial`).
    pub async fn update_secrets(
        &self,
        token: &SecretString,
        installation_id: &str,
        resource_id: &str,
        secrets: &SecretsUpdate,
    ) -> Result<()> {
        let path = format!("{}/secrets", resource_path(installation_id, resource_id)?);
        self.call(
            token,
            Method::PUT,
            "/v1/installations/{id}/resources/{resourceId}/secrets",
            &path,
            Some(secrets),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/integrations/installations/{id}/resources/{rid}/connections`:
    /// connects a resource to a project.
    pub async fn connect_resource(
        &self,
        token: &SecretString,
        installation_id: &str,
        resource_id: &str,
        connection: &ProjectConnection,
    ) -> Result<()> {
        let id = path_segment("installationId", installation_id)?;
        let resource = path_segment("resourceId", resource_id)?;
        self.call(
            token,
            Method::POST,
            "/v1/integrations/installations/{id}/resources/{resourceId}/connections",
            &format!("/v1/integrations/installations/{id}/resources/{resource}/connections"),
            Some(connection),
        )
        .await
        .map(drop)
    }
}
