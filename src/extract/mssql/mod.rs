//! The SQL Server source (`source.type = "mssql"`), read with tiberius.
//!
//! Per table: one connection discovers the columns from `INFORMATION_SCHEMA.COLUMNS` and maps them
//! to Arrow ([`types`]; unsupported types fail here, before any data moves), builds the window
//! predicate from the watermark (bound parameters, never text) and, for `partitions > 1`, asks
//! MIN/MAX of the key to split it into ranges ([`partition`]). Each partition then streams over
//! its own connection through the [`types::Decoder`] into a bounded channel that the landing
//! writer drains, so memory stays at a few batches per partition whatever the table size.

pub mod change_tracking;
pub mod connect;
pub mod partition;
pub mod types;

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tiberius::{ColumnData, ToSql};

use super::source::{ReadRequest, Source, TableRead};
use crate::config::{MssqlSource, ReadMode, SourceTable};
use crate::error::{Error, Result};
use crate::schema::ColumnShape;
use crate::state::Watermark;
use connect::{connect, server_label, source_error, MssqlClient};
use partition::KeyRange;
use types::{quote_ident, Kind, Mapping, SourceColumn};

/// SQL Server (or Azure SQL) as a [`Source`]: discovery from the catalog, reads over tiberius.
pub struct SqlServer {
    settings: MssqlSource,
    batch_size: usize,
}

impl SqlServer {
    /// A source over the validated connection settings; nothing connects until used.
    pub fn new(settings: MssqlSource, batch_size: usize) -> Self {
        SqlServer {
            settings,
            batch_size,
        }
    }
}

#[async_trait::async_trait]
impl Source for SqlServer {
    fn kind(&self) -> &'static str {
        "mssql"
    }

    async fn discover(&self, table: &SourceTable) -> Result<Vec<ColumnShape>> {
        let what = describe_table(&self.settings, table);
        let mut client = connect(&self.settings).await?;
        let mappings = discover_mappings(&mut client, &what, table).await?;
        Ok(shapes(&mappings))
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<TableRead> {
        if req.table.mode == ReadMode::ChangeTracking {
            return change_tracking::start_read(
                &self.settings,
                req.table,
                req.watermark_from,
                req.full_refresh,
                self.batch_size,
            )
            .await;
        }
        start_read(
            &self.settings,
            req.table,
            req.watermark_from,
            req.hi_us,
            self.batch_size,
        )
        .await
    }
}

/// `table `x` (dbo.x on host:port)`, the prefix of every message about one source table.
fn describe_table(settings: &MssqlSource, table: &SourceTable) -> String {
    format!(
        "table `{}` ({} on {})",
        table.name,
        table.object,
        server_label(settings)
    )
}

/// Discovers (or describes, for a `query`) the columns and maps them, applying `casts`. For a
/// change-tracked table every column but the key is nullable (a delete row carries only the key,
/// see [`change_tracking`]), and a key column the table lacks is an error naming it.
async fn discover_mappings(
    client: &mut MssqlClient,
    what: &str,
    table: &SourceTable,
) -> Result<Vec<Mapping>> {
    let mut columns = match &table.query {
        Some(q) => describe_query(client, what, q).await?,
        None => discover(client, what, &table.object).await?,
    };
    if table.mode == ReadMode::ChangeTracking {
        change_tracking::relax_nullability(what, table, &mut columns)?;
    }
    map_columns(what, table, &columns)
}

/// The column shapes of mapped columns: Arrow type and nullability of [`types::arrow_schema`],
/// with the declared SQL Server type (the cast target for cast columns). The extra
/// `<col>_offset_minutes` column of a datetimeoffset is declared `smallint`.
fn shapes(mappings: &[Mapping]) -> Vec<ColumnShape> {
    let schema = types::arrow_schema(mappings);
    schema
        .fields()
        .iter()
        .map(|f| {
            let declared = mappings
                .iter()
                .find(|m| &m.column.name == f.name())
                .map(|m| types::type_sql(&m.column))
                .unwrap_or_else(|| "smallint".into());
            ColumnShape {
                name: f.name().clone(),
                data_type: f.data_type().clone(),
                nullable: f.is_nullable(),
                source_type: Some(declared),
            }
        })
        .collect()
}

/// The extraction window of one run.
#[derive(Debug, Clone, Copy)]
pub struct WindowBounds {
    /// Exclusive lower bound: last committed watermark minus the lookback.
    pub lo: Option<i64>,
    /// Exclusive upper bound in microseconds (end of the logical date), for timestamp watermarks.
    pub hi_us: i64,
}

/// `[schema].[table]` of an object name `schema.table`.
pub fn quoted_object(object: &str) -> String {
    match object.split_once('.') {
        Some((s, t)) => format!("{}.{}", quote_ident(s), quote_ident(t)),
        None => quote_ident(object),
    }
}

fn int_of(v: &ColumnData<'_>) -> Option<i64> {
    match v {
        ColumnData::U8(x) => x.map(i64::from),
        ColumnData::I16(x) => x.map(i64::from),
        ColumnData::I32(x) => x.map(i64::from),
        ColumnData::I64(x) => *x,
        ColumnData::Numeric(x) => x.map(|n| n.value() as i64),
        _ => None,
    }
}

fn text_of(v: ColumnData<'_>) -> String {
    match v {
        ColumnData::String(Some(s)) => s.into_owned(),
        _ => String::new(),
    }
}

/// Runs a catalog query; every row must have exactly `N` values.
async fn catalog_rows<const N: usize>(
    client: &mut MssqlClient,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<[ColumnData<'static>; N]>> {
    let rows = client
        .query(sql, params)
        .await
        .map_err(|e| source_error(what, e))?
        .into_first_result()
        .await
        .map_err(|e| source_error(what, e))?;
    rows.into_iter()
        .map(|row| {
            let v: Vec<ColumnData<'static>> = row.into_iter().collect();
            <[_; N]>::try_from(v).map_err(|v| {
                Error::Internal(format!(
                    "{what}: a catalog query returned {} columns, not {N}: {sql}",
                    v.len()
                ))
            })
        })
        .collect()
}

/// Reads the columns of `object` (`schema.table`) from `INFORMATION_SCHEMA.COLUMNS`.
pub async fn discover(
    client: &mut MssqlClient,
    what: &str,
    object: &str,
) -> Result<Vec<SourceColumn>> {
    let (schema, table) = object.split_once('.').unwrap_or(("dbo", object));
    let sql = "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, \
               NUMERIC_SCALE, DATETIME_PRECISION, IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS \
               WHERE TABLE_SCHEMA = @P1 AND TABLE_NAME = @P2 ORDER BY ORDINAL_POSITION";
    let rows = catalog_rows::<7>(client, what, sql, &[&schema, &table]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for [name, data_type, len, p, s, dp, nullable] in rows {
        out.push(SourceColumn {
            name: text_of(name),
            data_type: text_of(data_type).to_ascii_lowercase(),
            max_length: int_of(&len).map(|x| x as i32),
            precision: int_of(&p).map(|x| x as i32),
            scale: int_of(&s).map(|x| x as i32),
            datetime_precision: int_of(&dp).map(|x| x as i32),
            nullable: text_of(nullable).eq_ignore_ascii_case("YES"),
        });
    }
    if out.is_empty() {
        return Err(Error::Source {
            message: format!(
                "{what}: `{object}` not found (no columns visible in INFORMATION_SCHEMA.COLUMNS); check `source.tables.object` and the login's permissions"
            ),
            retryable: false,
        });
    }
    Ok(out)
}

/// Describes the result columns of a source `query` with
/// `sys.dm_exec_describe_first_result_set` (SQL Server 2012+, Azure SQL), which reports each
/// column's full type (`decimal(18,4)`, `datetime2(7)`, `nvarchar(max)`) and nullability without
/// running the query. A query the server cannot describe is an error with the server's reason.
pub async fn describe_query(
    client: &mut MssqlClient,
    what: &str,
    query: &str,
) -> Result<Vec<SourceColumn>> {
    let sql = "SELECT name, system_type_name, is_nullable, is_hidden, error_number, error_message \
               FROM sys.dm_exec_describe_first_result_set(@P1, NULL, 0) ORDER BY column_ordinal";
    let rows = catalog_rows::<6>(client, what, sql, &[&query]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for [name, type_name, nullable, hidden, err_no, err_msg] in rows {
        if let Some(n) = int_of(&err_no) {
            return Err(Error::Source {
                message: format!(
                    "{what}: the server cannot describe `source.tables.query` (error {n}): {}",
                    text_of(err_msg)
                ),
                retryable: false,
            });
        }
        if matches!(hidden, ColumnData::Bit(Some(true))) {
            continue;
        }
        let name = text_of(name);
        let type_name = text_of(type_name);
        let nullable = !matches!(nullable, ColumnData::Bit(Some(false)));
        let c = types::column_of_type(&name, &type_name, nullable).unwrap_or(SourceColumn {
            // An unmapped type: `map_column` names it, or a `casts` entry converts it.
            name,
            data_type: type_name
                .split('(')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            max_length: None,
            precision: None,
            scale: None,
            datetime_precision: None,
            nullable,
        });
        out.push(c);
    }
    if out.is_empty() {
        return Err(Error::Source {
            message: format!("{what}: `source.tables.query` returns no columns"),
            retryable: false,
        });
    }
    Ok(out)
}

/// Maps the discovered columns, applying the table's `casts`.
fn map_columns(what: &str, table: &SourceTable, columns: &[SourceColumn]) -> Result<Vec<Mapping>> {
    for col in table.casts.keys() {
        if !columns.iter().any(|c| &c.name == col) {
            return Err(Error::Source {
                message: format!("{what}: `source.tables.casts` names column `{col}`, which the source does not have"),
                retryable: false,
            });
        }
    }
    columns
        .iter()
        .map(|c| match table.casts.get(&c.name) {
            None => types::map_column(&table.object, c),
            Some(ty) => {
                let target =
                    types::column_of_type(&c.name, ty, c.nullable).map_err(|e| Error::Source {
                        message: format!("{what}: `source.tables.casts.{}`: {e}", c.name),
                        retryable: false,
                    })?;
                let mut m = types::map_column(&table.object, &target)?;
                let q = quote_ident(&c.name);
                m.select = format!("CAST({q} AS {}) AS {q}", types::type_sql(&target));
                Ok(m)
            }
        })
        .collect()
}

/// The FROM clause of a table: `[schema].[table]`, or the `query` as a derived table.
fn from_clause(table: &SourceTable) -> String {
    match &table.query {
        Some(q) => format!("({q}) AS [q]"),
        None => quoted_object(&table.object),
    }
}

/// A WHERE clause under construction: conditions with `@Pn` placeholders and their values.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    params: Vec<ColumnData<'static>>,
}

impl Where {
    fn param(&mut self, v: ColumnData<'static>) -> String {
        self.params.push(v);
        format!("@P{}", self.params.len())
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }

    fn refs(&self) -> Vec<&dyn ToSql> {
        self.params.iter().map(|p| p as &dyn ToSql).collect()
    }
}

/// A datetime2(7) parameter for microseconds since the epoch.
fn datetime2_param(us: i64) -> ColumnData<'static> {
    use tiberius::time::{Date, DateTime2, Time};
    let days = us.div_euclid(86_400_000_000);
    let us_of_day = us.rem_euclid(86_400_000_000);
    let date = Date::new((days + 719_162).max(0) as u32);
    ColumnData::DateTime2(Some(DateTime2::new(
        date,
        Time::new(us_of_day as u64 * 10, 7),
    )))
}

fn window_where(
    what: &str,
    table: &SourceTable,
    mappings: &[Mapping],
    window: WindowBounds,
) -> Result<Where> {
    let mut w = Where::default();
    let Some(col) = &table.watermark else {
        return Ok(w);
    };
    let m = mappings
        .iter()
        .find(|m| &m.column.name == col)
        .ok_or_else(|| Error::Source {
            message: format!(
                "{what}: watermark column `{col}` (source.tables.watermark) does not exist"
            ),
            retryable: false,
        })?;
    let q = quote_ident(col);
    match m.kind {
        Kind::TimestampUs | Kind::TimestampNs | Kind::OffsetUs | Kind::OffsetNs => {
            if let Some(lo) = window.lo {
                let p = w.param(datetime2_param(lo));
                w.conds.push(format!("{q} > {p}"));
            }
            let p = w.param(datetime2_param(window.hi_us));
            w.conds.push(format!("{q} < {p}"));
        }
        Kind::I16 | Kind::I32 | Kind::I64 => {
            if let Some(lo) = window.lo {
                let p = w.param(ColumnData::I64(Some(lo)));
                w.conds.push(format!("{q} > {p}"));
            }
        }
        Kind::RowVersion => {
            if let Some(lo) = window.lo {
                let p = w.param(ColumnData::I64(Some(lo)));
                w.conds.push(format!("{q} > CONVERT(binary(8), {p})"));
            }
        }
        _ => {
            return Err(Error::Source {
                message: format!(
                    "{what}: watermark column `{col}` has type {}; use a monotonic datetime2, datetime, datetimeoffset, integer or rowversion column",
                    m.column.data_type
                ),
                retryable: false,
            })
        }
    }
    Ok(w)
}

/// The watermark a landed column maximum stands for (`timestamp_us` or `int`).
pub fn is_timestamp_watermark(mappings: &[Mapping], col: &str) -> bool {
    mappings.iter().any(|m| {
        m.column.name == col
            && matches!(
                m.kind,
                Kind::TimestampUs | Kind::TimestampNs | Kind::OffsetUs | Kind::OffsetNs
            )
    })
}

/// Plans and starts the read of one table: discovery, window, partitions, one task per partition.
async fn start_read(
    settings: &MssqlSource,
    table: &SourceTable,
    watermark_from: Option<&Watermark>,
    hi_us: i64,
    batch_size: usize,
) -> Result<TableRead> {
    let what = describe_table(settings, table);
    let mut client = connect(settings).await?;
    let mappings = discover_mappings(&mut client, &what, table).await?;
    let schema = types::arrow_schema(&mappings);
    let lookback = if table
        .watermark
        .as_deref()
        .is_some_and(|c| is_timestamp_watermark(&mappings, c))
    {
        table.lookback_seconds * 1_000_000
    } else {
        0
    };
    let window = WindowBounds {
        lo: watermark_from.map(|w| w.value - lookback),
        hi_us,
    };
    let base = window_where(&what, table, &mappings, window)?;
    let wm_col = table
        .watermark
        .as_ref()
        .and_then(|c| schema.index_of(c).ok());
    let partitions = spawn_partitions(
        settings, &what, client, table, &mappings, base, batch_size, None,
    )
    .await?;
    Ok(TableRead {
        columns: shapes(&mappings),
        schema,
        watermark_col: wm_col,
        partitions,
        source_files: Vec::new(),
        rejected: None,
        change_version: None,
        snapshot: false,
    })
}

/// Splits the rows of `table` that `base` selects into its `partitions` key ranges (one
/// MIN/MAX query over `client`, which is then closed) and starts one read per range, each over
/// its own connection. With `snapshot_version` (a change-tracking full sync), every batch ends
/// with `_op = 'U'` and `_change_version` = that version.
#[allow(clippy::too_many_arguments)]
async fn spawn_partitions(
    settings: &MssqlSource,
    what: &str,
    mut client: MssqlClient,
    table: &SourceTable,
    mappings: &[Mapping],
    base: Where,
    batch_size: usize,
    snapshot_version: Option<i64>,
) -> Result<Vec<super::source::Partition>> {
    let object = from_clause(table);
    let ranges = if table.partitions > 1 {
        let key = &table.key[0];
        let km = mappings
            .iter()
            .find(|m| &m.column.name == key)
            .ok_or_else(|| Error::Source {
                message: format!("{what}: key column `{key}` (source.tables.key) does not exist"),
                retryable: false,
            })?;
        if !matches!(km.kind, Kind::I16 | Kind::I32 | Kind::I64) {
            return Err(Error::Source {
                message: format!(
                    "{what}: partitions need an integer key, but `{key}` is {}; set `partitions = 1` or choose an integer key",
                    km.column.data_type
                ),
                retryable: false,
            });
        }
        let q = quote_ident(key);
        let sql = format!(
            "SELECT MIN({q}) AS lo, MAX({q}) AS hi FROM {object}{}",
            base.sql()
        );
        let row = client
            .query(sql, &base.refs())
            .await
            .map_err(|e| source_error(what, e))?
            .into_row()
            .await
            .map_err(|e| source_error(what, e))?;
        let bounds: Vec<Option<i64>> = row
            .map(|r| r.into_iter().map(|v| int_of(&v)).collect())
            .unwrap_or_default();
        match (
            bounds.first().copied().flatten(),
            bounds.get(1).copied().flatten(),
        ) {
            (Some(lo), Some(hi)) => partition::split(lo, hi, table.partitions),
            _ => vec![KeyRange::all()],
        }
    } else {
        vec![KeyRange::all()]
    };
    drop(client);

    let select_list: Vec<String> = mappings.iter().map(|m| m.select.clone()).collect();
    let select_list = select_list.join(", ");
    let mut partitions = Vec::with_capacity(ranges.len());
    for range in ranges {
        let mut w = Where {
            conds: base.conds.clone(),
            params: base.params.clone(),
        };
        if let Some(key) = table.key.first().filter(|_| table.partitions > 1) {
            let q = quote_ident(key);
            match (range.lo, range.hi) {
                (None, Some(hi)) => {
                    let p = w.param(ColumnData::I64(Some(hi)));
                    w.conds.push(format!("({q} < {p} OR {q} IS NULL)"));
                }
                (Some(lo), Some(hi)) => {
                    let a = w.param(ColumnData::I64(Some(lo)));
                    let b = w.param(ColumnData::I64(Some(hi)));
                    w.conds.push(format!("{q} >= {a} AND {q} < {b}"));
                }
                (Some(lo), None) => {
                    let p = w.param(ColumnData::I64(Some(lo)));
                    w.conds.push(format!("{q} >= {p}"));
                }
                (None, None) => {}
            }
        }
        let sql = format!("SELECT {select_list} FROM {object}{}", w.sql());
        partitions.push(spawn_read(
            settings,
            what,
            &table.object,
            sql,
            w,
            mappings.to_vec(),
            batch_size,
            snapshot_version,
        ));
    }
    Ok(partitions)
}

/// Starts one query's read on a task of its own (and its own connection); its batches, or the
/// error that ends it, arrive on the returned partition. See [`read_partition`].
#[allow(clippy::too_many_arguments)]
fn spawn_read(
    settings: &MssqlSource,
    what: &str,
    object: &str,
    sql: String,
    w: Where,
    mappings: Vec<Mapping>,
    batch_size: usize,
    snapshot_version: Option<i64>,
) -> super::source::Partition {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let settings = settings.clone();
    let what = what.to_string();
    let name = object.to_string();
    tokio::spawn(async move {
        let res = read_partition(
            &settings,
            &what,
            &name,
            &sql,
            w,
            mappings,
            batch_size,
            snapshot_version,
            &tx,
        )
        .await;
        if let Err(e) = res {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

/// Runs `sql` over a new connection and decodes its rows into batches sent on `tx`; with
/// `snapshot_version`, each batch gets the change columns of a full sync
/// ([`change_tracking::snapshot_batch`]).
#[allow(clippy::too_many_arguments)]
async fn read_partition(
    settings: &MssqlSource,
    what: &str,
    table: &str,
    sql: &str,
    w: Where,
    mappings: Vec<Mapping>,
    batch_size: usize,
    snapshot_version: Option<i64>,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> Result<()> {
    let mut client = connect(settings).await?;
    let mut decoder = types::Decoder::new(table, mappings, batch_size);
    let finish = |batch: RecordBatch| match snapshot_version {
        Some(v) => change_tracking::snapshot_batch(&batch, v),
        None => Ok(batch),
    };
    let mut rows = client
        .query(sql, &w.refs())
        .await
        .map_err(|e| source_error(what, e))?
        .into_row_stream();
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| source_error(what, e))?;
        if let Some(batch) = decoder.push(row)? {
            if tx.send(finish(batch)).await.is_err() {
                return Ok(());
            }
        }
    }
    if let Some(batch) = decoder.finish()? {
        let _ = tx.send(finish(batch)).await;
    }
    Ok(())
}
