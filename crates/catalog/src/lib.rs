//! The product and plan catalog. A provider describes its products in a TOML
//! file (`config/catalog.toml` is the example built in): which driver
//! provisions each product, the metadata customers enter, and the plans with
//! their prices, limits, features, metrics and marketplace ids.
//!
//! Architecture invariant: the catalog is configuration, loaded the same way
//! by every service that needs it; it is never stored in a database.

mod agent;
mod model;
mod plan_proto;

pub use agent::{TRANSPORTS, check_agent_card};
pub use model::*;
pub use plan_proto::ServedPlans;

use marketbridge_core::{Error, Result};
use std::collections::BTreeSet;

/// The catalog shipped with marketbridge, used when no file is configured.
pub const BUILTIN_CATALOG: &str = include_str!("../../../config/catalog.toml");

/// Every product and plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    products: Vec<Product>,
}

impl Catalog {
    /// Parses and checks a catalog.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: CatalogFile = toml::from_str(text)
            .map_err(|e| Error::validation(format!("catalog: {}", e.message())))?;
        let catalog = Catalog {
            products: file.products,
        };
        catalog.check()?;
        Ok(catalog)
    }

    /// Loads the catalog at `path`, or the built-in one when `path` is empty.
    pub fn load(path: &str) -> Result<Self> {
        if path.is_empty() {
            return Self::builtin();
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::validation(format!("cannot read catalog `{path}`: {e}")))?;
        Self::from_toml_str(&text)
    }

    /// The built-in example catalog.
    pub fn builtin() -> Result<Self> {
        Self::from_toml_str(BUILTIN_CATALOG)
    }

    /// Every product, in file order.
    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// A product by id.
    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.id == id)
    }

    /// A product by id, or a validation error on `field`.
    pub fn require_product(&self, field: &str, id: &str) -> Result<&Product> {
        self.product(id).ok_or_else(|| {
            Error::invalid_field(field, format!("unknown product `{id}`"))
                .with_user_message("This product does not exist")
        })
    }

    fn check(&self) -> Result<()> {
        let mut product_ids = BTreeSet::new();
        for product in &self.products {
            if product.id.trim().is_empty() {
                return Err(Error::validation("catalog: a product has an empty id"));
            }
            if !product_ids.insert(product.id.as_str()) {
                return Err(Error::validation(format!(
                    "catalog: product `{}` is defined twice",
                    product.id
                )));
            }
            product.check()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_catalog_loads() {
        let catalog = Catalog::builtin().unwrap();
        let product = catalog.product("database").unwrap();
        assert_eq!(product.driver, "template");
        let pro = product.plan("pro").unwrap();
        assert_eq!(pro.price().unwrap().amount_minor, 2000);
        assert_eq!(
            pro.metric("requests").unwrap().unit_price_micros().unwrap(),
            10
        );
        assert_eq!(pro.marketplace_plan_id("google"), "pro-plan");
        assert_eq!(
            product
                .plan("pro-eu")
                .unwrap()
                .marketplace_plan_id("google"),
            "pro-eu"
        );
    }

    #[test]
    fn plans_depend_on_metadata() {
        let catalog = Catalog::builtin().unwrap();
        let product = catalog.product("database").unwrap();
        let ids = |metadata| {
            product
                .plans_for(&PlanQuery {
                    metadata: &metadata,
                    ..PlanQuery::default()
                })
                .iter()
                .map(|p| p.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(json!({"region": "iad1"})), ["free", "pro", "prepaid"]);
        assert_eq!(
            ids(json!({"region": "fra1"})),
            ["free", "pro", "pro-eu", "prepaid"]
        );
        assert_eq!(ids(json!({})), ["free", "pro", "pro-eu", "prepaid"]);
    }

    #[test]
    fn metadata_is_validated_and_defaulted() {
        let catalog = Catalog::builtin().unwrap();
        let product = catalog.product("database").unwrap();
        assert_eq!(
            product.validate_metadata(&json!({})).unwrap(),
            json!({"region": "iad1"})
        );
        let error = product
            .validate_metadata(&json!({"region": "mars1"}))
            .unwrap_err();
        assert_eq!(error.fields()[0].field, "region");
        assert!(product.validate_metadata(&json!("x")).is_err());
        let error = product
            .plan_for_metadata("pro-eu", &json!({"region": "iad1"}))
            .unwrap_err();
        assert_eq!(error.fields()[0].field, "billingPlanId");
    }

    #[test]
    fn broken_catalogs_are_refused_with_a_reason() {
        let twice = "[[products]]\nid='a'\nname='A'\n[[products]]\nid='a'\nname='B'\n";
        assert!(
            Catalog::from_toml_str(twice)
                .unwrap_err()
                .message()
                .contains("twice")
        );
        let bad_price =
            "[[products]]\nid='a'\nname='A'\n[[products.plans]]\nid='p'\nname='P'\nprice='1.234'\n";
        assert!(
            Catalog::from_toml_str(bad_price)
                .unwrap_err()
                .message()
                .contains("price")
        );
        let unknown = "[[products]]\nid='a'\nname='A'\ncolour='red'\n";
        assert!(
            Catalog::from_toml_str(unknown)
                .unwrap_err()
                .message()
                .contains("colour")
        );
    }
}
