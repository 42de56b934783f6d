//! What the simulated AWS Marketplace knows: licenses with their contract
//! entitlements, registration tokens, and every usage record it accepted,
//! with AWS's rules for each call. Pure state; the HTTP side is in `api`.

use chrono::{DateTime, Duration, Utc};
use marketbridge_aws::entitlement::{
    Entitlement, EntitlementValue, GetEntitlementsRequest, GetEntitlementsResponse, filter,
};
use marketbridge_aws::error::names;
use marketbridge_aws::metering::{
    BatchMeterUsageRequest, BatchMeterUsageResponse, Licensee, MAX_RECORDS,
    ResolveCustomerResponse, UsageRecordResult, status,
};
use std::collections::{BTreeMap, HashMap};

/// An error AWS answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// `__type`.
    pub name: &'static str,
    /// `message`.
    pub message: String,
}

impl ApiError {
    fn bad(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            name,
            message: message.into(),
        }
    }
}

/// Where a license stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseState {
    /// Bought and usable.
    Active,
    /// Revoked at this time; usage is accepted for the final window after.
    Deprovisioned(DateTime<Utc>),
    /// Unsubscribed for good (`unsubscribe-success`): no usage is accepted.
    Ended,
}

/// A purchase.
#[derive(Debug, Clone)]
pub struct SimLicense {
    /// `LicenseArn` (empty for legacy purchases).
    pub license_arn: String,
    /// Buyer account.
    pub customer_aws_account_id: String,
    /// Legacy customer id (legacy listings only).
    pub customer_identifier: Option<String>,
    /// Agreement.
    pub agreement_id: String,
    /// The agreement this one renewed, if any.
    pub previous_agreement_id: Option<String>,
    /// Offer.
    pub offer_id: String,
    /// Contract dimensions and quantities.
    pub entitlements: BTreeMap<String, i64>,
    /// Contract end.
    pub expires_at: Option<DateTime<Utc>>,
    /// State.
    pub state: LicenseState,
}

impl SimLicense {
    /// The licensee as metering names it.
    pub fn licensee(&self) -> Licensee {
        match &self.customer_identifier {
            Some(customer_identifier) => Licensee::Legacy {
                customer_identifier: customer_identifier.clone(),
            },
            None => Licensee::License {
                license_arn: self.license_arn.clone(),
                customer_aws_account_id: self.customer_aws_account_id.clone(),
            },
        }
    }
}

/// One accepted usage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRecord {
    /// Who.
    pub licensee: Licensee,
    /// Dimension.
    pub dimension: String,
    /// Hour (epoch seconds of its start).
    pub hour: i64,
    /// Quantity.
    pub quantity: i64,
    /// AWS's id.
    pub metering_record_id: String,
    /// Tags of its allocations.
    pub tags: Vec<(String, String)>,
}

struct Token {
    key: String,
    issued_at: DateTime<Utc>,
    redeemed: bool,
}

/// The simulated marketplace.
pub struct World {
    /// The product.
    pub product_code: String,
    /// Dimensions of the listing.
    pub dimensions: Vec<String>,
    /// Licenses by key (`LicenseArn`, or the legacy customer id).
    pub licenses: BTreeMap<String, SimLicense>,
    tokens: HashMap<String, Token>,
    /// Accepted records by (licensee, dimension, hour).
    pub accepted: BTreeMap<(Licensee, String, i64), AcceptedRecord>,
    /// Records answered `DuplicateRecord`.
    pub duplicates: Vec<AcceptedRecord>,
    /// How long a token stays valid.
    pub token_lifetime: Duration,
    /// A redeemed token is refused as expired when resubmitted.
    pub single_use_tokens: bool,
    /// How far back usage is accepted.
    pub metering_window: Duration,
    /// How long after deprovisioning usage is still accepted.
    pub final_window: Duration,
    /// The next this-many records go to `UnprocessedRecords`.
    pub unprocessed_next: usize,
    /// The next this-many metering calls are throttled.
    pub throttle_next: usize,
    /// Every call fails with `InternalServiceErrorException` while set.
    pub outage: bool,
    next_id: u64,
}

impl World {
    /// An empty marketplace selling `product_code` with `dimensions`.
    pub fn new(product_code: &str, dimensions: &[&str]) -> Self {
        Self {
            product_code: product_code.to_owned(),
            dimensions: dimensions.iter().map(|d| d.to_string()).collect(),
            licenses: BTreeMap::new(),
            tokens: HashMap::new(),
            accepted: BTreeMap::new(),
            duplicates: Vec::new(),
            token_lifetime: Duration::hours(1),
            single_use_tokens: false,
            metering_window: Duration::hours(6),
            final_window: Duration::hours(1),
            unprocessed_next: 0,
            throttle_next: 0,
            outage: false,
            next_id: 0,
        }
    }

    fn next(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:08}", self.next_id)
    }

    /// A fresh agreement id.
    pub fn next_agreement_id(&mut self) -> String {
        self.next("agmt-")
    }

    /// Adds a purchase; returns its key.
    pub fn purchase(
        &mut self,
        customer_aws_account_id: &str,
        entitlements: &[(&str, i64)],
        legacy: bool,
        expires_at: Option<DateTime<Utc>>,
    ) -> String {
        let license_id = self.next("l-");
        let license_arn = format!("arn:aws:license-manager::294406891311:license:{license_id}");
        let customer_identifier = legacy.then(|| self.next("cust"));
        let license = SimLicense {
            license_arn: if legacy { String::new() } else { license_arn },
            customer_aws_account_id: customer_aws_account_id.to_owned(),
            customer_identifier,
            agreement_id: self.next("agmt-"),
            previous_agreement_id: None,
            offer_id: self.next("offer-"),
            entitlements: entitlements
                .iter()
                .map(|(d, q)| (d.to_string(), *q))
                .collect(),
            expires_at,
            state: LicenseState::Active,
        };
        let key = license.licensee().key().to_owned();
        self.licenses.insert(key.clone(), license);
        key
    }

    /// A new registration token for a license (the buyer clicked "Set up
    /// your account").
    pub fn issue_token(&mut self, key: &str, now: DateTime<Utc>) -> String {
        let token = format!("{}{}", self.next("tok"), uuid::Uuid::new_v4().simple());
        self.tokens.insert(
            token.clone(),
            Token {
                key: key.to_owned(),
                issued_at: now,
                redeemed: false,
            },
        );
        token
    }

    /// `ResolveCustomer`.
    pub fn resolve_customer(
        &mut self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<ResolveCustomerResponse, ApiError> {
        let lifetime = self.token_lifetime;
        let single_use = self.single_use_tokens;
        let Some(entry) = self.tokens.get_mut(token) else {
            return Err(ApiError::bad(
                names::INVALID_TOKEN,
                "Invalid registration token",
            ));
        };
        if now - entry.issued_at > lifetime || (single_use && entry.redeemed) {
            return Err(ApiError::bad(
                names::EXPIRED_TOKEN,
                "Registration token is expired",
            ));
        }
        entry.redeemed = true;
        let license = self
            .licenses
            .get(&entry.key)
            .ok_or_else(|| ApiError::bad(names::INVALID_TOKEN, "Invalid registration token"))?;
        Ok(ResolveCustomerResponse {
            customer_identifier: license.customer_identifier.clone(),
            product_code: self.product_code.clone(),
            customer_aws_account_id: Some(license.customer_aws_account_id.clone()),
            license_arn: (!license.license_arn.is_empty()).then(|| license.license_arn.clone()),
        })
    }

    /// `GetEntitlements`: one page after `next_token`.
    pub fn get_entitlements(
        &self,
        request: &GetEntitlementsRequest,
        now: DateTime<Utc>,
    ) -> Result<GetEntitlementsResponse, ApiError> {
        if request.product_code != self.product_code {
            return Err(ApiError::bad(
                names::INVALID_PARAMETER,
                "Unknown product code",
            ));
        }
        if request.filter.contains_key(filter::CUSTOMER_IDENTIFIER)
            && request.filter.contains_key(filter::CUSTOMER_AWS_ACCOUNT_ID)
        {
            return Err(ApiError::bad(
                names::INVALID_PARAMETER,
                "CUSTOMER_IDENTIFIER and CUSTOMER_AWS_ACCOUNT_ID are mutually exclusive",
            ));
        }
        let page_size = request.max_results.unwrap_or(25).clamp(1, 25) as usize;
        let matches = |name: &str, value: &str| {
            request
                .filter
                .get(name)
                .is_none_or(|values| values.iter().any(|v| v == value))
        };
        let mut all = Vec::new();
        for license in self.licenses.values() {
            if matches!(
                license.state,
                LicenseState::Deprovisioned(_) | LicenseState::Ended
            ) {
                continue;
            }
            for (dimension, quantity) in &license.entitlements {
                let visible = matches(filter::LICENSE_ARN, &license.license_arn)
                    && matches(
                        filter::CUSTOMER_AWS_ACCOUNT_ID,
                        &license.customer_aws_account_id,
                    )
                    && matches(
                        filter::CUSTOMER_IDENTIFIER,
                        license.customer_identifier.as_deref().unwrap_or_default(),
                    )
                    && matches(filter::DIMENSION, dimension);
                if visible {
                    all.push(Entitlement {
                        product_code: self.product_code.clone(),
                        dimension: dimension.clone(),
                        customer_identifier: license.customer_identifier.clone(),
                        customer_aws_account_id: Some(license.customer_aws_account_id.clone()),
                        license_arn: (!license.license_arn.is_empty())
                            .then(|| license.license_arn.clone()),
                        value: EntitlementValue {
                            integer_value: Some(*quantity),
                            ..EntitlementValue::default()
                        },
                        expiration_date: Some(
                            license
                                .expires_at
                                .unwrap_or(now + Duration::days(365))
                                .timestamp() as f64,
                        ),
                    });
                }
            }
        }
        // Pages hold at most one license's worth of rows, and a first
        // empty page with a token tests that clients keep paging.
        let start: usize = match request.next_token.as_deref() {
            None => {
                return Ok(GetEntitlementsResponse {
                    entitlements: Vec::new(),
                    next_token: Some("p0".into()),
                });
            }
            Some(token) => token
                .strip_prefix('p')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ApiError::bad(names::INVALID_PARAMETER, "Invalid NextToken"))?,
        };
        let end = (start + page_size).min(all.len());
        let entitlements = all.get(start..end).unwrap_or_default().to_vec();
        Ok(GetEntitlementsResponse {
            entitlements,
            next_token: (end < all.len()).then(|| format!("p{end}")),
        })
    }

    /// `BatchMeterUsage`.
    pub fn batch_meter_usage(
        &mut self,
        request: &BatchMeterUsageRequest,
        body_len: usize,
        now: DateTime<Utc>,
    ) -> Result<BatchMeterUsageResponse, ApiError> {
        if request.usage_records.len() > MAX_RECORDS || body_len >= 1024 * 1024 {
            return Err(ApiError::bad(
                names::INVALID_PARAMETER,
                "At most 25 records and 1 MB per call",
            ));
        }
        let mut licensees = Vec::new();
        for record in &request.usage_records {
            let Some(licensee) = record.licensee() else {
                return Err(ApiError::bad(
                    names::INVALID_PARAMETER,
                    "A record names LicenseArn with CustomerAWSAccountId, or CustomerIdentifier",
                ));
            };
            match (&licensee, &request.product_code) {
                (Licensee::License { .. }, Some(_)) => {
                    return Err(ApiError::bad(
                        names::INVALID_PARAMETER,
                        "ProductCode must be omitted when records carry LicenseArn",
                    ));
                }
                (Licensee::Legacy { .. }, None) => {
                    return Err(ApiError::bad(
                        names::INVALID_PARAMETER,
                        "ProductCode is required with CustomerIdentifier",
                    ));
                }
                (Licensee::Legacy { .. }, Some(code)) if *code != self.product_code => {
                    return Err(ApiError::bad(
                        names::INVALID_PRODUCT_CODE,
                        "Unknown product code",
                    ));
                }
                _ => {}
            }
            if let Licensee::License {
                license_arn,
                customer_aws_account_id,
            } = &licensee
            {
                let known = self.licenses.get(license_arn);
                if known.is_none_or(|l| &l.customer_aws_account_id != customer_aws_account_id) {
                    return Err(ApiError::bad(names::INVALID_LICENSE, "Invalid license"));
                }
            }
            if !self.dimensions.contains(&record.dimension) {
                return Err(ApiError::bad(
                    names::INVALID_USAGE_DIMENSION,
                    format!("Unknown dimension {}", record.dimension),
                ));
            }
            let at = record.timestamp as i64;
            if at > now.timestamp() || at <= (now - self.metering_window).timestamp() {
                return Err(ApiError::bad(
                    names::TIMESTAMP_OUT_OF_BOUNDS,
                    "Usage records are accepted for up to 6 hours in the past",
                ));
            }
            if let Some(allocations) = &record.usage_allocations {
                let sum: i64 = allocations.iter().map(|a| a.allocated_usage_quantity).sum();
                if sum != record.quantity.unwrap_or(0) {
                    return Err(ApiError::bad(
                        names::INVALID_USAGE_ALLOCATIONS,
                        "Allocations must add up to the quantity",
                    ));
                }
                if allocations.iter().any(|a| a.tags.len() > 5) {
                    return Err(ApiError::bad(names::INVALID_TAG, "At most 5 tags"));
                }
            }
            licensees.push(licensee);
        }
        let mut response = BatchMeterUsageResponse::default();
        for (record, licensee) in request.usage_records.iter().zip(licensees) {
            if self.unprocessed_next > 0 {
                self.unprocessed_next -= 1;
                response.unprocessed_records.push(record.clone());
                continue;
            }
            let subscribed = self
                .licenses
                .get(licensee.key())
                .is_some_and(|l| match l.state {
                    LicenseState::Active => true,
                    LicenseState::Deprovisioned(at) => now <= at + self.final_window,
                    LicenseState::Ended => false,
                });
            if !subscribed {
                response.results.push(UsageRecordResult {
                    usage_record: record.clone(),
                    metering_record_id: None,
                    status: status::CUSTOMER_NOT_SUBSCRIBED.into(),
                });
                continue;
            }
            let hour = record.timestamp as i64;
            let quantity = record.quantity.unwrap_or(0);
            let key = (licensee.clone(), record.dimension.clone(), hour);
            let tags = record
                .usage_allocations
                .iter()
                .flatten()
                .flat_map(|a| a.tags.iter().map(|t| (t.key.clone(), t.value.clone())))
                .collect();
            let result = match self.accepted.get(&key) {
                Some(existing) if existing.quantity == quantity => UsageRecordResult {
                    usage_record: record.clone(),
                    metering_record_id: Some(existing.metering_record_id.clone()),
                    status: status::SUCCESS.into(),
                },
                Some(existing) => {
                    let mut duplicate = existing.clone();
                    duplicate.quantity = quantity;
                    self.duplicates.push(duplicate);
                    UsageRecordResult {
                        usage_record: record.clone(),
                        metering_record_id: None,
                        status: status::DUPLICATE_RECORD.into(),
                    }
                }
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    self.accepted.insert(
                        key,
                        AcceptedRecord {
                            licensee,
                            dimension: record.dimension.clone(),
                            hour,
                            quantity,
                            metering_record_id: id.clone(),
                            tags,
                        },
                    );
                    UsageRecordResult {
                        usage_record: record.clone(),
                        metering_record_id: Some(id),
                        status: status::SUCCESS.into(),
                    }
                }
            };
            response.results.push(result);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use marketbridge_aws::metering::{Measurement, MeteringBatch};

    fn usage(world: &mut World, key: &str, hour: DateTime<Utc>, now: DateTime<Utc>) -> String {
        let licensee = world.licenses[key].licensee();
        let batch = MeteringBatch::new(
            &world.product_code.clone(),
            &licensee,
            hour.timestamp(),
            &[Measurement {
                dimension: "requests".into(),
                quantity: 3,
                tags: Vec::new(),
            }],
        );
        let answer = world
            .batch_meter_usage(&batch.requests()[0], 100, now)
            .expect("a valid call");
        answer.results[0].status.clone()
    }

    #[test]
    fn a_subscription_is_metered_until_it_is_unsubscribed() {
        let mut world = World::new("prod", &["requests"]);
        let hour = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let now = hour + Duration::minutes(70);
        let key = world.purchase("012345678901", &[], false, None);
        assert!(world.licenses[&key].entitlements.is_empty());
        assert_eq!(usage(&mut world, &key, hour, now), status::SUCCESS);
        // Deprovisioned: the final window still takes usage.
        world.licenses.get_mut(&key).unwrap().state = LicenseState::Deprovisioned(now);
        assert_eq!(
            usage(
                &mut world,
                &key,
                hour + Duration::hours(1),
                now + Duration::minutes(5)
            ),
            status::SUCCESS
        );
        // Unsubscribed: nothing more.
        world.licenses.get_mut(&key).unwrap().state = LicenseState::Ended;
        assert_eq!(
            usage(
                &mut world,
                &key,
                hour + Duration::hours(1),
                now + Duration::minutes(10)
            ),
            status::CUSTOMER_NOT_SUBSCRIBED
        );
    }
}
