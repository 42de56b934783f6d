//! One leader per periodic task. Replicas of a service share its database;
//! each periodic task (the billing scheduler, the usage meter, a
//! reconciliation, a marketplace pull) runs on the one replica that holds
//! the task's row in `leader_leases`. The holder renews its lease while it
//! lives; when it dies the lease runs out and the next replica to ask takes
//! the task over, with a higher term. SQLite (one process) and PostgreSQL
//! use the same row, taken with one `INSERT … ON CONFLICT DO UPDATE … WHERE`.
//!
//! Leadership is an efficiency and order guarantee, not the only guard: the
//! work of every periodic task is transactional and deduplicated, so a
//! paused former leader that acts once more does no harm.

use crate::db::{Backend, db_error};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::Result;
use marketbridge_core::time::SharedClock;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, DbBackend, Statement};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::truncate_micros;

/// The `leader_leases` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// Who runs a periodic task, until when.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "leader_leases")]
    pub struct Model {
        /// The task (`billing.scheduler`, `provisioning.usage_meter`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// The replica holding it.
        pub holder: String,
        /// Grows by one at every change of holder.
        pub term: i64,
        /// The holder must renew before then.
        pub expires_at: ChronoDateTimeUtc,
        /// When it was last taken or renewed.
        pub updated_at: ChronoDateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A replica's side of the elections in one service database.
#[derive(Clone)]
pub struct Leadership {
    db: DatabaseConnection,
    clock: SharedClock,
    holder: String,
    lease: Duration,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("holder", &self.holder)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Names this process among the replicas: host, process id and a random
/// part, so a restarted process is a new holder. The same all process long.
pub fn this_replica() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &random[..8])
    })
}

impl Leadership {
    /// Elections in `db` as `holder`, with leases of `lease_seconds`.
    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        holder: impl Into<String>,
        lease_seconds: u64,
    ) -> Self {
        Self {
            db,
            clock,
            holder: holder.into(),
            lease: Duration::from_secs(lease_seconds.max(1)),
        }
    }

    /// This replica's name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes or renews the lease of `task`: the term held, or `None` while
    /// another replica's lease runs.
    pub async fn try_lead(&self, task: &str) -> Result<Option<i64>> {
        let now = truncate_micros(self.clock.now());
        let until = truncate_micros(
            now + ChronoDuration::from_std(self.lease).unwrap_or(ChronoDuration::seconds(30)),
        );
        let (backend, sql) = match Backend::of(&self.db) {
            Backend::Postgres => (
                DbBackend::Postgres,
                "INSERT INTO leader_leases (name, holder, term, expires_at, updated_at) VALUES ($1, $2, 1, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET \
                   term = CASE WHEN leader_leases.holder = excluded.holder THEN leader_leases.term ELSE leader_leases.term + 1 END, \
                   holder = excluded.holder, expires_at = excluded.expires_at, updated_at = excluded.updated_at \
                 WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at < excluded.updated_at \
                 RETURNING term",
            ),
            Backend::Sqlite => (
                DbBackend::Sqlite,
                "INSERT INTO leader_leases (name, holder, term, expires_at, updated_at) VALUES (?1, ?2, 1, ?3, ?4) \
                 ON CONFLICT (name) DO UPDATE SET \
                   term = CASE WHEN leader_leases.holder = excluded.holder THEN leader_leases.term ELSE leader_leases.term + 1 END, \
                   holder = excluded.holder, expires_at = excluded.expires_at, updated_at = excluded.updated_at \
                 WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at < excluded.updated_at \
                 RETURNING term",
            ),
        };
        let statement = Statement::from_sql_and_values(
            backend,
            sql,
            [
                task.into(),
                self.holder.clone().into(),
                until.into(),
                now.into(),
            ],
        );
        let write = crate::db::write_once(&self.db).await?;
        let row = write.query_one_raw(statement).await.map_err(db_error)?;
        write.commit().await?;
        match row {
            Some(row) => {
                let term: i64 = row.try_get("", "term").map_err(db_error)?;
                Ok(Some(term))
            }
            None => Ok(None),
        }
    }

    /// Gives `task` up so another replica can take it at once (on a clean
    /// stop).
    pub async fn step_down(&self, task: &str) -> Result<()> {
        let past = truncate_micros(self.clock.now() - ChronoDuration::seconds(1));
        let write = crate::db::write_once(&self.db).await?;
        entity::Entity::update_many()
            .col_expr(entity::Column::ExpiresAt, Expr::value(past))
            .filter(entity::Column::Name.eq(task))
            .filter(entity::Column::Holder.eq(self.holder.clone()))
            .exec(&write)
            .await
            .map_err(db_error)?;
        write.commit().await
    }

    /// Who holds `task` and until when, if anyone ever did.
    pub async fn current(&self, task: &str) -> Result<Option<entity::Model>> {
        entity::Entity::find_by_id(task.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// Every lease in this database (for operators and tests).
    pub async fn all(&self) -> Result<Vec<entity::Model>> {
        entity::Entity::find().all(&self.db).await.map_err(db_error)
    }

    /// Runs `tick` every `interval` (the first at once) on the replica that
    /// leads `task`, until `shutdown`. Followers ask again every third of the
    /// lease, so they take over soon after the leader dies. The leader
    /// renews its lease while a tick runs, and a tick is stopped if the
    /// lease is lost. On shutdown the leader steps down.
    pub async fn run_elected<F, Fut>(
        &self,
        task: &str,
        interval: Duration,
        shutdown: CancellationToken,
        mut tick: F,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let ask_every = (self.lease / 3).max(Duration::from_millis(50));
        let mut next_tick = tokio::time::Instant::now();
        let mut leading = false;
        loop {
            match self.try_lead(task).await {
                Ok(Some(term)) => {
                    if !leading {
                        tracing::info!(task, term, holder = %self.holder, "leading periodic task");
                    }
                    leading = true;
                }
                Ok(None) => {
                    if leading {
                        tracing::warn!(task, holder = %self.holder, "lost the lead of a periodic task");
                    }
                    leading = false;
                }
                Err(error) => {
                    tracing::warn!(task, error = %error, "leader election failed");
                    leading = false;
                }
            }
            if leading && tokio::time::Instant::now() >= next_tick {
                let span = tracing::info_span!("periodic", task);
                // Boxed, so a task's (large) future is not part of the
                // loop's, nor of whoever spawns it.
                let work = Box::pin(tick().instrument(span));
                let keep = Box::pin(self.keep(task, ask_every));
                let lost = tokio::select! {
                    () = work => false,
                    () = keep => true,
                    () = shutdown.cancelled() => false,
                };
                if lost {
                    tracing::warn!(task, "lost the lead during a run; the run stopped");
                    leading = false;
                }
                next_tick = tokio::time::Instant::now() + interval;
            }
            let pause = if leading {
                ask_every.min(next_tick.saturating_duration_since(tokio::time::Instant::now()))
            } else {
                ask_every
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if leading && let Err(error) = self.step_down(task).await {
                        tracing::warn!(task, error = %error, "stepping down failed");
                    }
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Renews `task` every `every`; returns when the lease is lost.
    async fn keep(&self, task: &str, every: Duration) {
        let mut expires: DateTime<Utc> = self.clock.now()
            + ChronoDuration::from_std(self.lease).unwrap_or(ChronoDuration::seconds(30));
        loop {
            tokio::time::sleep(every).await;
            match self.try_lead(task).await {
                Ok(Some(_)) => {
                    expires = self.clock.now()
                        + ChronoDuration::from_std(self.lease)
                            .unwrap_or(ChronoDuration::seconds(30));
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(task, error = %error, "renewing the lead failed");
                    if self.clock.now() >= expires {
                        return;
                    }
                }
            }
        }
    }
}
