//! The `plugin` driver: products run by the provider's own service, which
//! implements the `ProvisionerPlugin` gRPC interface
//! (`proto/marketbridge/plugin/v1/plugin.proto`). The catalog's
//! `[products.plugin]` table says where the plug-in listens.
//!
//! marketbridge decides each resource's secrets from the product's secret
//! templates and gives them to the customer at once; the plug-in is told to
//! make them work (`Provision`, `Rotate`) and to stop old ones (`Revoke`).
//! Every call runs in an outbox job with a deadline: transient gRPC codes
//! are retried with backoff, other codes are permanent, and a permanent
//! `Provision` failure puts the resource in ERROR with the plug-in's message.

pub mod settings;

use super::template::render;
use super::{Driver, DriverContext, Measurement, Prepared, Provisioned, Rotation, Secret};
use crate::model::ExternalId;
use async_trait::async_trait;
use marketbridge_catalog::Product;
use marketbridge_config::Config;
use marketbridge_core::crypto::random_token;
use marketbridge_core::ids::AccountId;
use marketbridge_core::metadata::json_to_metadata;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::plugin::v1 as pb;
use marketbridge_proto::plugin::v1::provisioner_plugin_client::ProvisionerPluginClient;
use marketbridge_rpc::TracedChannel;
use serde_json::Value as Json;
use settings::PluginSettings;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tonic::Code;
use tonic::metadata::MetadataValue;

/// Client of one plug-in.
pub type PluginClient = ProvisionerPluginClient<TracedChannel>;

/// Random bytes behind `{token}`.
const TOKEN_BYTES: usize = 32;
/// Longest plug-in message kept in errors and shown to customers.
const MAX_MESSAGE_CHARS: usize = 500;
/// What a customer sees when a plug-in refuses without saying why.
const DEFAULT_USER_MESSAGE: &str = "The provider could not complete this request.";

/// See the module documentation.
pub struct PluginDriver {
    tls: marketbridge_config::TlsOptions,
    default_timeout: Duration,
    token: Option<String>,
    clients: Mutex<HashMap<(String, u64), PluginClient>>,
}

impl std::fmt::Debug for PluginDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("PluginDriver")
            .field("default_timeout", &self.default_timeout)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// Our error for a plug-in's gRPC status; see the module documentation.
pub fn plugin_error(method: &str, status: &tonic::Status) -> Error {
    let message: String = status.message().chars().take(MAX_MESSAGE_CHARS).collect();
    let text = format!("plug-in {method}: {:?}: {message}", status.code());
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal | Code::Aborted => {
            Error::unavailable(text)
        }
        Code::DeadlineExceeded => Error::new(ErrorCode::Timeout, text),
        Code::ResourceExhausted => Error::new(ErrorCode::RateLimited, text),
        _ => {
            let shown = if message.trim().is_empty() {
                DEFAULT_USER_MESSAGE.to_owned()
            } else {
                message
            };
            Error::unprocessable(text).with_user_message(shown)
        }
    }
}

fn text(json: &Json) -> Option<String> {
    match json {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    }
}

impl PluginDriver {
    /// A driver calling plug-ins with the service's client TLS settings.
    pub fn new(
        tls: marketbridge_config::TlsOptions,
        default_timeout: Duration,
        token: Option<String>,
    ) -> Self {
        Self {
            tls,
            default_timeout,
            token: token.filter(|t| !t.is_empty()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The driver as configured.
    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config.tls.clone(),
            Duration::from_millis(config.provisioning.plugin_timeout_ms.max(1)),
            Some(config.provisioning.plugin_token.clone()),
        )
    }

    fn timeout(&self, settings: &PluginSettings) -> Duration {
        settings
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.default_timeout)
    }

    /// The client of a product's plug-in (one lazily connecting channel per
    /// URL and deadline).
    pub fn client(&self, settings: &PluginSettings) -> Result<PluginClient> {
        let timeout = self.timeout(settings);
        let key = (settings.url.trim().to_owned(), timeout.as_millis() as u64);
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| Error::internal("plug-in client cache poisoned"))?;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let channel = marketbridge_rpc::channel(
            &key.0,
            &marketbridge_rpc::ClientCredentials::tls_only(&self.tls),
            timeout,
        )?;
        let client = ProvisionerPluginClient::new(channel);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// A request with the deadline and the bearer token.
    fn request<T>(&self, settings: &PluginSettings, message: T) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout(settings));
        if let Some(token) = &self.token {
            let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Error::validation("provisioning.plugin_token has invalid characters")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    fn resource(context: &DriverContext<'_>) -> Result<pb::Resource> {
        Ok(pb::Resource {
            id: context.resource_id.to_owned(),
            account_id: context.account_id.to_owned(),
            name: context.name.to_owned(),
            product_id: context.product.id.clone(),
            plan: Some(pb::Plan {
                id: context.plan.id.clone(),
                limits: context.plan.limits.clone(),
                features: context.plan.features.clone(),
            }),
            metadata: Some(json_to_metadata("metadata", context.metadata)?),
            imported_id: match context.state.get("source").and_then(Json::as_str) {
                Some("plugin") => context.state["imported"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            },
            app_urls: context
                .app_urls
                .iter()
                .map(|u| pb::AppUrl {
                    url: u.url.clone(),
                    target: u.target.clone(),
                })
                .collect(),
        })
    }

    fn secrets(settings: &PluginSettings, context: &DriverContext<'_>) -> Vec<Secret> {
        // Metadata first, so the built-in placeholders always win.
        let mut values: BTreeMap<String, String> = match context.metadata {
            Json::Object(metadata) => metadata
                .iter()
                .filter_map(|(key, value)| text(value).map(|v| (key.clone(), v)))
                .collect(),
            _ => BTreeMap::new(),
        };
        values.insert("resource_id".into(), context.resource_id.to_owned());
        values.insert("account_id".into(), context.account_id.to_owned());
        values.insert("product_id".into(), context.product.id.clone());
        values.insert("plan_id".into(), context.plan.id.clone());
        values.insert("name".into(), context.name.to_owned());
        values.insert("token".into(), random_token(TOKEN_BYTES));
        settings
            .secrets
            .iter()
            .map(|(name, template)| Secret {
                name: name.clone(),
                value: render(template, &values),
                environment_overrides: settings
                    .environment_overrides
                    .get(name)
                    .map(|environments| {
                        environments
                            .iter()
                            .map(|(environment, t)| (environment.clone(), render(t, &values)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn protos(secrets: &[Secret]) -> Vec<marketbridge_proto::common::v1::Secret> {
        secrets.iter().map(Secret::to_proto).collect()
    }
}

#[async_trait]
impl Driver for PluginDriver {
    fn name(&self) -> &'static str {
        "plugin"
    }

    fn check_product(&self, product: &Product) -> Result<()> {
        PluginSettings::of(product).map(|_| ())
    }

    async fn prepare(&self, context: &DriverContext<'_>) -> Result<Prepared> {
        let settings = PluginSettings::of(context.product)?;
        Ok(Prepared {
            secrets: Self::secrets(&settings, context),
            state: context.state.clone(),
            ready: false,
            delay_seconds: 0,
        })
    }

    async fn provision(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<Provisioned> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::ProvisionRequest {
            resource: Some(Self::resource(context)?),
            secrets: Self::protos(secrets),
        };
        let answer = self
            .client(&settings)?
            .provision(self.request(&settings, request)?)
            .await
            .map_err(|status| plugin_error("Provision", &status))?
            .into_inner();
        Ok(match answer.state() {
            pb::ProvisionedState::Onboarding => Provisioned::Onboarding,
            pb::ProvisionedState::Ready | pb::ProvisionedState::Unspecified => Provisioned::Ready,
        })
    }

    async fn apply_plan(&self, context: &DriverContext<'_>) -> Result<()> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::UpdateRequest {
            resource: Some(Self::resource(context)?),
        };
        self.client(&settings)?
            .update(self.request(&settings, request)?)
            .await
            .map_err(|status| plugin_error("Update", &status))?;
        Ok(())
    }

    async fn rotate(&self, context: &DriverContext<'_>, _current: &[Secret]) -> Result<Rotation> {
        let settings = PluginSettings::of(context.product)?;
        Ok(Rotation {
            secrets: Self::secrets(&settings, context),
            // The plug-in learns of them in `complete_rotation`, in the outbox.
            sync: false,
            partial: false,
            state: context.state.clone(),
        })
    }

    async fn complete_rotation(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<()> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::RotateRequest {
            resource: Some(Self::resource(context)?),
            secrets: Self::protos(secrets),
        };
        self.client(&settings)?
            .rotate(self.request(&settings, request)?)
            .await
            .map_err(|status| plugin_error("Rotate", &status))?;
        Ok(())
    }

    async fn revoke(&self, context: &DriverContext<'_>, old: &[Secret]) -> Result<()> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::RevokeRequest {
            resource: Some(Self::resource(context)?),
            secrets: Self::protos(old),
        };
        self.client(&settings)?
            .revoke(self.request(&settings, request)?)
            .await
            .map_err(|status| plugin_error("Revoke", &status))?;
        Ok(())
    }

    async fn suspend(&self, context: &DriverContext<'_>) -> Result<()> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::SuspendRequest {
            resource: Some(Self::resource(context)?),
        };
        self.client(&settings)?
            .suspend(self.request(&settings, request)?)
            .await
            .map_err(|status| plugin_error("Suspend", &status))?;
        Ok(())
    }

    async fn resume(&self, context: &DriverContext<'_>) -> Result<()> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::ResumeRequest {
            resource: Some(Self::resource(context)?),
        };
        self.client(&settings)?
            .resume(self.request(&settings, request)?)
            .await
            .map_err(|status| plugin_error("Resume", &status))?;
        Ok(())
    }

    async fn deprovision(&self, context: &DriverContext<'_>) -> Result<()> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::DeprovisionRequest {
            resource: Some(Self::resource(context)?),
        };
        self.client(&settings)?
            .deprovision(self.request(&settings, request)?)
            .await
            .map_err(|status| plugin_error("Deprovision", &status))?;
        Ok(())
    }

    async fn list_importable(
        &self,
        product: &Product,
        account_id: &AccountId,
        marketplace_account_id: &ExternalId,
    ) -> Result<Vec<super::Importable>> {
        let settings = PluginSettings::of(product)?;
        let request = pb::ListImportableRequest {
            account_id: account_id.to_string(),
            marketplace_account_id: marketplace_account_id.to_string(),
            product_id: product.id.clone(),
        };
        let answer = match self
            .client(&settings)?
            .list_importable(self.request(&settings, request)?)
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => return Ok(Vec::new()),
            Err(status) => return Err(plugin_error("ListImportable", &status)),
        };
        Ok(answer
            .resources
            .into_iter()
            .map(|r| super::Importable {
                id: r.id,
                name: r.name,
                metadata: marketbridge_core::metadata::metadata_to_json(r.metadata.as_ref()),
                secrets: r
                    .secrets
                    .into_iter()
                    .map(|s| Secret {
                        name: s.name,
                        value: s.value,
                        environment_overrides: s.environment_overrides,
                    })
                    .collect(),
            })
            .collect())
    }

    async fn measure(&self, context: &DriverContext<'_>) -> Result<Vec<Measurement>> {
        let settings = PluginSettings::of(context.product)?;
        let request = pb::ReportUsageRequest {
            resource: Some(Self::resource(context)?),
        };
        let answer = match self
            .client(&settings)?
            .report_usage(self.request(&settings, request)?)
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => return Ok(Vec::new()),
            Err(status) => return Err(plugin_error("ReportUsage", &status)),
        };
        Ok(answer
            .measurements
            .into_iter()
            .filter(|m| {
                let valid = m.quantity >= 0 && !m.metric_id.is_empty();
                if !valid {
                    tracing::warn!(resource.id = %context.resource_id, metric = %m.metric_id, quantity = m.quantity, "plug-in reported an invalid measurement; ignored");
                }
                valid
            })
            .map(|m| Measurement {
                metric_id: m.metric_id,
                quantity: m.quantity,
            })
            .collect())
    }
}
