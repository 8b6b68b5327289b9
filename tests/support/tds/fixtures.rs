//! Fixture tables served by the TDS test server, registered in a DataFusion session:
//! `dbo.<LogisticsDB tables>` from the sample generator, `dbo.AllTypes` (every supported type with
//! extremes, NULLs, empty and max-length values), `dbo.Unsupported` (sql_variant, geography),
//! `dbo.Big` (a generated 10-column mixed table), `dbo.Tracked` (change tracking, see
//! [`super::change_tracking`]), the eight TPC-H tables as `tpch.<table>` when
//! [`FixtureOptions::tpch_scale_factor`] is set (see [`super::tpch`]) and the catalog
//! `INFORMATION_SCHEMA.COLUMNS`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, RecordBatch, StringArray, Time64NanosecondArray,
    TimestampMicrosecondArray, TimestampNanosecondArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::types::{field, SqlType};

/// What the fixture serves.
#[derive(Debug, Clone)]
pub struct FixtureOptions {
    /// Scale factor of the LogisticsDB sample tables.
    pub scale_factor: f64,
    /// Sample seed.
    pub seed: u64,
    /// First day of daily changes.
    pub start_date: chrono::NaiveDate,
    /// Days of changes after `start_date` the tables hold.
    pub days: i64,
    /// Rows of `dbo.Big`.
    pub big_rows: usize,
    /// TPC-H scale factor of the `tpch.*` tables (0: not served, nothing generated).
    pub tpch_scale_factor: f64,
    /// Also write the generated TPC-H tables to this directory as Parquet and CSV files
    /// ([`super::tpch::write_dump`]), before the server accepts connections.
    pub tpch_dump: Option<std::path::PathBuf>,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            scale_factor: 0.002,
            seed: 42,
            start_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("date"),
            days: 3,
            big_rows: 10_000,
            tpch_scale_factor: 0.0,
            tpch_dump: None,
        }
    }
}

/// The LogisticsDB tables of the sample generator.
pub use smelter::config::SAMPLE_TABLES;

/// `rowversion_bytes(bigint)`: the 8 big-endian bytes SQL Server's `CONVERT(binary(8), @n)` gives.
fn rowversion_bytes() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    let f = Arc::new(|args: &[ColumnarValue]| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let a = arrow::compute::cast(&arrays[0], &DataType::Int64)?;
        let a = a
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to int64");
        let out: arrow::array::BinaryArray = a.iter().map(|v| v.map(|v| v.to_be_bytes())).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    datafusion::logical_expr::create_udf(
        "rowversion_bytes",
        vec![DataType::Int64],
        DataType::Binary,
        Volatility::Immutable,
        f,
    )
}

/// Builds the session with every fixture table.
pub fn session(opts: &FixtureOptions) -> datafusion::error::Result<SessionContext> {
    // Unquoted names keep their case (`dbo.Big`), like SQL Server's default collation matching.
    let config = datafusion::prelude::SessionConfig::new()
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_udf(rowversion_bytes());
    let catalog = ctx.catalog("datafusion").expect("default catalog");
    let dbo = Arc::new(MemorySchemaProvider::new());
    let meta = Arc::new(MemorySchemaProvider::new());
    catalog.register_schema("dbo", dbo.clone())?;
    catalog.register_schema("fixture_catalog", meta.clone())?;
    let mut tables: Vec<(String, RecordBatch)> = Vec::new();
    for name in SAMPLE_TABLES {
        let batches = sample_table(opts, name)?;
        tables.push((name.to_string(), batches));
    }
    tables.push(("AllTypes".into(), all_types()?));
    tables.push(("Unsupported".into(), unsupported()?));
    tables.push(("Big".into(), big(opts.big_rows)?));
    tables.push(("Versioned".into(), versioned()?));
    tables.push((
        super::change_tracking::TABLE.into(),
        super::change_tracking::Tracked::default().batch()?,
    ));
    let mut catalog_rows = CatalogRows::default();
    for (name, batch) in &tables {
        catalog_rows.add("dbo", name, batch.schema_ref());
        let t = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])?;
        datafusion::catalog::SchemaProvider::register_table(&*dbo, name.clone(), Arc::new(t))?;
    }
    if opts.tpch_scale_factor > 0.0 {
        let tpch = Arc::new(MemorySchemaProvider::new());
        catalog.register_schema(super::tpch::SCHEMA, tpch.clone())?;
        let generated = super::tpch::generate(opts.tpch_scale_factor)?;
        if let Some(dir) = &opts.tpch_dump {
            super::tpch::write_dump(&generated, dir)?;
        }
        for (name, batches) in generated {
            let schema = super::tpch::schema(name)?;
            catalog_rows.add(super::tpch::SCHEMA, name, &schema);
            let t = MemTable::try_new(schema, vec![batches])?;
            datafusion::catalog::SchemaProvider::register_table(&*tpch, name.into(), Arc::new(t))?;
        }
    }
    let columns = catalog_rows.batch()?;
    let t = MemTable::try_new(columns.schema(), vec![vec![columns]])?;
    datafusion::catalog::SchemaProvider::register_table(&*meta, "columns".into(), Arc::new(t))?;
    Ok(ctx)
}

fn sample_table(opts: &FixtureOptions, name: &str) -> datafusion::error::Result<RecordBatch> {
    use smelter::extract::sample::{days_since_epoch, Sample, Window};
    let source = smelter::config::Source {
        kind: smelter::config::SourceKind::Sample,
        database: "LogisticsDB".into(),
        scale_factor: opts.scale_factor,
        seed: opts.seed,
        start_date: opts.start_date,
        batch_size: 65_536,
        tables: Vec::new(),
        mssql: None,
        files: None,
    };
    let sample = Sample::new(&source);
    let hi = (days_since_epoch(opts.start_date) as i64 + opts.days) * 86_400_000_000;
    let window = Window { lo: None, hi };
    let schema = Sample::schema(name).map_err(ext)?;
    let mut batches = Vec::new();
    for range in sample.partitions(name, window, 1) {
        for b in sample.read(name, window, range).map_err(ext)? {
            batches.push(b.map_err(ext)?);
        }
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let decl = match f.data_type() {
                DataType::Int64 => "bigint".to_string(),
                DataType::Int32 => "int".to_string(),
                DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
                DataType::Date32 => "date".to_string(),
                DataType::Timestamp(_, _) => "datetime2(6)".to_string(),
                _ => "nvarchar(200)".to_string(),
            };
            field(f.name(), &decl, f.is_nullable())
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = arrow::compute::concat_batches(&schema, batches.iter())?;
    Ok(batch)
}

fn ext(e: smelter::Error) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

/// Columns of `dbo.AllTypes` with their declared types.
pub const ALL_TYPES: &[(&str, &str)] = &[
    ("id", "int"),
    ("c_tinyint", "tinyint"),
    ("c_smallint", "smallint"),
    ("c_int", "int"),
    ("c_bigint", "bigint"),
    ("c_bit", "bit"),
    ("c_real", "real"),
    ("c_float", "float"),
    ("c_dec38_0", "decimal(38,0)"),
    ("c_dec38_10", "decimal(38,10)"),
    ("c_dec38_38", "decimal(38,38)"),
    ("c_num9_2", "numeric(9,2)"),
    ("c_money", "money"),
    ("c_smallmoney", "smallmoney"),
    ("c_date", "date"),
    ("c_time0", "time(0)"),
    ("c_time7", "time(7)"),
    ("c_datetime", "datetime"),
    ("c_smalldatetime", "smalldatetime"),
    ("c_dt2_0", "datetime2(0)"),
    ("c_dt2_3", "datetime2(3)"),
    ("c_dt2_7", "datetime2(7)"),
    ("c_dto0", "datetimeoffset(0)"),
    ("c_dto7", "datetimeoffset(7)"),
    ("c_guid", "uniqueidentifier"),
    ("c_char10", "char(10)"),
    ("c_varchar50", "varchar(50)"),
    ("c_varcharmax", "varchar(max)"),
    ("c_nchar5", "nchar(5)"),
    ("c_nvarchar40", "nvarchar(40)"),
    ("c_nvarcharmax", "nvarchar(max)"),
    ("c_binary4", "binary(4)"),
    ("c_varbinary16", "varbinary(16)"),
    ("c_varbinarymax", "varbinary(max)"),
    ("c_xml", "xml"),
];

fn ts_us(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .expect("fixture timestamp")
        .and_utc()
        .timestamp_micros()
}

fn ts_ns(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .expect("fixture timestamp")
        .and_utc()
        .timestamp_nanos_opt()
        .expect("in ns range")
}

fn time_ns(s: &str) -> i64 {
    let t = chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f").expect("fixture time");
    t.signed_duration_since(chrono::NaiveTime::default())
        .num_nanoseconds()
        .expect("ns")
}

fn date(s: &str) -> i32 {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("fixture date");
    d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
        .num_days() as i32
}

/// `dbo.AllTypes`: row 1 holds the minimum of every type, row 2 the maximum (and max-length
/// values), row 3 NULLs, row 4 empty strings and ordinary values. Two values before 1970 carry a
/// sub-microsecond part, so a writer that rounds toward zero instead of flooring shows up:
/// `c_dt2_7` row 1 (`1677-09-22 00:00:00.0000001`) and `c_dto7` row 4
/// (`1969-12-31 23:59:59.9999999 +00:00`).
pub fn all_types() -> datafusion::error::Result<RecordBatch> {
    let max38 = 10i128.pow(38) - 1;
    let long_x = "x".repeat(50);
    let long_y = "y".repeat(20_000);
    let long_u = "ü".repeat(10_000);
    let long_xml = format!("<r>{}</r>", "z".repeat(9_000));
    let e = "é".repeat(40);
    let bin_max: Vec<u8> = (0..9_000u32).map(|i| (i % 251) as u8).collect();
    let bin16: Vec<u8> = (0..16u8).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
        Arc::new(UInt8Array::from(vec![Some(0), Some(255), None, Some(7)])),
        Arc::new(Int16Array::from(vec![
            Some(i16::MIN),
            Some(i16::MAX),
            None,
            Some(0),
        ])),
        Arc::new(Int32Array::from(vec![
            Some(i32::MIN),
            Some(i32::MAX),
            None,
            Some(-1),
        ])),
        Arc::new(Int64Array::from(vec![
            Some(i64::MIN),
            Some(i64::MAX),
            None,
            Some(42),
        ])),
        Arc::new(BooleanArray::from(vec![
            Some(false),
            Some(true),
            None,
            Some(true),
        ])),
        Arc::new(Float32Array::from(vec![
            Some(-3.4e38),
            Some(3.4e38),
            None,
            Some(1.5),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(-1.79e308),
            Some(1.79e308),
            None,
            Some(0.1),
        ])),
        dec(vec![Some(-max38), Some(max38), None, Some(0)], 38, 0)?,
        dec(
            vec![
                Some(-max38),
                Some(max38),
                None,
                Some(123_456_789_012_345_678_901_234_567_890_123_456),
            ],
            38,
            10,
        )?,
        dec(vec![Some(-max38), Some(max38), None, Some(1)], 38, 38)?,
        dec(
            vec![Some(-999_999_999), Some(999_999_999), None, Some(1)],
            9,
            2,
        )?,
        dec(
            vec![
                Some(i64::MIN as i128),
                Some(i64::MAX as i128),
                None,
                Some(12_345),
            ],
            19,
            4,
        )?,
        dec(
            vec![
                Some(i32::MIN as i128),
                Some(i32::MAX as i128),
                None,
                Some(-1),
            ],
            10,
            4,
        )?,
        Arc::new(Date32Array::from(vec![
            Some(date("0001-01-01")),
            Some(date("9999-12-31")),
            None,
            Some(date("2026-11-01")),
        ])),
        Arc::new(Time64NanosecondArray::from(vec![
            Some(0),
            Some(time_ns("23:59:59")),
            None,
            Some(time_ns("12:34:56")),
        ])),
        Arc::new(Time64NanosecondArray::from(vec![
            Some(0),
            Some(time_ns("23:59:59.9999999")),
            None,
            Some(time_ns("12:34:56.1234567")),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(ts_us("1753-01-01 00:00:00")),
            Some(ts_us("9999-12-31 23:59:59.996667")),
            None,
            Some(ts_us("2026-11-01 10:20:30.120")),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(ts_us("1900-01-01 00:00:00")),
            Some(ts_us("2079-06-06 23:59:00")),
            None,
            Some(ts_us("2026-11-01 10:20:00")),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(ts_us("0001-01-01 00:00:00")),
            Some(ts_us("9999-12-31 23:59:59")),
            None,
            Some(ts_us("2026-11-01 10:20:30")),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(ts_us("0001-01-01 00:00:00")),
            Some(ts_us("9999-12-31 23:59:59.999")),
            None,
            Some(ts_us("2026-11-01 10:20:30.123")),
        ])),
        Arc::new(TimestampNanosecondArray::from(vec![
            Some(ts_ns("1677-09-22 00:00:00.0000001")),
            Some(ts_ns("2262-04-11 23:47:16.8547758")),
            None,
            Some(ts_ns("2026-11-01 10:20:30.1234567")),
        ])),
        Arc::new(StringArray::from(vec![
            Some("0001-01-01 14:00:00 +14:00"),
            Some("9999-12-31 09:59:59 -14:00"),
            None,
            Some("2026-11-01 10:20:30 +05:30"),
        ])),
        Arc::new(StringArray::from(vec![
            Some("2026-11-01 10:20:30.1234567 +05:30"),
            Some("2026-11-01 10:20:30.1234567 -08:00"),
            None,
            // Before 1970 with a sub-microsecond part: Delta (µs) must floor it.
            Some("1969-12-31 23:59:59.9999999 +00:00"),
        ])),
        Arc::new(StringArray::from(vec![
            Some("00000000-0000-0000-0000-000000000000"),
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            None,
            Some("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some("abcdefghij"),
            None,
            Some("a"),
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some(long_x.as_str()),
            None,
            Some("hello"),
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some(long_y.as_str()),
            None,
            Some("v"),
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some("ÄÖÜßé"),
            None,
            Some("ab"),
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some(e.as_str()),
            None,
            Some("Grüße 😀 日本"),
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some(long_u.as_str()),
            None,
            Some("ok"),
        ])),
        Arc::new(BinaryArray::from(vec![
            Some(&[0u8, 0, 0, 0][..]),
            Some(&[0xff, 0xff, 0xff, 0xff][..]),
            None,
            Some(&[1, 2, 3, 4][..]),
        ])),
        Arc::new(BinaryArray::from(vec![
            Some(&[][..]),
            Some(&bin16[..]),
            None,
            Some(&[0xde, 0xad][..]),
        ])),
        Arc::new(BinaryArray::from(vec![
            Some(&[][..]),
            Some(&bin_max[..]),
            None,
            Some(&[0][..]),
        ])),
        Arc::new(StringArray::from(vec![
            Some("<a/>"),
            Some(long_xml.as_str()),
            None,
            Some("<x y=\"1\">é</x>"),
        ])),
    ];
    let fields: Vec<Field> = ALL_TYPES
        .iter()
        .map(|(n, t)| field(n, t, *n != "id"))
        .collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn dec(v: Vec<Option<i128>>, p: u8, s: i8) -> datafusion::error::Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from(v).with_precision_and_scale(p, s)?,
    ))
}

/// `dbo.Unsupported`: columns of types Smelter refuses.
fn unsupported() -> datafusion::error::Result<RecordBatch> {
    let fields = vec![
        field("id", "int", false),
        field("c_variant", "sql_variant", true),
        field("c_geo", "geography", true),
    ];
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1])),
        Arc::new(StringArray::from(vec![Some("x")])),
        Arc::new(StringArray::from(vec![Some("POINT(0 0)")])),
    ];
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// Columns of `dbo.Big`, the 10-column mixed table of the decode benchmark.
pub const BIG: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("qty", "int"),
    ("amount", "decimal(18,4)"),
    ("price", "float"),
    ("name", "nvarchar(50)"),
    ("code", "varchar(10)"),
    ("flag", "bit"),
    ("created_at", "datetime2(7)"),
    ("day", "date"),
    ("ref", "uniqueidentifier"),
];

/// The rowversion values of `dbo.Versioned`, in id order: not monotonic in id, and chosen so
/// that comparing them as little-endian bytes would order them differently.
pub const ROW_VERSIONS: [i64; 6] = [
    0x07D1,
    0x0001_0000_0000,
    0x00FF,
    0x0100,
    0x0001_0000_00FF,
    0x0200,
];

/// `dbo.Versioned`: a table with a `rowversion` column (`rv`).
fn versioned() -> datafusion::error::Result<RecordBatch> {
    let fields = vec![
        field("id", "int", false),
        field("payload", "nvarchar(20)", true),
        field("rv", "rowversion", false),
    ];
    let n = ROW_VERSIONS.len() as i32;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(1..=n)),
        Arc::new(StringArray::from_iter_values(
            (1..=n).map(|i| format!("v{i}")),
        )),
        Arc::new(arrow::array::BinaryArray::from_iter_values(
            ROW_VERSIONS.iter().map(|v| v.to_be_bytes()),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// `dbo.Big` with `n` rows (ids 1..=n), deterministic values, some NULLs.
pub fn big(n: usize) -> datafusion::error::Result<RecordBatch> {
    let ids: Vec<i64> = (1..=n as i64).collect();
    let base = ts_ns("2026-01-01 00:00:00");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int32Array::from_iter(
            ids.iter()
                .map(|i| (i % 7 != 0).then_some((i % 1000) as i32)),
        )),
        Arc::new(
            Decimal128Array::from_iter_values(
                ids.iter().map(|i| (*i as i128) * 12_345 % 10_000_000_000),
            )
            .with_precision_and_scale(18, 4)?,
        ),
        Arc::new(Float64Array::from_iter_values(
            ids.iter().map(|i| *i as f64 * 0.25),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("customer name {i}")),
        )),
        Arc::new(StringArray::from_iter(
            ids.iter()
                .map(|i| (i % 5 != 0).then(|| format!("C{:05}", i % 100_000))),
        )),
        Arc::new(BooleanArray::from_iter(
            ids.iter().map(|i| Some(i % 2 == 0)),
        )),
        Arc::new(TimestampNanosecondArray::from_iter_values(
            ids.iter().map(|i| base + i * 1_000_000_100),
        )),
        Arc::new(Date32Array::from_iter_values(
            ids.iter().map(|i| 20_454 + (i % 365) as i32),
        )),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| {
            uuid::Uuid::from_u128(0x1234_5678_9abc_def0_0000_0000_0000_0000u128 + *i as u128)
                .to_string()
        }))),
    ];
    let fields: Vec<Field> = BIG.iter().map(|(n, t)| field(n, t, *n != "id")).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

#[derive(Default)]
struct CatalogRows {
    schema: Vec<String>,
    table: Vec<String>,
    column: Vec<String>,
    ordinal: Vec<i32>,
    data_type: Vec<String>,
    char_len: Vec<Option<i32>>,
    precision: Vec<Option<i32>>,
    scale: Vec<Option<i32>>,
    dt_precision: Vec<Option<i32>>,
    nullable: Vec<String>,
}

impl CatalogRows {
    fn add(&mut self, schema: &str, table: &str, s: &SchemaRef) {
        for (i, f) in s.fields().iter().enumerate() {
            let ty = SqlType::of_field(f);
            let (name, len, p, sc, dp) = ty.catalog();
            self.schema.push(schema.into());
            self.table.push(table.into());
            self.column.push(f.name().clone());
            self.ordinal.push(i as i32 + 1);
            self.data_type.push(name);
            self.char_len.push(len);
            self.precision.push(p);
            self.scale.push(sc);
            self.dt_precision.push(dp);
            self.nullable
                .push(if f.is_nullable() { "YES" } else { "NO" }.into());
        }
    }

    fn batch(self) -> datafusion::error::Result<RecordBatch> {
        let s = |n: &str| Field::new(n, DataType::Utf8, false);
        let i = |n: &str, null: bool| Field::new(n, DataType::Int32, null);
        let schema = Schema::new(vec![
            s("TABLE_SCHEMA"),
            s("TABLE_NAME"),
            s("COLUMN_NAME"),
            i("ORDINAL_POSITION", false),
            s("DATA_TYPE"),
            i("CHARACTER_MAXIMUM_LENGTH", true),
            i("NUMERIC_PRECISION", true),
            i("NUMERIC_SCALE", true),
            i("DATETIME_PRECISION", true),
            s("IS_NULLABLE"),
        ]);
        Ok(RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(self.schema)),
                Arc::new(StringArray::from(self.table)),
                Arc::new(StringArray::from(self.column)),
                Arc::new(Int32Array::from(self.ordinal)),
                Arc::new(StringArray::from(self.data_type)),
                Arc::new(Int32Array::from(self.char_len)),
                Arc::new(Int32Array::from(self.precision)),
                Arc::new(Int32Array::from(self.scale)),
                Arc::new(Int32Array::from(self.dt_precision)),
                Arc::new(StringArray::from(self.nullable)),
            ],
        )?)
    }
}
