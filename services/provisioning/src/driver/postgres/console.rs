//! The database console: one SQL statement at a time, run in the customer's
//! database with the customer's own login, inside a transaction that is
//! read-only when asked, with a statement timeout.
//!
//! The statement is first prepared, which the server refuses for more than
//! one statement, so a read-only request cannot end the read-only
//! transaction and carry on writing. It then runs over the simple query
//! protocol, whose results arrive as text whatever their type.
//!
//! The answer is bounded: at most [`MAX_ROWS`] rows are kept (the rest are
//! counted), a cell keeps at most [`MAX_CELL_BYTES`], and once the cells
//! kept reach [`MAX_ANSWER_BYTES`] nothing more is read: the connection is
//! closed (rolling back the statement) and the answer says it was cut. A
//! query that can be a subquery (`SELECT`, `VALUES`, `TABLE`) runs wrapped
//! in one that cuts every cell on the server, so even one huge value never
//! reaches the service whole.

use super::admin::sql_error;
use crate::console::{failure, paragraph, table, text};
use futures::StreamExt;
use marketbridge_core::{Error, Result};
use marketbridge_proto::provisioning::v1::OutputBlock;
use sea_orm::sqlx;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Column, Connection, Either, Executor, Row, SqlSafeStr, Statement};
use std::time::Duration;

/// Longest a statement may run.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest to wait for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Rows shown; the rest are counted.
pub const MAX_ROWS: usize = 200;
/// Bytes of one cell shown; longer values are cut.
pub const MAX_CELL_BYTES: usize = 4 * 1024;
/// Bytes of cells one answer keeps; reading stops there.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// What `help` says of the console.
pub const HELP: &str = "any one SQL statement, run as the database owner (at most 2 s, 200 rows and 256 KiB shown, 4 KiB per cell)";

/// What [`statement`] read.
struct Answer {
    blocks: Vec<OutputBlock>,
    /// True when reading stopped at [`MAX_ANSWER_BYTES`]: the connection
    /// is mid-answer and can only be closed.
    cut: bool,
}

/// Runs `input` and describes what happened.
pub async fn run(
    options: PgConnectOptions,
    input: &str,
    read_only: bool,
) -> Result<Vec<OutputBlock>> {
    let mut connection =
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(sql_error("open the console", error)),
            Err(_) => {
                return Err(Error::unavailable(
                    "postgres: the console could not connect in time",
                ));
            }
        };
    let setup = format!(
        "SET statement_timeout = {}; BEGIN{}",
        STATEMENT_TIMEOUT.as_millis(),
        if read_only { " READ ONLY" } else { "" }
    );
    // Built from fixed text and a number only.
    sqlx::raw_sql(AssertSqlSafe(setup))
        .execute(&mut connection)
        .await
        .map_err(|e| sql_error("start the console transaction", e))?;
    let blocks = match statement(&mut connection, input).await {
        Ok(Answer { blocks, cut: true }) => {
            // The rest of the answer is unread: drop the connection, which
            // rolls the transaction back.
            drop(connection);
            return Ok(blocks);
        }
        Ok(Answer { blocks, cut: false }) => {
            let end = if read_only { "ROLLBACK" } else { "COMMIT" };
            match sqlx::raw_sql(end).execute(&mut connection).await {
                Ok(_) => blocks,
                Err(error) => vec![sql_failure(&error)],
            }
        }
        Err(error) => vec![sql_failure(&error)],
    };
    let _ = connection.close().await;
    Ok(blocks)
}

/// `value` cut to at most [`MAX_CELL_BYTES`] (on a character boundary),
/// with a note that it was.
fn cell(value: String) -> String {
    if value.len() <= MAX_CELL_BYTES {
        return value;
    }
    let mut end = MAX_CELL_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {} KiB)", &value[..end], MAX_CELL_BYTES / 1024)
}

/// `input` as a subquery whose `columns` cells are cut on the server to
/// one character more than a cell shows (so the cut is still noticed), as
/// the text the server would send (NULL stays NULL).
fn wrapped(input: &str, columns: usize) -> String {
    let query = input.trim_end().trim_end_matches(';');
    let names: Vec<String> = (1..=columns).map(|i| format!("c{i}")).collect();
    let cells: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                "CASE WHEN pg_catalog.num_nulls(q.{name}) = 1 THEN NULL \
                 ELSE pg_catalog.left(pg_catalog.format('%s', q.{name}), {}) END",
                MAX_CELL_BYTES + 1
            )
        })
        .collect();
    format!(
        "SELECT {} FROM (\n{query}\n) AS q({})",
        cells.join(", "),
        names.join(", ")
    )
}

/// True when `sql` prepares; a failure leaves the transaction usable.
async fn prepares(
    connection: &mut PgConnection,
    sql: &str,
) -> std::result::Result<bool, sqlx::Error> {
    sqlx::raw_sql("SAVEPOINT console_cut")
        .execute(&mut *connection)
        .await?;
    let prepared = connection
        .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
        .is_ok();
    let end = if prepared {
        "RELEASE SAVEPOINT console_cut"
    } else {
        "ROLLBACK TO SAVEPOINT console_cut"
    };
    sqlx::raw_sql(end).execute(&mut *connection).await?;
    Ok(prepared)
}

/// Runs the one statement in `input`.
async fn statement(
    connection: &mut PgConnection,
    input: &str,
) -> std::result::Result<Answer, sqlx::Error> {
    // The customer's own text, run with the customer's own privileges; the
    // prepare refuses more than one statement.
    let prepared = connection
        .prepare(AssertSqlSafe(input.to_owned()).into_sql_str())
        .await?;
    let header: Vec<String> = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut hidden = 0usize;
    let mut affected = None;
    let mut answer_bytes = 0usize;
    let mut cut = false;
    // The wrapped text is one statement when it prepares: the server parsed
    // it as one.
    let mut sql = input.to_owned();
    if !header.is_empty() {
        let candidate = wrapped(input, header.len());
        if prepares(connection, &candidate).await? {
            sql = candidate;
        }
    }
    let mut results = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_many(&mut *connection);
    while let Some(item) = results.next().await {
        match item? {
            Either::Left(done) => affected = Some(done.rows_affected()),
            Either::Right(row) => {
                if rows.len() >= MAX_ROWS {
                    hidden += 1;
                    continue;
                }
                let cells: Vec<String> = (0..row.len())
                    .map(|i| {
                        row.try_get_unchecked::<Option<String>, _>(i)
                            .ok()
                            .flatten()
                            .map(cell)
                            .unwrap_or_else(|| "NULL".to_owned())
                    })
                    .collect();
                answer_bytes += cells.iter().map(String::len).sum::<usize>();
                rows.push(cells);
                if answer_bytes >= MAX_ANSWER_BYTES {
                    cut = true;
                    break;
                }
            }
        }
    }
    drop(results);
    let mut blocks = Vec::new();
    let shown = rows.len();
    if header.is_empty() {
        blocks.push(paragraph(vec![text(format!(
            "OK, {} row{} affected",
            affected.unwrap_or(0),
            if affected == Some(1) { "" } else { "s" }
        ))]));
    } else if cut {
        blocks.push(table(header, rows));
        blocks.push(paragraph(vec![text(format!(
            "{shown} row{} shown; the answer was cut at {} KiB and the rest was not read (the statement was rolled back)",
            if shown == 1 { "" } else { "s" },
            MAX_ANSWER_BYTES / 1024
        ))]));
    } else {
        let total = shown + hidden;
        blocks.push(table(header, rows));
        let mut summary = format!("{total} row{}", if total == 1 { "" } else { "s" });
        if hidden > 0 {
            summary.push_str(&format!(", {hidden} not shown"));
        }
        blocks.push(paragraph(vec![text(summary)]));
    }
    Ok(Answer { blocks, cut })
}

/// An SQL error as the console shows it.
fn sql_failure(error: &sqlx::Error) -> OutputBlock {
    match error {
        sqlx::Error::Database(database) => failure(format!(
            "ERROR: {} (SQLSTATE {})",
            database.message(),
            database.code().unwrap_or_default()
        )),
        other => failure(format!("ERROR: {other}")),
    }
}
