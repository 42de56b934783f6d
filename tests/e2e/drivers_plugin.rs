//! The `plugin` driver through the whole set, against a small provisioner
//! plug-in served over real gRPC: it keeps the API keys it was told to
//! accept, so the tests can ask it which keys work, and it fails on request
//! (transient codes, permanent refusals, answers slower than the deadline).

use crate::drivers_support::{
    CatalogFile, context, current_secrets, direct_account, resource, secret,
};
use crate::support::{TestSet, set_on};
use chrono::Duration as ChronoDuration;
use marketbridge_config::TlsOptions;
use marketbridge_core::metadata::json_to_metadata;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::plugin::v1 as plugin_pb;
use marketbridge_proto::plugin::v1::provisioner_plugin_server::{
    ProvisionerPlugin, ProvisionerPluginServer,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use provisioning_pb::ResourceStatus;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The token marketbridge is configured to send.
const TOKEN: &str = "plugin-token-for-tests";
/// Name of the API key secret in the test catalog.
const KEY: &str = "SEARCH_API_KEY";

/// One call the plug-in received.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    resource_id: String,
    plan_id: String,
    limits: BTreeMap<String, i64>,
    region: String,
    keys: Vec<String>,
    /// The app URLs the resource carried.
    app_urls: Vec<String>,
}

/// What the plug-in does on its next call of a method.
enum Fault {
    Fail(Status),
    /// Never answers (the caller's deadline ends the call).
    Hang,
}

#[derive(Default)]
struct PluginState {
    calls: Vec<Call>,
    faults: HashMap<&'static str, VecDeque<Fault>>,
    /// Resource id → API keys that work.
    keys: HashMap<String, BTreeSet<String>>,
    suspended: BTreeSet<String>,
    usage: Vec<(String, i64)>,
    usage_unimplemented: bool,
    /// What `ListImportable` answers: (id, name, key issued for the
    /// marketplace).
    importable: Vec<(String, String, String)>,
    /// Accounts `ListImportable` was asked about.
    listed_for: Vec<String>,
}

/// A provisioner plug-in for a search product.
#[derive(Clone, Default)]
struct SearchPlugin {
    state: Arc<Mutex<PluginState>>,
}

impl SearchPlugin {
    fn fail_next(&self, method: &'static str, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        state.faults.entry(method).or_default().push_back(fault);
    }

    fn calls(&self, method: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// True when `key` opens `resource_id` now.
    fn accepts(&self, resource_id: &str, key: &str) -> bool {
        let state = self.state.lock().unwrap();
        !state.suspended.contains(resource_id)
            && state
                .keys
                .get(resource_id)
                .is_some_and(|keys| keys.contains(key))
    }

    fn knows(&self, resource_id: &str) -> bool {
        self.state.lock().unwrap().keys.contains_key(resource_id)
    }

    /// Records the call; answers the scripted fault, if any.
    async fn enter(
        &self,
        method: &'static str,
        authorization: Option<String>,
        resource: Option<&plugin_pb::Resource>,
        secrets: &[marketbridge_proto::common::v1::Secret],
    ) -> Result<String, Status> {
        if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("missing or wrong token"));
        }
        let resource = resource.ok_or_else(|| Status::invalid_argument("resource is required"))?;
        let plan = resource.plan.clone().unwrap_or_default();
        let metadata = marketbridge_core::metadata::metadata_to_json(resource.metadata.as_ref());
        let fault = {
            let mut state = self.state.lock().unwrap();
            state.calls.push(Call {
                method,
                resource_id: resource.id.clone(),
                plan_id: plan.id.clone(),
                limits: plan.limits.clone(),
                region: metadata["region"].as_str().unwrap_or_default().to_owned(),
                app_urls: resource
                    .app_urls
                    .iter()
                    .map(|u| format!("{} {}", u.target, u.url))
                    .collect(),
                keys: secrets
                    .iter()
                    .filter(|s| s.name == KEY)
                    .map(|s| s.value.clone())
                    .collect(),
            });
            state.faults.get_mut(method).and_then(VecDeque::pop_front)
        };
        match fault {
            Some(Fault::Fail(status)) => Err(status),
            Some(Fault::Hang) => std::future::pending().await,
            None => Ok(resource.id.clone()),
        }
    }

    fn keys_of(secrets: &[marketbridge_proto::common::v1::Secret]) -> Vec<String> {
        secrets
            .iter()
            .filter(|s| s.name == KEY)
            .map(|s| s.value.clone())
            .collect()
    }
}

fn authorization<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl ProvisionerPlugin for SearchPlugin {
    async fn provision(
        &self,
        request: Request<plugin_pb::ProvisionRequest>,
    ) -> Result<Response<plugin_pb::ProvisionResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        let id = self
            .enter("Provision", token, body.resource.as_ref(), &body.secrets)
            .await?;
        let mut state = self.state.lock().unwrap();
        state
            .keys
            .entry(id)
            .or_default()
            .extend(Self::keys_of(&body.secrets));
        Ok(Response::new(plugin_pb::ProvisionResponse {
            state: plugin_pb::ProvisionedState::Ready as i32,
        }))
    }

    async fn update(
        &self,
        request: Request<plugin_pb::UpdateRequest>,
    ) -> Result<Response<plugin_pb::UpdateResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        self.enter("Update", token, body.resource.as_ref(), &[])
            .await?;
        Ok(Response::new(plugin_pb::UpdateResponse {}))
    }

    async fn rotate(
        &self,
        request: Request<plugin_pb::RotateRequest>,
    ) -> Result<Response<plugin_pb::RotateResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        let id = self
            .enter("Rotate", token, body.resource.as_ref(), &body.secrets)
            .await?;
        let mut state = self.state.lock().unwrap();
        state
            .keys
            .entry(id)
            .or_default()
            .extend(Self::keys_of(&body.secrets));
        Ok(Response::new(plugin_pb::RotateResponse {}))
    }

    async fn revoke(
        &self,
        request: Request<plugin_pb::RevokeRequest>,
    ) -> Result<Response<plugin_pb::RevokeResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        let id = self
            .enter("Revoke", token, body.resource.as_ref(), &body.secrets)
            .await?;
        // An imported index is known by the id `ListImportable` gave it.
        let id = match body.resource.as_ref().map(|r| r.imported_id.clone()) {
            Some(imported) if !imported.is_empty() => imported,
            _ => id,
        };
        let mut state = self.state.lock().unwrap();
        if let Some(keys) = state.keys.get_mut(&id) {
            for key in Self::keys_of(&body.secrets) {
                keys.remove(&key);
            }
        }
        Ok(Response::new(plugin_pb::RevokeResponse {}))
    }

    async fn suspend(
        &self,
        request: Request<plugin_pb::SuspendRequest>,
    ) -> Result<Response<plugin_pb::SuspendResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        let id = self
            .enter("Suspend", token, body.resource.as_ref(), &[])
            .await?;
        self.state.lock().unwrap().suspended.insert(id);
        Ok(Response::new(plugin_pb::SuspendResponse {}))
    }

    async fn resume(
        &self,
        request: Request<plugin_pb::ResumeRequest>,
    ) -> Result<Response<plugin_pb::ResumeResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        let id = self
            .enter("Resume", token, body.resource.as_ref(), &[])
            .await?;
        self.state.lock().unwrap().suspended.remove(&id);
        Ok(Response::new(plugin_pb::ResumeResponse {}))
    }

    async fn deprovision(
        &self,
        request: Request<plugin_pb::DeprovisionRequest>,
    ) -> Result<Response<plugin_pb::DeprovisionResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        let id = self
            .enter("Deprovision", token, body.resource.as_ref(), &[])
            .await?;
        let mut state = self.state.lock().unwrap();
        state.keys.remove(&id);
        state.suspended.remove(&id);
        Ok(Response::new(plugin_pb::DeprovisionResponse {}))
    }

    async fn list_importable(
        &self,
        request: Request<plugin_pb::ListImportableRequest>,
    ) -> Result<Response<plugin_pb::ListImportableResponse>, Status> {
        if authorization(&request).as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("missing or wrong token"));
        }
        let body = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.listed_for.push(body.account_id.clone());
        let resources = state
            .importable
            .iter()
            .map(|(id, name, key)| plugin_pb::ImportableResource {
                id: id.clone(),
                name: name.clone(),
                metadata: None,
                secrets: vec![marketbridge_proto::common::v1::Secret {
                    name: KEY.into(),
                    value: key.clone(),
                    environment_overrides: Default::default(),
                }],
            })
            .collect();
        // The key works for the existing index.
        let issued: Vec<(String, String)> = state
            .importable
            .iter()
            .map(|(id, _, key)| (id.clone(), key.clone()))
            .collect();
        for (id, key) in issued {
            state.keys.entry(id).or_default().insert(key);
        }
        Ok(Response::new(plugin_pb::ListImportableResponse {
            resources,
        }))
    }

    async fn report_usage(
        &self,
        request: Request<plugin_pb::ReportUsageRequest>,
    ) -> Result<Response<plugin_pb::ReportUsageResponse>, Status> {
        let token = authorization(&request);
        let body = request.into_inner();
        self.enter("ReportUsage", token, body.resource.as_ref(), &[])
            .await?;
        let state = self.state.lock().unwrap();
        if state.usage_unimplemented {
            return Err(Status::unimplemented("this product meters nothing"));
        }
        Ok(Response::new(plugin_pb::ReportUsageResponse {
            measurements: state
                .usage
                .iter()
                .map(|(metric_id, quantity)| plugin_pb::Measurement {
                    metric_id: metric_id.clone(),
                    quantity: *quantity,
                })
                .collect(),
        }))
    }
}

/// The plug-in, served on a loopback port until the token is cancelled.
async fn serve(plugin: SearchPlugin) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        marketbridge_rpc::serve_grpc(
            listener,
            "search-plugin",
            &marketbridge_rpc::ServerSecurity {
                tls: TlsOptions::default(),
                callers: marketbridge_rpc::auth::Callers::anyone(),
            },
            ProvisionerPluginServer::new(plugin),
            shutdown,
        )
        .await
    });
    (address, stop)
}

/// A set on `database` (manual clock, no workers) whose plug-in product is
/// served by `plugin`; the catalog file lives as long as the returned value.
async fn plugin_set(
    database: &marketbridge_storage::testing::TestDatabase,
    plugin: &SearchPlugin,
) -> (TestSet, CancellationToken, CatalogFile) {
    let (address, stop_plugin) = serve(plugin.clone()).await;
    let catalog = catalog(address);
    let path = catalog.path();
    let test = set_on(database)
        .manual_clock()
        .without_workers()
        .configure(move |config| {
            config.catalog.path = path;
            config.provisioning.plugin_token = TOKEN.into();
        })
        .start()
        .await;
    (test, stop_plugin, catalog)
}

fn catalog(address: SocketAddr) -> CatalogFile {
    CatalogFile::new(&format!(
        r#"
[[products]]
id = "search"
name = "Search"
driver = "plugin"
  [[products.metadata]]
  key = "region"
  values = ["us", "eu"]
  default = "us"

  [products.plugin]
  url = "http://{address}"
  timeout_ms = 300
  [products.plugin.secrets]
  {KEY} = "sk_{{token}}"
  SEARCH_URL = "https://{{region}}.search.example.com/{{resource_id}}"
  [products.plugin.environment_overrides.SEARCH_URL]
  preview = "https://{{region}}.preview.search.example.com/{{resource_id}}"

  [[products.plans]]
  id = "starter"
  name = "Starter"
  limits = {{ indexes = 1 }}
    [[products.plans.metrics]]
    id = "requests"
    name = "Requests"
    unit = "requests"
    kind = "interval"

  [[products.plans]]
  id = "scale"
  name = "Scale"
  limits = {{ indexes = 10 }}
  features = ["replicas"]
    [[products.plans.metrics]]
    id = "requests"
    name = "Requests"
    unit = "requests"
    kind = "interval"
"#
    ))
}

async fn create(
    test: &TestSet,
    account_id: &str,
    key: &str,
) -> provisioning_pb::CreateResourceResponse {
    let mut provisioning = test.set.clients.provisioning.clone();
    provisioning
        .create_resource(provisioning_pb::CreateResourceRequest {
            context: context(key),
            account_id: account_id.to_owned(),
            product_id: "search".into(),
            plan_id: "starter".into(),
            name: "catalogue search".into(),
            metadata: Some(json_to_metadata("metadata", &json!({"region": "eu"})).unwrap()),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
}

/// Moves time past the outbox's longest retry delay and runs what is due.
async fn after_backoff(test: &TestSet) {
    let clock = test.clock.as_ref().expect("manual clock");
    clock.advance(ChronoDuration::seconds(5));
    test.drain().await;
}

backend_test!(
    a_plugin_product_lives_through_its_whole_lifecycle,
    |database| async move {
        let plugin = SearchPlugin::default();
        let (test, stop_plugin, _catalog) = plugin_set(&database, &plugin).await;
        let clock = test.clock.clone().expect("manual clock");
        let account = direct_account(&test, "team-search").await;
        let mut provisioning = test.set.clients.provisioning.clone();

        // Provision: the first attempt meets a transient failure.
        plugin.fail_next("Provision", Fault::Fail(Status::unavailable("warming up")));
        let created = create(&test, &account.id, "create-search").await;
        let resource_id = created.resource.as_ref().unwrap().id.clone();
        assert_eq!(
            created.resource.as_ref().unwrap().status,
            ResourceStatus::Pending as i32
        );
        let first_key = secret(&created.secrets, KEY).to_owned();
        assert!(
            first_key.starts_with("sk_") && first_key.len() > 40,
            "{first_key}"
        );
        let url = created
            .secrets
            .iter()
            .find(|s| s.name == "SEARCH_URL")
            .unwrap();
        assert_eq!(
            url.value,
            format!("https://eu.search.example.com/{resource_id}")
        );
        assert_eq!(
            url.environment_overrides["preview"],
            format!("https://eu.preview.search.example.com/{resource_id}")
        );
        test.drain().await;
        assert_eq!(
            resource(&test, &resource_id).await.status,
            ResourceStatus::Pending as i32,
            "a transient failure is retried, not an error"
        );
        assert!(!plugin.accepts(&resource_id, &first_key));
        after_backoff(&test).await;
        assert_eq!(
            resource(&test, &resource_id).await.status,
            ResourceStatus::Ready as i32
        );
        let provisions = plugin.calls("Provision");
        assert_eq!(provisions.len(), 2);
        assert!(
            provisions.iter().all(|c| c.resource_id == resource_id
                && c.keys == [first_key.clone()]
                && c.region == "eu"
                && c.plan_id == "starter"),
            "{provisions:?}"
        );
        assert!(plugin.accepts(&resource_id, &first_key));

        // Plan change: the first call outlives its deadline and is retried.
        plugin.fail_next("Update", Fault::Hang);
        provisioning
            .update_resource(provisioning_pb::UpdateResourceRequest {
                context: context("scale-up"),
                resource_id: resource_id.clone(),
                plan_id: Some("scale".into()),
                ..Default::default()
            })
            .await
            .expect("plan change");
        test.drain().await;
        assert_eq!(plugin.calls("Update").len(), 1, "the deadline ended it");
        after_backoff(&test).await;
        let updates = plugin.calls("Update");
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[1].plan_id, "scale");
        assert_eq!(updates[1].limits["indexes"], 10);

        // Rotation: the new key works at once, the old one until the grace
        // period ends.
        let rotated = provisioning
            .rotate_secrets(provisioning_pb::RotateSecretsRequest {
                context: context("rotate"),
                resource_id: resource_id.clone(),
                old_secrets_valid_for_seconds: 600,
                ..Default::default()
            })
            .await
            .expect("rotate")
            .into_inner();
        assert!(!rotated.sync);
        test.drain().await;
        let second_key = secret(&current_secrets(&test, &resource_id).await, KEY).to_owned();
        assert_ne!(second_key, first_key);
        assert_eq!(
            plugin.calls("Rotate")[0].keys,
            std::slice::from_ref(&second_key)
        );
        assert!(plugin.accepts(&resource_id, &first_key));
        assert!(plugin.accepts(&resource_id, &second_key));
        clock.advance(ChronoDuration::seconds(601));
        test.drain().await;
        assert_eq!(
            plugin.calls("Revoke")[0].keys,
            std::slice::from_ref(&first_key)
        );
        assert!(!plugin.accepts(&resource_id, &first_key));
        assert!(plugin.accepts(&resource_id, &second_key));

        // Suspension and resumption.
        provisioning
            .suspend_resource(provisioning_pb::SuspendResourceRequest {
                context: context("suspend"),
                resource_id: resource_id.clone(),
                reason: "unpaid invoice".into(),
            })
            .await
            .expect("suspend");
        test.drain().await;
        assert!(!plugin.accepts(&resource_id, &second_key));
        provisioning
            .resume_resource(provisioning_pb::ResumeResourceRequest {
                context: context("resume"),
                resource_id: resource_id.clone(),
            })
            .await
            .expect("resume");
        test.drain().await;
        assert!(plugin.accepts(&resource_id, &second_key));

        // Usage: what the plan meters is recorded once per window.
        plugin.state.lock().unwrap().usage = vec![
            ("requests".into(), 42),
            ("not_in_the_plan".into(), 7),
            ("requests_typo".into(), -1),
        ];
        let meter = test.set.provisioning.usage_meter();
        let round = meter.run_round().await.expect("a round");
        assert_eq!((round.resources, round.accepted, round.failed), (1, 1, 0));
        let again = meter.run_round().await.expect("a second round");
        assert_eq!((again.accepted, again.duplicates), (0, 1));
        let mut billing = test.set.clients.billing.clone();
        let usage = billing
            .query_usage(billing_pb::QueryUsageRequest {
                customer: Some(billing_pb::query_usage_request::Customer::ResourceId(
                    resource_id.clone(),
                )),
                ..Default::default()
            })
            .await
            .expect("usage")
            .into_inner();
        let recorded: Vec<(String, i64)> = usage
            .windows
            .iter()
            .map(|w| (w.metric_id.clone(), w.quantity))
            .collect();
        assert_eq!(recorded, [("requests".to_owned(), 42)]);
        plugin.state.lock().unwrap().usage_unimplemented = true;
        let silent = meter.run_round().await.expect("a round");
        assert_eq!((silent.accepted, silent.failed), (0, 0), "{silent:?}");

        // Deletion tears it down.
        provisioning
            .delete_resource(provisioning_pb::DeleteResourceRequest {
                context: context("delete"),
                resource_id: resource_id.clone(),
                ..Default::default()
            })
            .await
            .expect("delete");
        test.drain().await;
        assert_eq!(plugin.calls("Deprovision").len(), 1);
        assert!(!plugin.knows(&resource_id));

        test.stop().await;
        stop_plugin.cancel();
    }
);

backend_test!(
    plugin_refusals_put_the_resource_in_error_with_its_message,
    |database| async move {
        let plugin = SearchPlugin::default();
        let (test, stop_plugin, catalog) = plugin_set(&database, &plugin).await;
        let account = direct_account(&test, "team-refused").await;

        plugin.fail_next(
            "Provision",
            Fault::Fail(Status::failed_precondition(
                "The eu region is full; choose another region",
            )),
        );
        let created = create(&test, &account.id, "create-full").await;
        let resource_id = created.resource.unwrap().id;
        test.drain().await;
        let failed = resource(&test, &resource_id).await;
        assert_eq!(failed.status, ResourceStatus::Error as i32);
        assert_eq!(
            failed.status_message,
            "The eu region is full; choose another region"
        );
        assert_eq!(
            plugin.calls("Provision").len(),
            1,
            "a refusal is not retried"
        );
        after_backoff(&test).await;
        assert_eq!(plugin.calls("Provision").len(), 1);

        // A plug-in that refuses marketbridge's token refuses for good too.
        test.stop().await;
        let test = set_on(&database)
            .manual_clock()
            .without_workers()
            .configure(|config| {
                config.catalog.path = catalog.path();
                config.provisioning.plugin_token = "wrong".into();
            })
            .start()
            .await;
        let account = direct_account(&test, "team-token").await;
        let created = create(&test, &account.id, "create-token").await;
        test.drain().await;
        let failed = resource(&test, &created.resource.unwrap().id).await;
        assert_eq!(failed.status, ResourceStatus::Error as i32);
        assert_eq!(failed.status_message, "missing or wrong token");
        test.stop().await;
        stop_plugin.cancel();
    }
);

backend_test!(
    a_plugin_lists_importable_resources_and_revokes_their_keys_on_detach,
    |database| async move {
        let plugin = SearchPlugin::default();
        plugin.state.lock().unwrap().importable = vec![(
            "legacy-index".into(),
            "Legacy index".into(),
            "sk_issued_for_vercel".into(),
        )];
        let (test, stop_plugin, _catalog) = plugin_set(&database, &plugin).await;
        let account = direct_account(&test, "team-import").await;
        let mut provisioning = test.set.clients.provisioning.clone();

        // The plug-in says what the account may import.
        let listed = provisioning
            .list_importable_resources(provisioning_pb::ListImportableResourcesRequest {
                account_id: account.id.clone(),
                product_id: "search".into(),
            })
            .await
            .expect("listed")
            .into_inner()
            .resources;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].importable_id, "legacy-index");
        assert_eq!(listed[0].source, "plugin");
        assert_eq!(
            plugin.state.lock().unwrap().listed_for,
            vec![account.id.clone()]
        );

        // Imported: a linked resource with the key the plug-in issued; no
        // provisioning call.
        let imported = provisioning
            .import_resource(provisioning_pb::ImportResourceRequest {
                context: context("import-legacy"),
                account_id: account.id.clone(),
                importable_id: "legacy-index".into(),
                product_id: "search".into(),
            })
            .await
            .expect("imported")
            .into_inner();
        let resource_id = imported.resource.as_ref().unwrap().id.clone();
        assert_eq!(imported.resource.as_ref().unwrap().ownership, "linked");
        assert_eq!(secret(&imported.secrets, KEY), "sk_issued_for_vercel");
        test.drain().await;
        assert!(plugin.calls("Provision").is_empty());
        assert!(plugin.accepts("legacy-index", "sk_issued_for_vercel"));

        // Deleted: detached, not deprovisioned; the key issued for the
        // marketplace is revoked, the index itself lives on.
        provisioning
            .delete_resource(provisioning_pb::DeleteResourceRequest {
                context: context("delete-legacy"),
                resource_id: resource_id.clone(),
                account_id: account.id.clone(),
            })
            .await
            .expect("deleted");
        test.drain().await;
        assert!(plugin.calls("Deprovision").is_empty());
        let revokes = plugin.calls("Revoke");
        assert_eq!(revokes.len(), 1);
        assert_eq!(revokes[0].keys, vec!["sk_issued_for_vercel".to_owned()]);
        assert!(!plugin.accepts("legacy-index", "sk_issued_for_vercel"));
        assert!(plugin.knows("legacy-index"));
        assert_eq!(
            resource(&test, &resource_id).await.status,
            ResourceStatus::Uninstalled as i32
        );
        stop_plugin.cancel();
        test.stop().await;
    }
);

backend_test!(
    app_urls_reach_the_plugin_on_provision_and_when_they_change,
    |database| async move {
        let plugin = SearchPlugin::default();
        let (test, stop_plugin, _catalog) = plugin_set(&database, &plugin).await;
        let account = direct_account(&test, "team-auth").await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let app_urls = |urls: &[(&str, &str)]| provisioning_pb::ProtocolSettings {
            app_urls: Some(provisioning_pb::AppUrls {
                urls: urls
                    .iter()
                    .map(|(url, target)| provisioning_pb::AppUrl {
                        url: (*url).into(),
                        target: (*target).into(),
                    })
                    .collect(),
            }),
            experimentation_json: None,
        };
        let created = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("create-auth"),
                account_id: account.id.clone(),
                product_id: "search".into(),
                plan_id: "starter".into(),
                name: "sign-in".into(),
                protocol_settings: Some(app_urls(&[
                    ("https://shop.example.com", "production"),
                    ("http://localhost:3000", "development"),
                ])),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        let resource_id = created.resource.unwrap().id;
        test.drain().await;
        let provisioned = plugin.calls("Provision");
        assert_eq!(provisioned.len(), 1);
        assert_eq!(
            provisioned[0].app_urls,
            vec![
                "production https://shop.example.com".to_owned(),
                "development http://localhost:3000".to_owned()
            ]
        );

        // A new set: the plug-in is asked to reconcile (Update) with it; the
        // same set again asks nothing.
        for round in 0..2 {
            provisioning
                .update_resource(provisioning_pb::UpdateResourceRequest {
                    context: context(&format!("urls-{round}")),
                    resource_id: resource_id.clone(),
                    protocol_settings: Some(app_urls(&[(
                        "https://shop-git-main.example.com",
                        "preview",
                    )])),
                    ..Default::default()
                })
                .await
                .expect("update");
            test.drain().await;
        }
        let updates = plugin.calls("Update");
        assert_eq!(updates.len(), 1);
        assert_eq!(
            updates[0].app_urls,
            vec!["preview https://shop-git-main.example.com".to_owned()]
        );
        stop_plugin.cancel();
        test.stop().await;
    }
);
