//! Database plumbing every service shares: connecting to SQLite or
//! PostgreSQL, the transactional outbox that carries every outbound call,
//! idempotency records, and fresh databases for tests on both backends.
//!
//! Architecture invariant: this crate knows tables that every service has
//! (`outbox_jobs`, `idempotency_records`, `leader_leases`, `audit_log`), never a service's own tables.

pub mod audit;
pub mod changes;
pub mod db;
mod deferred;
pub mod idempotency;
pub mod leader;
pub mod migrations;
pub mod outbox;
pub mod paging;
pub mod row_cache;
pub mod testing;
pub mod unit_of_work;

pub use db::{
    Backend, ReadsBeforeWrites, RowLocks, Turn, WriteOnce, WriteTurn, WriteTxn, begin_write,
    connect, db_error, is_unique_violation, locked_in, open_migrated, postgres_transactions_begun,
    sqlite_group_commits, sqlite_writers_waiting, write_gate, write_once,
};
pub use sea_orm;
pub use sea_orm_migration;
pub use unit_of_work::{Call, UnitOfWork};
