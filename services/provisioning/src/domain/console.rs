//! The resource console (`RunResourceCommand`): `help` and `info` for every
//! resource, anything else for the product's driver.

use super::ProvisioningDomain;
use crate::console::{bold, paragraph, table, text};
use crate::convert::connections;
use crate::lifecycle::resource::{self as lifecycle, Event};
use marketbridge_core::ids::ResourceId;
use marketbridge_core::time::to_rfc3339;
use marketbridge_core::{Result, Validator};
use marketbridge_proto::provisioning::v1 as pb;

/// Longest command line.
const MAX_INPUT: usize = 10_000;

impl ProvisioningDomain {
    /// Runs one console command; see `RunResourceCommand`.
    pub async fn run_resource_command(
        &self,
        request: pb::RunResourceCommandRequest,
    ) -> Result<pb::RunResourceCommandResponse> {
        let input = request.input.trim();
        let mut validator = Validator::new();
        validator.require("input", input);
        validator.max_len("input", input, MAX_INPUT);
        validator.finish()?;
        let resource_id = ResourceId::parse("resourceId", &request.resource_id)?;
        let owner = super::resources::owner_filter(&request.account_id)?;
        let row = self
            .require_cached_resource(&resource_id, owner.as_ref())
            .await?;
        lifecycle::step(Self::machine_resource(&row), Event::OpenConsole)?;
        let driver = self.driver_for(&row)?;
        let command = input.trim_end_matches(';').trim().to_ascii_lowercase();
        let blocks = match command.as_str() {
            "help" | "\\?" => {
                let mut lines = vec![
                    paragraph(vec![bold("help"), text(": this list")]),
                    paragraph(vec![
                        bold("info"),
                        text(": the resource, its plan and where it is used"),
                    ]),
                ];
                if let Some(more) = driver.driver.console_help() {
                    lines.push(paragraph(vec![
                        bold("anything else"),
                        text(": "),
                        text(more),
                    ]));
                }
                lines
            }
            "info" => {
                let connections = connections(&row)?;
                let secrets = self.open(&row.secrets)?;
                let mut facts = vec![
                    ("id", row.id.clone()),
                    ("name", row.name.clone()),
                    ("product", row.product_id.clone()),
                    ("plan", row.plan_id.clone()),
                    ("status", row.status.to_string()),
                    ("created", to_rfc3339(row.created_at)),
                    (
                        "secrets",
                        secrets
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    (
                        "projects",
                        connections
                            .iter()
                            .map(|c| c.project_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ];
                if !row.status_message.is_empty() {
                    facts.push(("status message", row.status_message.clone()));
                }
                vec![table(
                    Vec::new(),
                    facts
                        .into_iter()
                        .map(|(k, v)| vec![k.to_owned(), v])
                        .collect(),
                )]
            }
            _ => {
                lifecycle::step(Self::machine_resource(&row), Event::RunDriverCommand)?;
                let secrets = self.open(&row.secrets)?;
                driver
                    .driver
                    .console(&driver.context(), &secrets, input, request.read_only)
                    .await?
            }
        };
        tracing::info!(resource.id = %row.id, read_only = request.read_only, "console command run");
        Ok(pb::RunResourceCommandResponse { blocks })
    }
}
