//! Inserts a write transaction holds back until its next statement or its
//! commit, then sends together (see [`crate::WriteTxn::insert_at_commit`]):
//! on PostgreSQL as one statement, each insert but the last a
//! data-modifying `WITH` clause of it (one round trip, and when nothing else
//! was sent in the transaction, no `BEGIN` or `COMMIT` either: a statement
//! commits on its own, all or nothing); on SQLite as one text of several
//! statements, run one after another by one call (each call goes to the
//! connection's own thread and its answer back, two thread switches, more
//! than a small insert costs to run).
//!
//! The statements of one `WITH` see the same snapshot, so a deferred insert
//! never depends on another's row being visible: a foreign key between two
//! of them is checked at the end of the statement, when both rows exist.

use sea_orm::sea_query::{
    InsertStatement, PostgresQueryBuilder, SqlWriterValues, SqliteQueryBuilder,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use std::fmt::Write;

/// Most parameters one PostgreSQL statement carries (the protocol counts
/// them in 16 bits).
const MAX_PARAMETERS: usize = u16::MAX as usize;

/// Most inserts sent as one PostgreSQL statement: past this many, a
/// statement's text outgrows what one round trip saves.
const MOST_PER_STATEMENT: usize = 64;

/// `inserts` as one PostgreSQL statement; `None` when there are none, or
/// too many to send as one (more than [`MOST_PER_STATEMENT`], or more
/// parameters than a statement carries).
pub(crate) fn one_statement(inserts: &[InsertStatement]) -> Option<Statement> {
    if inserts.len() > MOST_PER_STATEMENT {
        return None;
    }
    let (last, head) = inserts.split_last()?;
    let mut sql = SqlWriterValues::new("$", true);
    if !head.is_empty() {
        sql.write_str("WITH ").ok()?;
        for (index, insert) in head.iter().enumerate() {
            if index > 0 {
                sql.write_str(", ").ok()?;
            }
            write!(sql, "deferred_{index} AS (").ok()?;
            insert.build_collect_into(PostgresQueryBuilder, &mut sql);
            sql.write_str(")").ok()?;
        }
        sql.write_str(" ").ok()?;
    }
    last.build_collect_into(PostgresQueryBuilder, &mut sql);
    let (sql, values) = sql.into_parts();
    (values.0.len() <= MAX_PARAMETERS)
        .then(|| Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
}

/// `inserts` as one SQLite call: the statements one after another in one
/// text, their parameters anonymous (`?`), so each statement binds the next
/// of the values in order. SQLite's parameter limit holds per statement.
/// `None` when there are none or more than [`MOST_PER_STATEMENT`].
fn one_call_sqlite(inserts: &[InsertStatement]) -> Option<Statement> {
    if inserts.is_empty() || inserts.len() > MOST_PER_STATEMENT {
        return None;
    }
    let mut sql = SqlWriterValues::new("?", false);
    for (index, insert) in inserts.iter().enumerate() {
        if index > 0 {
            sql.write_str("; ").ok()?;
        }
        insert.build_collect_into(SqliteQueryBuilder, &mut sql);
    }
    let (sql, values) = sql.into_parts();
    Some(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        sql,
        values,
    ))
}

/// Sends `inserts`, in order, through `conn` (an open transaction): up to
/// [`MOST_PER_STATEMENT`] per statement on PostgreSQL and per call on
/// SQLite (a group too large for one statement goes one statement each).
pub(crate) async fn insert_all(
    conn: &impl ConnectionTrait,
    inserts: Vec<InsertStatement>,
) -> Result<(), DbErr> {
    let together: fn(&[InsertStatement]) -> Option<Statement> = match conn.get_database_backend() {
        DbBackend::Postgres => one_statement,
        DbBackend::Sqlite => one_call_sqlite,
        _ => return one_by_one(conn, &inserts).await,
    };
    for group in inserts.chunks(MOST_PER_STATEMENT) {
        match together(group) {
            Some(statement) => {
                conn.execute_raw(statement).await?;
            }
            None => one_by_one(conn, group).await?,
        }
    }
    Ok(())
}

async fn one_by_one(conn: &impl ConnectionTrait, inserts: &[InsertStatement]) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    for insert in inserts {
        conn.execute_raw(backend.build(insert)).await?;
    }
    Ok(())
}
