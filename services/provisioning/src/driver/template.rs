//! The built-in `template` driver: secrets rendered from templates in the
//! catalog, with a fresh random user and password per resource. It runs
//! nothing itself; it suits products whose real provisioning happens
//! elsewhere, and demos. With `provisioning_delay_seconds` it behaves like a
//! slow product: resources start `pending` and become `ready` later, and
//! rotations answer asynchronously.

use super::{Driver, DriverContext, Measurement, Prepared, Provisioned, Rotation, Secret};
use async_trait::async_trait;
use marketbridge_core::crypto::random_token;
use marketbridge_core::{Error, Result};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;

/// See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct TemplateDriver;

/// Replaces every `{key}` in `template` with its value.
pub(crate) fn render(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

fn text(json: &Json, key: &str) -> String {
    match json.get(key) {
        Some(Json::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => String::new(),
    }
}

impl TemplateDriver {
    fn secrets(context: &DriverContext<'_>, username: &str, password: &str) -> Result<Vec<Secret>> {
        // Metadata values first, so the built-in names always win.
        let mut values: BTreeMap<String, String> = match context.metadata {
            Json::Object(metadata) => metadata
                .keys()
                .map(|key| (key.clone(), text(context.metadata, key)))
                .collect(),
            _ => BTreeMap::new(),
        };
        values.insert("resource_id".into(), context.resource_id.to_owned());
        values.insert("account_id".into(), context.account_id.to_owned());
        values.insert("name".into(), context.name.to_owned());
        values.insert("plan_id".into(), context.plan.id.clone());
        values.insert("username".into(), username.to_owned());
        values.insert("password".into(), password.to_owned());
        let templates = &context.product.template;
        if templates.secrets.is_empty() {
            return Err(Error::internal(format!(
                "product `{}` has no secret templates",
                context.product.id
            )));
        }
        Ok(templates
            .secrets
            .iter()
            .map(|(name, template)| Secret {
                name: name.clone(),
                value: render(template, &values),
                environment_overrides: templates
                    .environment_overrides
                    .get(name)
                    .map(|envs| {
                        envs.iter()
                            .map(|(env, t)| (env.clone(), render(t, &values)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    fn delay(context: &DriverContext<'_>) -> u64 {
        context.product.template.provisioning_delay_seconds
    }
}

#[async_trait]
impl Driver for TemplateDriver {
    fn name(&self) -> &'static str {
        "template"
    }

    async fn prepare(&self, context: &DriverContext<'_>) -> Result<Prepared> {
        let suffix: String = context
            .resource_id
            .chars()
            .rev()
            .take(12)
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        let username = format!("u_{suffix}");
        let password = random_token(24);
        let secrets = Self::secrets(context, &username, &password)?;
        let delay = Self::delay(context);
        Ok(Prepared {
            secrets,
            state: json!({ "username": username }),
            ready: delay == 0,
            delay_seconds: delay,
        })
    }

    async fn provision(
        &self,
        _context: &DriverContext<'_>,
        _secrets: &[Secret],
    ) -> Result<Provisioned> {
        Ok(Provisioned::Ready)
    }

    async fn apply_plan(&self, _context: &DriverContext<'_>) -> Result<()> {
        Ok(())
    }

    async fn rotate(&self, context: &DriverContext<'_>, _current: &[Secret]) -> Result<Rotation> {
        let username = text(context.state, "username");
        let username = if username.is_empty() {
            "user".to_owned()
        } else {
            username
        };
        let password = random_token(24);
        let secrets = Self::secrets(context, &username, &password)?;
        Ok(Rotation {
            secrets,
            sync: Self::delay(context) == 0,
            partial: false,
            state: context.state.clone(),
        })
    }

    async fn complete_rotation(
        &self,
        _context: &DriverContext<'_>,
        _secrets: &[Secret],
    ) -> Result<()> {
        Ok(())
    }

    async fn revoke(&self, _context: &DriverContext<'_>, _old: &[Secret]) -> Result<()> {
        Ok(())
    }

    async fn suspend(&self, _context: &DriverContext<'_>) -> Result<()> {
        Ok(())
    }

    async fn resume(&self, _context: &DriverContext<'_>) -> Result<()> {
        Ok(())
    }

    async fn deprovision(&self, _context: &DriverContext<'_>) -> Result<()> {
        Ok(())
    }

    async fn measure(&self, _context: &DriverContext<'_>) -> Result<Vec<Measurement>> {
        Ok(Vec::new())
    }
}
