//! Outbox jobs of the billing service.

use crate::domain::BillingDomain;
use async_trait::async_trait;
use marketbridge_storage::outbox::{Job, JobError, JobHandler};

/// Runs the billing service's jobs.
pub struct BillingJobs {
    #[allow(dead_code)]
    domain: BillingDomain,
}

impl BillingJobs {
    /// Jobs over the domain.
    pub fn new(domain: BillingDomain) -> Self {
        Self { domain }
    }
}

#[async_trait]
impl JobHandler for BillingJobs {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        Err(JobError::Permanent(format!(
            "unknown job kind {}",
            job.kind
        )))
    }
}
