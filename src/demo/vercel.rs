//! `marketbridge demo vercel`: the whole set on SQLite in a temporary folder,
//! the Vercel simulator playing Vercel, and the Vercel flow walked step by
//! step through the partner API, printing what was sent and answered.

use crate::set::{RunningSet, SetOptions};
use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::{Error, Result};
use marketbridge_simulators::vercel::{PartnerAnswer, PartnerRequest, VercelSimulator};
use serde_json::{Value, json};
use std::time::Duration;

/// A product added to the built-in catalog for the demo: it takes a moment
/// to provision, so the demo shows Vercel being told when it is ready.
const DEMO_PRODUCTS: &str = r#"
[[products]]
id = "cache"
name = "Cache"
description = "A cache that takes a moment to set up."
driver = "template"
  [products.template]
  provisioning_delay_seconds = 2
  [products.template.secrets]
  REDIS_URL = "redis://{username}:{password}@cache.example.com/{resource_id}"
  [[products.plans]]
  id = "standard"
  name = "Standard"
  type = "subscription"
  price = "10.00"
  cost = "$10.00/month"
"#;

/// The configuration of a demo set: everything on loopback port 0, SQLite in
/// `data_dir`, Vercel played by `sim`.
pub fn demo_config(base: &Config, sim: &VercelSimulator, data_dir: &std::path::Path) -> Config {
    let mut config = base.clone();
    config.data.dir = data_dir.display().to_string();
    super::on_loopback(&mut config);
    config.account.database_url = String::new();
    config.provisioning.database_url = String::new();
    config.billing.database_url = String::new();
    config.security.encryption_key = Cipher::generate_base64_key();
    config.catalog.path = data_dir.join("catalog.toml").display().to_string();
    config.vercel.oidc_issuer = sim.issuer();
    config.vercel.jwks_url = sim.jwks_url();
    config.vercel.api_base_url = sim.url().to_owned();
    config.vercel.client_id = sim.client_id().to_owned();
    config.vercel.client_secret = sim.client_secret().to_owned();
    config
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 110 {
        format!("{}…", text.chars().take(110).collect::<String>())
    } else {
        text
    }
}

async fn step(number: u32, title: &str, label: &str, request: PartnerRequest) -> PartnerAnswer {
    let answer = request.send().await;
    println!("{number:>2}. {title:<16} {label} → {}", answer.status);
    answer
}

fn expect(answer: &PartnerAnswer, status: u16) -> Result<()> {
    if answer.status == status {
        return Ok(());
    }
    Err(Error::internal(format!(
        "expected {status}, got {}: {}",
        answer.status, answer.text
    )))
}

fn secret_names(body: &Value) -> String {
    body["secrets"]
        .as_array()
        .map(|secrets| {
            secrets
                .iter()
                .filter_map(|s| s["name"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Runs the Vercel demo with `base` as the starting configuration.
pub async fn run_vercel_demo(base: &Config) -> Result<()> {
    let sim = VercelSimulator::start_default()
        .await
        .map_err(|e| Error::unavailable(format!("the Vercel simulator cannot start: {e}")))?;
    let data_dir = std::env::temp_dir().join(format!(
        "marketbridge-demo-{}",
        marketbridge_core::crypto::random_token(6)
    ));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", data_dir.display())))?;
    std::fs::write(
        data_dir.join("catalog.toml"),
        format!("{}\n{DEMO_PRODUCTS}", marketbridge_catalog::BUILTIN_CATALOG),
    )
    .map_err(|e| Error::unavailable(format!("cannot write the demo catalog: {e}")))?;
    let config = demo_config(base, &sim, &data_dir);
    let cipher = Cipher::from_base64_key(&config.security.encryption_key)?;
    let set = RunningSet::start(SetOptions {
        config,
        clock: marketbridge_core::time::system_clock(),
        cipher,
        run_workers: true,
    })
    .await?;
    let base_url = format!("{}/vercel", set.gateway_url());
    println!("marketbridge demo: the Vercel Marketplace flow");
    println!("  Vercel (simulated)  {}", sim.url());
    println!("  partner API         {base_url}");
    println!("  data                {}", data_dir.display());
    println!();
    let outcome = walk(&sim, &base_url).await;
    // Let the background work the flow caused finish before stopping.
    set.drain().await?;
    set.stop().await?;
    sim.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

async fn walk(sim: &VercelSimulator, base_url: &str) -> Result<()> {
    let partner = sim.partner(base_url);
    let installation = sim.new_installation();
    let admin = sim.admin_token(&installation);
    let system = sim.system_token(Some(&installation));
    let install_path = format!("/v1/installations/{}", installation.id);

    let answer = step(
        1,
        "install",
        &format!("PUT {install_path}"),
        partner
            .put(&install_path)
            .user(&admin)
            .idempotency_key("demo-install")
            .json(&installation.upsert_body()),
    )
    .await;
    expect(&answer, 204)?;

    let answer = step(
        2,
        "plans",
        "GET /v1/products/database/plans?metadata={\"region\":\"fra1\"}",
        partner
            .get("/v1/products/database/plans?metadata=%7B%22region%22%3A%22fra1%22%7D")
            .system(&system),
    )
    .await;
    expect(&answer, 200)?;
    let ids: Vec<&str> = answer.body["plans"]
        .as_array()
        .map(|plans| plans.iter().filter_map(|p| p["id"].as_str()).collect())
        .unwrap_or_default();
    println!("    plans: {}", ids.join(", "));

    let resources = format!("{install_path}/resources");
    let answer = step(
        3,
        "provision",
        &format!("POST {resources}  (database, pro, fra1)"),
        partner
            .post(&resources)
            .user(&admin)
            .idempotency_key("demo-provision")
            .json(&json!({"productId": "database", "name": "demo-db", "metadata": {"region": "fra1"}, "billingPlanId": "pro"})),
    )
    .await;
    expect(&answer, 200)?;
    let resource_id = answer.body["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "    {resource_id} is {}; secrets: {}",
        answer.body["status"].as_str().unwrap_or_default(),
        secret_names(&answer.body)
    );

    let answer = step(
        4,
        "provision (slow)",
        &format!("POST {resources}  (cache, standard)"),
        partner.post(&resources).user(&admin).json(&json!({"productId": "cache", "name": "demo-cache", "metadata": {}, "billingPlanId": "standard"})),
    )
    .await;
    expect(&answer, 200)?;
    let cache_id = answer.body["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "    {cache_id} is {}; marketbridge finishes it in the background…",
        answer.body["status"].as_str().unwrap_or_default()
    );
    let mut ready = false;
    for _ in 0..60 {
        let at_vercel = sim.resource(&installation.id, &cache_id);
        if at_vercel.as_ref().is_some_and(|r| r.status == "ready") {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !ready {
        return Err(Error::new(
            marketbridge_core::ErrorCode::Timeout,
            "Vercel was not told the cache is ready",
        ));
    }
    for call in sim.recorder().accepted("PATCH", &cache_id).iter().chain(
        sim.recorder()
            .accepted("PUT", &format!("{cache_id}/secrets"))
            .iter(),
    ) {
        println!(
            "    Vercel received {} {} {}",
            call.method,
            call.path,
            short(&mask_secrets(call.json()))
        );
    }
    for call in sim.recorder().accepted("POST", "/events") {
        println!(
            "    Vercel received {} {} {}",
            call.method,
            call.path,
            short(&call.json())
        );
    }

    let resource_path = format!("{resources}/{resource_id}");
    let answer = step(
        5,
        "get",
        &format!("GET {resource_path}"),
        partner.get(&resource_path).user(&admin),
    )
    .await;
    expect(&answer, 200)?;
    println!(
        "    {} on plan {}",
        answer.body["status"].as_str().unwrap_or_default(),
        answer.body["billingPlan"]["id"]
            .as_str()
            .unwrap_or_default()
    );

    let answer = step(
        6,
        "change plan",
        &format!("PATCH {resource_path}  {{\"billingPlanId\":\"free\"}}"),
        partner
            .patch(&resource_path)
            .user(&admin)
            .idempotency_key("demo-plan")
            .json(&json!({"billingPlanId": "free"})),
    )
    .await;
    expect(&answer, 200)?;
    println!(
        "    now on {}",
        answer.body["billingPlan"]["id"]
            .as_str()
            .unwrap_or_default()
    );

    let answer = step(
        7,
        "rotate secrets",
        &format!("POST {resource_path}/secrets/rotate"),
        partner
            .post(&format!("{resource_path}/secrets/rotate"))
            .user(&admin)
            .json(&json!({"reason": "demo", "delayOldSecretsExpirationHours": 1})),
    )
    .await;
    expect(&answer, 200)?;
    println!(
        "    sync: {}; new secrets: {}",
        answer.body["sync"],
        secret_names(&answer.body)
    );

    let answer = step(
        8,
        "delete",
        &format!("DELETE {resource_path}"),
        partner.delete(&resource_path).user(&admin),
    )
    .await;
    expect(&answer, 204)?;

    let answer = step(
        9,
        "uninstall",
        &format!("DELETE {install_path}  {{\"cascadeResourceDeletion\":true}}"),
        partner
            .delete(&install_path)
            .system(&system)
            .json(&json!({"cascadeResourceDeletion": true})),
    )
    .await;
    expect(&answer, 200)?;
    println!("    {}", answer.text);
    println!();
    let calls: Vec<_> = sim
        .recorder()
        .calls()
        .into_iter()
        .filter(|c| c.path.starts_with("/v1/"))
        .collect();
    let bearer = format!("Bearer {}", installation.token);
    let with_token = calls
        .iter()
        .filter(|c| c.header("authorization") == Some(bearer.as_str()))
        .count();
    println!(
        "Vercel's API received {} calls from marketbridge, {with_token} with the installation's token.",
        calls.len()
    );
    Ok(())
}

/// Replaces secret values with `***` before printing.
fn mask_secrets(mut body: Value) -> Value {
    if let Some(secrets) = body.get_mut("secrets").and_then(Value::as_array_mut) {
        for secret in secrets {
            if let Some(value) = secret.get_mut("value") {
                *value = json!("***");
            }
        }
    }
    body
}
