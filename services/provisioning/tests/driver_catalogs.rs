//! Catalogs that name the `postgres` and `plugin` drivers: the example file
//! loads, and broken driver settings stop the service at startup.

use marketbridge_catalog::Catalog;
use marketbridge_config::{Config, OutboxOptions};
use marketbridge_core::crypto::Cipher;
use marketbridge_provisioning::driver::plugin::settings::PluginSettings;
use marketbridge_provisioning::{ProvisioningDeps, ProvisioningServer, adapters};
use marketbridge_rpc::ServiceClients;
use std::sync::Arc;
use std::time::Duration;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../config/catalog.drivers.toml"
);

fn config_with_postgres() -> Config {
    let mut config = Config::default();
    config.provisioning.postgres_admin_url = "postgres://admin:pw@db.internal:5432/postgres".into();
    config
}

#[test]
fn the_example_catalog_loads_and_its_drivers_accept_it() {
    let catalog = Catalog::load(EXAMPLE).expect("the example catalog loads");
    let drivers = adapters::drivers(&config_with_postgres()).unwrap();
    assert_eq!(drivers.names(), ["plugin", "postgres", "template"]);
    for product in catalog.products() {
        let driver = drivers.get(&product.driver).expect("a known driver");
        driver
            .check_product(product)
            .unwrap_or_else(|e| panic!("{}: {e}", product.id));
    }
    let search = PluginSettings::of(catalog.product("search").unwrap()).unwrap();
    assert_eq!(search.url, "http://127.0.0.1:7000");
    assert_eq!(search.timeout_ms, Some(5000));
    assert!(
        adapters::drivers(&Config::default())
            .unwrap()
            .get("postgres")
            .is_none(),
        "no admin URL, no postgres driver"
    );
}

#[test]
fn broken_plugin_settings_are_refused_with_a_reason() {
    let drivers = adapters::drivers(&Config::default()).unwrap();
    let plugin = drivers.get("plugin").unwrap();
    for (settings, expected) in [
        ("", "missing"),
        ("[products.plugin]\ntimeout_ms = 5\n", "url"),
        ("[products.plugin]\nurl = 'ftp://x'\n", "http://"),
        (
            "[products.plugin]\nurl = 'http://x'\ncolour = 'red'\n",
            "colour",
        ),
        (
            "[products.plugin]\nurl = 'http://x'\ntimeout_ms = 0\n",
            "timeout_ms",
        ),
        (
            "[products.plugin]\nurl = 'http://x'\n[products.plugin.environment_overrides.KEY]\npreview = 'x'\n",
            "KEY",
        ),
    ] {
        let text = format!("[[products]]\nid = 'p'\nname = 'P'\ndriver = 'plugin'\n{settings}");
        let catalog = Catalog::from_toml_str(&text).unwrap();
        let error = plugin
            .check_product(catalog.product("p").unwrap())
            .expect_err(settings);
        assert!(error.message().contains(expected), "{settings}: {error}");
    }
}

async fn open_with_catalog(
    text: &str,
    config: &Config,
) -> marketbridge_core::Result<ProvisioningServer> {
    let folder = tempfile_folder();
    let clients = ServiceClients::connect(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        &marketbridge_rpc::ClientCredentials::of_set(config),
        Duration::from_secs(1),
    )?;
    let deps = ProvisioningDeps {
        clock: marketbridge_core::time::system_clock(),
        cipher: Cipher::from_base64_key(&Cipher::generate_base64_key())?,
        catalog: Arc::new(Catalog::from_toml_str(text)?),
        drivers: adapters::drivers(config)?,
        marketplaces: Default::default(),
        accounts: Arc::new(clients.account),
        billing: None,
        usage_interval: Duration::ZERO,
    };
    let url = format!("sqlite://{}/provisioning.db?mode=rwc", folder.display());
    let opened = ProvisioningServer::open(&url, &OutboxOptions::default(), deps).await;
    let _ = std::fs::remove_dir_all(folder);
    opened
}

fn tempfile_folder() -> std::path::PathBuf {
    let folder = std::env::temp_dir().join(format!(
        "marketbridge-driver-catalog-{}",
        marketbridge_core::crypto::random_token(8)
    ));
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

#[tokio::test]
async fn the_service_refuses_to_start_on_broken_driver_settings() {
    let postgres_product = "[[products]]\nid = 'db'\nname = 'DB'\ndriver = 'postgres'\n";
    let error = open_with_catalog(postgres_product, &Config::default())
        .await
        .err()
        .expect("no admin URL: the postgres driver is not there");
    assert!(
        error.message().contains("names driver `postgres`"),
        "{error}"
    );
    let bad_prefix = format!("{postgres_product}[products.postgres]\nname_prefix = 'Bad-Prefix'\n");
    let error = open_with_catalog(&bad_prefix, &config_with_postgres())
        .await
        .err()
        .expect("a bad prefix is refused");
    assert!(error.message().contains("name_prefix"), "{error}");
    let plugin_without_url = "[[products]]\nid = 's'\nname = 'S'\ndriver = 'plugin'\n";
    let error = open_with_catalog(plugin_without_url, &Config::default())
        .await
        .err()
        .expect("a plug-in product needs a URL");
    assert!(error.message().contains("[products.plugin]"), "{error}");
    open_with_catalog(postgres_product, &config_with_postgres())
        .await
        .expect("a valid catalog starts");
}
