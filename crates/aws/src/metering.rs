//! The Metering API's wire shapes (`AWSMPMeteringService`, JSON 1.1,
//! PascalCase): `ResolveCustomer` and `BatchMeterUsage`.
//!
//! A buyer is metered in exactly one shape ([`Licensee`]): by `LicenseArn`
//! and `CustomerAWSAccountId` (new products; no `ProductCode` in the
//! request) or by `CustomerIdentifier` (legacy; `ProductCode` in the
//! request). The two shapes have different deduplication keys at AWS, so
//! mixing them for one buyer-hour bills it twice; [`MeteringBatch`] can only
//! be built for one licensee, so a request can never carry both.

use serde::{Deserialize, Serialize};

/// `X-Amz-Target` of `ResolveCustomer`.
pub const RESOLVE_CUSTOMER: &str = "AWSMPMeteringService.ResolveCustomer";
/// `X-Amz-Target` of `BatchMeterUsage`.
pub const BATCH_METER_USAGE: &str = "AWSMPMeteringService.BatchMeterUsage";
/// Most records in one `BatchMeterUsage` call.
pub const MAX_RECORDS: usize = 25;
/// Most tags on one usage allocation.
pub const MAX_TAGS: usize = 5;

/// Per-record statuses of `BatchMeterUsage`.
pub mod status {
    /// Accepted and honored.
    pub const SUCCESS: &str = "Success";
    /// The customer has no active subscription.
    pub const CUSTOMER_NOT_SUBSCRIBED: &str = "CustomerNotSubscribed";
    /// Another quantity was metered for the same customer, dimension and hour.
    pub const DUPLICATE_RECORD: &str = "DuplicateRecord";
}

/// `ResolveCustomer` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResolveCustomerRequest {
    /// The `x-amzn-marketplace-token` value, unchanged.
    pub registration_token: String,
}

/// `ResolveCustomer` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResolveCustomerResponse {
    /// Legacy customer id; empty for new integrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    /// The product bought.
    #[serde(default)]
    pub product_code: String,
    /// The buyer's AWS account (12 digits, kept as text).
    #[serde(
        default,
        rename = "CustomerAWSAccountId",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    /// The purchase's license.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
}

impl ResolveCustomerResponse {
    /// Who is metered, in the one shape this purchase uses: by license when
    /// AWS gave one, else by the legacy customer identifier.
    pub fn licensee(&self) -> Option<Licensee> {
        let nonempty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        match (
            nonempty(&self.license_arn),
            nonempty(&self.customer_aws_account_id),
        ) {
            (Some(license_arn), Some(customer_aws_account_id)) => Some(Licensee::License {
                license_arn,
                customer_aws_account_id,
            }),
            _ => nonempty(&self.customer_identifier).map(|customer_identifier| Licensee::Legacy {
                customer_identifier,
            }),
        }
    }
}

/// Who a usage record is for, in exactly one of AWS's two shapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Licensee {
    /// New products (Concurrent Agreements).
    License {
        /// `LicenseArn`.
        license_arn: String,
        /// `CustomerAWSAccountId`.
        customer_aws_account_id: String,
    },
    /// Legacy products.
    Legacy {
        /// `CustomerIdentifier`.
        customer_identifier: String,
    },
}

impl Licensee {
    /// The key a purchase is recorded under: the `LicenseArn`, or the
    /// legacy `CustomerIdentifier`.
    pub fn key(&self) -> &str {
        match self {
            Licensee::License { license_arn, .. } => license_arn,
            Licensee::Legacy {
                customer_identifier,
            } => customer_identifier,
        }
    }

    /// As text, for a subscription's usage reporting id:
    /// `license:<account>:<arn>` or `customer:<identifier>`.
    pub fn to_reporting_id(&self) -> String {
        match self {
            Licensee::License {
                license_arn,
                customer_aws_account_id,
            } => format!("license:{customer_aws_account_id}:{license_arn}"),
            Licensee::Legacy {
                customer_identifier,
            } => format!("customer:{customer_identifier}"),
        }
    }

    /// Reads [`Self::to_reporting_id`]'s text.
    pub fn from_reporting_id(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix("license:") {
            let (account, arn) = rest.split_once(':')?;
            if account.is_empty() || arn.is_empty() || !account.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            return Some(Licensee::License {
                license_arn: arn.to_owned(),
                customer_aws_account_id: account.to_owned(),
            });
        }
        let identifier = text.strip_prefix("customer:")?;
        (!identifier.is_empty()).then(|| Licensee::Legacy {
            customer_identifier: identifier.to_owned(),
        })
    }
}

/// A tag of a usage allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// 1–100 characters.
    pub key: String,
    /// 1–256 characters.
    pub value: String,
}

/// Part of a record's quantity attributed to tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageAllocation {
    /// Quantity of this allocation.
    pub allocated_usage_quantity: i64,
    /// Up to 5 tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// One usage record as it travels. Built through [`MeteringBatch`]; read
/// leniently (the simulator reads both shapes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageRecord {
    /// Start of the hour, epoch seconds.
    pub timestamp: f64,
    /// The listing's dimension API name.
    #[serde(default)]
    pub dimension: String,
    /// Quantity (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    /// New shape: the buyer's account.
    #[serde(
        default,
        rename = "CustomerAWSAccountId",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    /// New shape: the license.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
    /// Legacy shape: the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    /// Tagged allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_allocations: Option<Vec<UsageAllocation>>,
}

impl UsageRecord {
    /// The licensee the record names, when it names exactly one shape.
    pub fn licensee(&self) -> Option<Licensee> {
        match (
            &self.license_arn,
            &self.customer_aws_account_id,
            &self.customer_identifier,
        ) {
            (Some(arn), Some(account), None) => Some(Licensee::License {
                license_arn: arn.clone(),
                customer_aws_account_id: account.clone(),
            }),
            (None, None, Some(customer)) => Some(Licensee::Legacy {
                customer_identifier: customer.clone(),
            }),
            _ => None,
        }
    }
}

/// `BatchMeterUsage` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchMeterUsageRequest {
    /// The records (0–25).
    #[serde(default)]
    pub usage_records: Vec<UsageRecord>,
    /// Legacy shape only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
}

/// One measured quantity to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// Dimension API name.
    pub dimension: String,
    /// Quantity.
    pub quantity: i64,
    /// Tags for one allocation of the whole quantity (empty: no allocation).
    pub tags: Vec<(String, String)>,
}

/// The records of one licensee and hour, as `BatchMeterUsage` requests of
/// at most [`MAX_RECORDS`] records each.
#[derive(Debug, Clone, PartialEq)]
pub struct MeteringBatch {
    requests: Vec<BatchMeterUsageRequest>,
}

impl MeteringBatch {
    /// The requests metering `measurements` for `licensee` at `hour` (epoch
    /// seconds of the hour's start) of `product_code`.
    pub fn new(
        product_code: &str,
        licensee: &Licensee,
        hour: i64,
        measurements: &[Measurement],
    ) -> Self {
        let records: Vec<UsageRecord> = measurements
            .iter()
            .map(|m| {
                let (license_arn, customer_aws_account_id, customer_identifier) = match licensee {
                    Licensee::License {
                        license_arn,
                        customer_aws_account_id,
                    } => (
                        Some(license_arn.clone()),
                        Some(customer_aws_account_id.clone()),
                        None,
                    ),
                    Licensee::Legacy {
                        customer_identifier,
                    } => (None, None, Some(customer_identifier.clone())),
                };
                let tags: Vec<Tag> = m
                    .tags
                    .iter()
                    .take(MAX_TAGS)
                    .map(|(key, value)| Tag {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect();
                UsageRecord {
                    timestamp: hour as f64,
                    dimension: m.dimension.clone(),
                    quantity: Some(m.quantity.max(0)),
                    customer_aws_account_id,
                    license_arn,
                    customer_identifier,
                    usage_allocations: (!tags.is_empty()).then(|| {
                        vec![UsageAllocation {
                            allocated_usage_quantity: m.quantity.max(0),
                            tags,
                        }]
                    }),
                }
            })
            .collect();
        let product_code = match licensee {
            Licensee::Legacy { .. } => Some(product_code.to_owned()),
            Licensee::License { .. } => None,
        };
        let requests = records
            .chunks(MAX_RECORDS)
            .map(|chunk| BatchMeterUsageRequest {
                usage_records: chunk.to_vec(),
                product_code: product_code.clone(),
            })
            .collect();
        Self { requests }
    }

    /// The requests, in order.
    pub fn requests(&self) -> &[BatchMeterUsageRequest] {
        &self.requests
    }

    /// Reads requests back (as stored in the reporting ledger).
    pub fn from_requests(requests: Vec<BatchMeterUsageRequest>) -> Self {
        Self { requests }
    }
}

/// One record's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageRecordResult {
    /// The record, as received.
    pub usage_record: UsageRecord,
    /// AWS's id of an accepted record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering_record_id: Option<String>,
    /// [`status`].
    #[serde(default)]
    pub status: String,
}

/// `BatchMeterUsage` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchMeterUsageResponse {
    /// Outcomes of the processed records.
    #[serde(default)]
    pub results: Vec<UsageRecordResult>,
    /// Records not processed; send them again.
    #[serde(default)]
    pub unprocessed_records: Vec<UsageRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurements(n: usize) -> Vec<Measurement> {
        (0..n)
            .map(|i| Measurement {
                dimension: format!("d{i}"),
                quantity: i as i64,
                tags: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_license_batch_never_names_the_product_or_a_customer_identifier() {
        let licensee = Licensee::License {
            license_arn: "arn:aws:license-manager::1:license:l-1".into(),
            customer_aws_account_id: "012345678901".into(),
        };
        let batch = MeteringBatch::new("prod", &licensee, 1_793_534_400, &measurements(30));
        assert_eq!(batch.requests().len(), 2, "25 records per call at most");
        for request in batch.requests() {
            let body = serde_json::to_value(request).unwrap();
            assert!(body.get("ProductCode").is_none());
            for record in body["UsageRecords"].as_array().unwrap() {
                assert!(record.get("CustomerIdentifier").is_none());
                assert_eq!(record["CustomerAWSAccountId"], "012345678901");
            }
        }
        let legacy = Licensee::Legacy {
            customer_identifier: "cust".into(),
        };
        let batch = MeteringBatch::new("prod", &legacy, 1_793_534_400, &measurements(1));
        let body = serde_json::to_value(&batch.requests()[0]).unwrap();
        assert_eq!(body["ProductCode"], "prod");
        assert!(body["UsageRecords"][0].get("LicenseArn").is_none());
    }

    #[test]
    fn reporting_ids_round_trip() {
        for licensee in [
            Licensee::License {
                license_arn: "arn:aws:license-manager::1:license:l-1".into(),
                customer_aws_account_id: "012345678901".into(),
            },
            Licensee::Legacy {
                customer_identifier: "abc".into(),
            },
        ] {
            assert_eq!(
                Licensee::from_reporting_id(&licensee.to_reporting_id()),
                Some(licensee)
            );
        }
        assert_eq!(Licensee::from_reporting_id("license:x:arn"), None);
    }
}
