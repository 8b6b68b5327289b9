//! The sample source: a deterministic LogisticsDB generator.
//!
//! Every value is a pure function of `(seed, table, id, field)` (a splitmix64 hash), so any
//! partition of any table can be generated independently and in any order, and the same seed gives
//! the same data. Rows stream out as Arrow batches; no table is ever held in memory.
//!
//! Time model: history lies before `start_date`; each later day `k` brings new shipments, new
//! customers, deliveries of shipments in transit, invoice payments and customer changes, all with
//! `modified_at` on that day. An extraction window `(lo, hi)` returns every row version whose
//! `modified_at` falls in it, so a full load followed by daily incremental loads sees exactly the
//! same versions as one big load.
//!
//! Deliberate dirt for silver to clean: exact duplicate rows, late updates of existing keys (an
//! earlier version followed by a newer `modified_at`), NULLs, negative weights, and inconsistent
//! casing and whitespace in codes, statuses, regions and currencies.

mod rows;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;

use crate::config::Source;
use crate::error::{Error, Result};
pub use rows::{BatchBuilder, V};

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;
const CARRIERS: u64 = 25;
const WAREHOUSES: u64 = 60;
/// Longest time between a shipment's creation and its last event, in days.
const MAX_LIFETIME_DAYS: i64 = 60;

/// An extraction window on `modified_at`, in microseconds since the epoch: `lo < t < hi`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Exclusive lower bound (`None`: from the beginning).
    pub lo: Option<i64>,
    /// Exclusive upper bound.
    pub hi: i64,
}

impl Window {
    fn contains(&self, t: i64) -> bool {
        t < self.hi && self.lo.is_none_or(|lo| t > lo)
    }
}

/// The generator, configured from `[source]`.
#[derive(Debug, Clone)]
pub struct Sample {
    seed: u64,
    start_us: i64,
    customers: u64,
    shipments: u64,
    new_shipments_per_day: u64,
    new_customers_per_day: u64,
    changed_customers_per_day: u64,
    batch_size: usize,
}

/// A contiguous slice of a table's id space, read by one partition.
#[derive(Debug, Clone, Copy)]
pub struct IdRange {
    /// First id (inclusive).
    pub start: u64,
    /// Last id (exclusive).
    pub end: u64,
}

impl Sample {
    /// Builds the generator from a validated source config.
    pub fn new(source: &Source) -> Self {
        let sf = source.scale_factor;
        let n = |base: f64, min: u64| ((base * sf).round() as u64).max(min);
        Sample {
            seed: source.seed,
            start_us: days_since_epoch(source.start_date) as i64 * DAY,
            customers: n(50_000.0, 100),
            shipments: n(1_000_000.0, 1_000),
            new_shipments_per_day: n(4_000.0, 10),
            new_customers_per_day: n(20.0, 1),
            changed_customers_per_day: n(30.0, 1),
            batch_size: source.batch_size,
        }
    }

    /// Arrow schema of a sample table, typed as the SQL Server columns would map.
    pub fn schema(table: &str) -> Result<SchemaRef> {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, None);
        let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
        let fields = match table {
            "customers" => vec![
                f("customer_id", DataType::Int64, false),
                f("customer_name", DataType::Utf8, false),
                f("email", DataType::Utf8, true),
                f("country", DataType::Utf8, false),
                f("region", DataType::Utf8, true),
                f("segment", DataType::Utf8, false),
                f("created_at", ts(), false),
                f("modified_at", ts(), false),
            ],
            "carriers" => vec![
                f("carrier_id", DataType::Int32, false),
                f("carrier_code", DataType::Utf8, false),
                f("carrier_name", DataType::Utf8, false),
                f("mode", DataType::Utf8, false),
                f("modified_at", ts(), false),
            ],
            "warehouses" => vec![
                f("warehouse_id", DataType::Int32, false),
                f("warehouse_code", DataType::Utf8, false),
                f("city", DataType::Utf8, false),
                f("country", DataType::Utf8, false),
                f("region", DataType::Utf8, false),
                f("capacity_m3", DataType::Int32, true),
                f("modified_at", ts(), false),
            ],
            "shipments" => vec![
                f("shipment_id", DataType::Int64, false),
                f("customer_id", DataType::Int64, false),
                f("carrier_id", DataType::Int32, false),
                f("origin_warehouse_id", DataType::Int32, false),
                f("destination_country", DataType::Utf8, false),
                f("status", DataType::Utf8, false),
                f("weight_kg", DataType::Decimal128(10, 3), true),
                f("declared_value", DataType::Decimal128(19, 4), true),
                f("ship_date", DataType::Date32, false),
                f("promised_date", DataType::Date32, false),
                f("delivered_at", ts(), true),
                f("created_at", ts(), false),
                f("modified_at", ts(), false),
            ],
            "shipment_events" => vec![
                f("event_id", DataType::Int64, false),
                f("shipment_id", DataType::Int64, false),
                f("event_type", DataType::Utf8, false),
                f("event_at", ts(), false),
                f("location", DataType::Utf8, true),
                f("modified_at", ts(), false),
            ],
            "invoices" => vec![
                f("invoice_id", DataType::Int64, false),
                f("shipment_id", DataType::Int64, false),
                f("customer_id", DataType::Int64, false),
                f("amount", DataType::Decimal128(19, 4), false),
                f("currency", DataType::Utf8, false),
                f("issued_date", DataType::Date32, false),
                f("paid_at", ts(), true),
                f("modified_at", ts(), false),
            ],
            other => {
                return Err(Error::Source {
                    message: format!(
                        "the sample source has no table `{other}`; valid choices: {}",
                        crate::config::SAMPLE_TABLES.join(", ")
                    ),
                    retryable: false,
                });
            }
        };
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The id space of `table` for a window ending at `hi`, split into `n` contiguous ranges.
    pub fn partitions(&self, table: &str, window: Window, n: usize) -> Vec<IdRange> {
        let days = ((window.hi - self.start_us) / DAY).max(0) as u64;
        let end = 1 + match table {
            "customers" => self.customers + days * self.new_customers_per_day,
            "carriers" => CARRIERS,
            "warehouses" => WAREHOUSES,
            _ => self.shipments + days * self.new_shipments_per_day,
        };
        let n = n.max(1) as u64;
        let span = (end - 1).div_ceil(n).max(1);
        (0..n)
            .map(|i| IdRange {
                start: (1 + i * span).min(end),
                end: (1 + (i + 1) * span).min(end),
            })
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// Streams the row versions of `table` in `range` whose `modified_at` lies in `window`.
    pub fn read(&self, table: &str, window: Window, range: IdRange) -> Result<SampleReader> {
        let schema = Self::schema(table)?;
        let kind = match table {
            "customers" => Kind::Customers,
            "carriers" => Kind::Carriers,
            "warehouses" => Kind::Warehouses,
            "shipments" => Kind::Shipments,
            "shipment_events" => Kind::Events,
            _ => Kind::Invoices,
        };
        Ok(SampleReader {
            gen: self.clone(),
            kind,
            window,
            next_id: range.start,
            end: range.end,
            builder: BatchBuilder::new(schema, self.batch_size),
            pending: Vec::new(),
        })
    }

    fn h(&self, table: u64, id: u64, field: u64) -> u64 {
        splitmix64(
            self.seed
                ^ table.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ id.wrapping_mul(0xBF58_476D_1CE4_E5B9)
                ^ field.wrapping_mul(0x94D0_49BB_1331_11EB),
        )
    }

    fn pct(&self, table: u64, id: u64, field: u64) -> f64 {
        (self.h(table, id, field) >> 11) as f64 / (1u64 << 53) as f64
    }

    // ---- shipments -------------------------------------------------------------------------

    fn shipment(&self, id: u64) -> Shipment {
        let t = 4;
        let created_day = if id <= self.shipments {
            -1 - (self.h(t, id, 1) % 180) as i64
        } else {
            ((id - self.shipments - 1) / self.new_shipments_per_day) as i64
        };
        let created_at = self.start_us + created_day * DAY + (self.h(t, id, 2) % DAY as u64) as i64;
        let ship_day = created_day + (self.h(t, id, 3) % 3) as i64;
        let transit = 1 + (self.h(t, id, 4) % 6) as i64;
        let late = self.pct(t, id, 5) < 0.15;
        let actual = transit
            + if late {
                1 + (self.h(t, id, 6) % 4) as i64
            } else {
                0
            };
        let cancelled = self.pct(t, id, 7) < 0.01;
        let start_day = self.start_us.div_euclid(DAY);
        let delivered_at = (!cancelled).then(|| {
            self.start_us
                + (ship_day + actual) * DAY
                + 8 * HOUR
                + (self.h(t, id, 8) % (10 * HOUR as u64)) as i64
        });
        let weight = {
            let r = self.pct(t, id, 9);
            if r < 0.005 {
                None
            } else {
                let grams = 500 + (self.h(t, id, 10) % 1_999_500) as i128;
                Some(if r < 0.008 { -grams } else { grams })
            }
        };
        Shipment {
            id,
            customer_id: 1 + self.h(t, id, 11) % self.customers,
            carrier_id: 1 + (self.h(t, id, 12) % CARRIERS) as i32,
            warehouse_id: 1 + (self.h(t, id, 13) % WAREHOUSES) as i32,
            destination: COUNTRIES[(self.h(t, id, 14) % COUNTRIES.len() as u64) as usize],
            weight,
            declared_value: Some((1_000 + (self.h(t, id, 15) % 4_999_000) as i128) * 100),
            ship_date: (start_day + ship_day) as i32,
            promised_date: (start_day + ship_day + transit + 1) as i32,
            ship_at: self.start_us + ship_day * DAY + 6 * HOUR,
            delivered_at,
            cancelled,
            created_at,
        }
    }

    /// Versions of shipment `id`: (modified_at, status, delivered_at, weight override).
    fn shipment_versions(&self, s: &Shipment, out: &mut Vec<ShipmentVersion>) {
        let t = 4;
        let start = self.start_us;
        let shipped_at = s.ship_at.max(s.created_at + HOUR);
        if s.cancelled {
            out.push(ShipmentVersion::new(s.created_at, "NEW", None, s.weight));
            out.push(ShipmentVersion::new(
                shipped_at,
                "CANCELLED",
                None,
                s.weight,
            ));
            return;
        }
        let delivered = s.delivered_at.expect("not cancelled");
        if s.created_at >= start {
            // Created during the daily-change period: every step is its own version.
            out.push(ShipmentVersion::new(s.created_at, "NEW", None, s.weight));
            out.push(ShipmentVersion::new(shipped_at, "SHIPPED", None, s.weight));
            out.push(ShipmentVersion::new(
                delivered,
                "DELIVERED",
                Some(delivered),
                s.weight,
            ));
            return;
        }
        // History: extracted once before start, as its state then; 2 % carry a late update.
        if delivered < start {
            if self.pct(t, s.id, 20) < 0.02 {
                let wrong = s.weight.map(|w| w + 1_000);
                out.push(ShipmentVersion::new(shipped_at, "SHIPPED", None, wrong));
            }
            out.push(ShipmentVersion::new(
                delivered,
                "DELIVERED",
                Some(delivered),
                s.weight,
            ));
        } else {
            let state = if shipped_at < start { "SHIPPED" } else { "NEW" };
            let at = if shipped_at < start {
                shipped_at
            } else {
                s.created_at
            };
            out.push(ShipmentVersion::new(at, state, None, s.weight));
            if shipped_at >= start {
                out.push(ShipmentVersion::new(shipped_at, "SHIPPED", None, s.weight));
            }
            out.push(ShipmentVersion::new(
                delivered,
                "DELIVERED",
                Some(delivered),
                s.weight,
            ));
        }
    }

    fn shipment_row(&self, s: &Shipment, v: &ShipmentVersion, out: &mut Vec<Vec<V>>) {
        let t = 4;
        let status = dirty_case(v.status, self.h(t, s.id ^ (v.modified_at as u64), 30));
        let row = vec![
            V::I64(Some(s.id as i64)),
            V::I64(Some(s.customer_id as i64)),
            V::I32(Some(s.carrier_id)),
            V::I32(Some(s.warehouse_id)),
            V::Str(Some(if self.pct(t, s.id, 31) < 0.03 {
                s.destination.to_lowercase()
            } else {
                s.destination.to_string()
            })),
            V::Str(Some(status)),
            V::Dec(v.weight),
            V::Dec(s.declared_value),
            V::Date(Some(s.ship_date)),
            V::Date(Some(s.promised_date)),
            V::Ts(v.delivered_at),
            V::Ts(Some(s.created_at)),
            V::Ts(Some(v.modified_at)),
        ];
        if self.pct(t, s.id ^ (v.modified_at as u64), 32) < 0.01 {
            out.push(row.clone());
        }
        out.push(row);
    }

    // ---- customers -------------------------------------------------------------------------

    fn customer_rows(&self, id: u64, window: Window, out: &mut Vec<Vec<V>>) {
        let t = 1;
        let created_at = if id <= self.customers {
            self.start_us - (200 + (self.h(t, id, 1) % 1000) as i64) * DAY
                + (self.h(t, id, 2) % DAY as u64) as i64
        } else {
            let day = ((id - self.customers - 1) / self.new_customers_per_day) as i64;
            self.start_us + day * DAY + (self.h(t, id, 2) % DAY as u64) as i64
        };
        let mut versions = vec![(created_at, 0u64)];
        if id <= self.customers && self.pct(t, id, 3) < 0.03 {
            versions.push((created_at + (10 + (self.h(t, id, 4) % 90) as i64) * DAY, 1));
        }
        // Daily changes: each day picks `changed_customers_per_day` existing customers.
        let last_day = ((window.hi - self.start_us) / DAY).max(0);
        let per_day = self.changed_customers_per_day;
        for day in 0..last_day {
            for j in 0..per_day {
                if 1 + self.h(t, day as u64, 1_000 + j) % self.customers == id {
                    versions.push((
                        self.start_us + day * DAY + (j as i64 + 1) * 60_000_000,
                        2 + day as u64,
                    ));
                }
            }
        }
        for (modified_at, version) in versions {
            if !window.contains(modified_at) {
                continue;
            }
            let region = REGIONS[(self.h(t, id, 5) % REGIONS.len() as u64) as usize];
            let email = (self.pct(t, id, 6) >= 0.02)
                .then(|| format!("contact{}@customer{id}.example", version));
            out.push(vec![
                V::I64(Some(id as i64)),
                V::Str(Some(format!("Customer {id:06}"))),
                V::Str(email),
                V::S(COUNTRIES[(self.h(t, id, 7) % COUNTRIES.len() as u64) as usize]),
                V::Str((self.pct(t, id, 8) >= 0.01).then(|| dirty_case(region, self.h(t, id, 9)))),
                V::S(SEGMENTS[(self.h(t, id ^ version, 10) % SEGMENTS.len() as u64) as usize]),
                V::Ts(Some(created_at)),
                V::Ts(Some(modified_at)),
            ]);
        }
    }

    fn static_modified(&self) -> i64 {
        self.start_us - 365 * DAY
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Customers,
    Carriers,
    Warehouses,
    Shipments,
    Events,
    Invoices,
}

struct Shipment {
    id: u64,
    customer_id: u64,
    carrier_id: i32,
    warehouse_id: i32,
    destination: &'static str,
    weight: Option<i128>,
    declared_value: Option<i128>,
    ship_date: i32,
    promised_date: i32,
    ship_at: i64,
    delivered_at: Option<i64>,
    cancelled: bool,
    created_at: i64,
}

struct ShipmentVersion {
    modified_at: i64,
    status: &'static str,
    delivered_at: Option<i64>,
    weight: Option<i128>,
}

impl ShipmentVersion {
    fn new(
        modified_at: i64,
        status: &'static str,
        delivered_at: Option<i64>,
        weight: Option<i128>,
    ) -> Self {
        ShipmentVersion {
            modified_at,
            status,
            delivered_at,
            weight,
        }
    }
}

/// Iterator of batches for one table partition.
pub struct SampleReader {
    gen: Sample,
    kind: Kind,
    window: Window,
    next_id: u64,
    end: u64,
    builder: BatchBuilder,
    pending: Vec<Vec<V>>,
}

impl SampleReader {
    fn rows_for(&mut self, id: u64) {
        let g = &self.gen;
        let w = self.window;
        let out = &mut self.pending;
        match self.kind {
            Kind::Customers => g.customer_rows(id, w, out),
            Kind::Carriers => {
                let (code, name, mode) = CARRIER_NAMES[(id - 1) as usize % CARRIER_NAMES.len()];
                let m = g.static_modified();
                if w.contains(m) {
                    let code = format!("{code}{:02}", id);
                    out.push(vec![
                        V::I32(Some(id as i32)),
                        V::Str(Some(if id.is_multiple_of(7) {
                            code.to_lowercase()
                        } else {
                            code
                        })),
                        V::Str(Some(format!("{name} {id}"))),
                        V::S(mode),
                        V::Ts(Some(m)),
                    ]);
                }
            }
            Kind::Warehouses => {
                let (city, country, region) = CITIES[(id - 1) as usize % CITIES.len()];
                let m = g.static_modified();
                if w.contains(m) {
                    out.push(vec![
                        V::I32(Some(id as i32)),
                        V::Str(Some(format!("WH-{id:03}"))),
                        V::S(city),
                        V::S(country),
                        V::S(region),
                        V::I32(
                            (!id.is_multiple_of(11))
                                .then(|| 5_000 + (g.h(3, id, 1) % 95_000) as i32),
                        ),
                        V::Ts(Some(m)),
                    ]);
                }
            }
            Kind::Shipments | Kind::Events | Kind::Invoices => {
                let s = g.shipment(id);
                if s.created_at >= w.hi
                    || w.lo
                        .is_some_and(|lo| s.created_at + MAX_LIFETIME_DAYS * DAY <= lo)
                {
                    return;
                }
                match self.kind {
                    Kind::Shipments => {
                        let mut versions = Vec::with_capacity(3);
                        g.shipment_versions(&s, &mut versions);
                        for v in versions.iter().filter(|v| w.contains(v.modified_at)) {
                            g.shipment_row(&s, v, out);
                        }
                    }
                    Kind::Events => {
                        let mut events = vec![(0i64, "CREATED", s.created_at)];
                        if !s.cancelled {
                            events.push((1, "PICKED_UP", s.ship_at.max(s.created_at + HOUR)));
                            if let Some(d) = s.delivered_at {
                                events.push((2, "DELIVERED", d));
                            }
                        } else {
                            events.push((3, "CANCELLED", s.ship_at.max(s.created_at + HOUR)));
                        }
                        for (k, kind, at) in events {
                            if !w.contains(at) {
                                continue;
                            }
                            let loc = (g.pct(5, id, 40 + k as u64) >= 0.01).then(|| {
                                if k == 2 {
                                    s.destination.to_string()
                                } else {
                                    CITIES[(s.warehouse_id - 1) as usize % CITIES.len()]
                                        .0
                                        .to_string()
                                }
                            });
                            out.push(vec![
                                V::I64(Some(id as i64 * 4 + k)),
                                V::I64(Some(id as i64)),
                                V::S(kind),
                                V::Ts(Some(at)),
                                V::Str(loc),
                                V::Ts(Some(at)),
                            ]);
                        }
                    }
                    _ => {
                        if s.cancelled {
                            return;
                        }
                        let issued = s.ship_at;
                        let paid = (g.pct(6, id, 1) < 0.7)
                            .then(|| issued + (10 + (g.h(6, id, 2) % 30) as i64) * DAY);
                        let amount = s.declared_value.unwrap_or(0) / 50
                            + s.weight.map_or(0, |w| w.abs() * 5);
                        let currency =
                            CURRENCIES[(g.h(6, id, 3) % CURRENCIES.len() as u64) as usize];
                        let mut versions = vec![(issued, None)];
                        if let Some(p) = paid {
                            versions.push((p, Some(p)));
                        }
                        for (modified_at, paid_at) in versions {
                            if w.contains(modified_at) {
                                out.push(vec![
                                    V::I64(Some(5_000_000_000 + id as i64)),
                                    V::I64(Some(id as i64)),
                                    V::I64(Some(s.customer_id as i64)),
                                    V::Dec(Some(amount)),
                                    V::S(currency),
                                    V::Date(Some(s.ship_date)),
                                    V::Ts(paid_at),
                                    V::Ts(Some(modified_at)),
                                ]);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Iterator for SampleReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch_size = self.gen.batch_size;
        loop {
            for row in self.pending.drain(..) {
                self.builder.push(&row);
            }
            if self.builder.len() >= batch_size
                || (self.next_id >= self.end && !self.builder.is_empty())
            {
                return Some(self.builder.finish());
            }
            if self.next_id >= self.end {
                return None;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.rows_for(id);
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Days since 1970-01-01.
pub fn days_since_epoch(d: NaiveDate) -> i32 {
    d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
        .num_days() as i32
}

/// Mostly clean; about 6 % lower-case, title-case or padded.
fn dirty_case(s: &str, h: u64) -> String {
    match h % 100 {
        0..=2 => s.to_lowercase(),
        3..=4 => format!("{s} "),
        5 => {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_string() + &c.as_str().to_lowercase())
                .unwrap_or_default()
        }
        _ => s.to_string(),
    }
}

const COUNTRIES: &[&str] = &[
    "DE", "FR", "NL", "BE", "ES", "IT", "PL", "SE", "GB", "US", "CA", "BR",
];
const REGIONS: &[&str] = &["EMEA", "AMER", "APAC", "LATAM"];
const SEGMENTS: &[&str] = &["ENTERPRISE", "SMB", "CONSUMER", "PUBLIC"];
const CURRENCIES: &[&str] = &["EUR", "EUR", "USD", "eur", "GBP"];
const CARRIER_NAMES: &[(&str, &str, &str)] = &[
    ("DHL", "DHL Freight", "ROAD"),
    ("UPS", "UPS Supply Chain", "AIR"),
    ("MSK", "Maersk Line", "SEA"),
    ("DBS", "DB Schenker", "RAIL"),
    ("FDX", "FedEx Logistics", "AIR"),
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Hamburg", "DE", "EMEA"),
    ("Rotterdam", "NL", "EMEA"),
    ("Lyon", "FR", "EMEA"),
    ("Chicago", "US", "AMER"),
    ("Toronto", "CA", "AMER"),
    ("Sao Paulo", "BR", "LATAM"),
    ("Singapore", "SG", "APAC"),
    ("Warsaw", "PL", "EMEA"),
];

/// The sample generator as a [`super::source::Source`]: its schema is built in, and every
/// partition runs on a blocking thread feeding a bounded channel.
pub struct SampleSource {
    gen: Sample,
}

impl SampleSource {
    /// The generator configured by `[source]`.
    pub fn new(source: &Source) -> Self {
        SampleSource {
            gen: Sample::new(source),
        }
    }

    /// The table's columns with the SQL Server types the sample database declares them as
    /// (see [`declared_type`]).
    fn columns(table: &str) -> Result<Vec<crate::schema::ColumnShape>> {
        let mut columns = crate::schema::ColumnShape::of_schema(Sample::schema(table)?.as_ref());
        for c in &mut columns {
            c.source_type = Some(declared_type(&c.name, &c.data_type));
        }
        Ok(columns)
    }
}

/// The SQL Server type the sample database declares a column as, from its Arrow type (the
/// mapping of docs/mssql.md, reversed): `bigint`, `int`, `decimal(p,s)`, `date`, `datetime2(6)`,
/// and `nvarchar(n)` for text, with room for the longest value the generator writes (an e-mail
/// address is at most 320 characters, RFC 3696 errata 1690; names 200; codes and labels 100).
pub fn declared_type(column: &str, data_type: &DataType) -> String {
    match data_type {
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "int".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(..) => "datetime2(6)".into(),
        DataType::Utf8 if column == "email" => "nvarchar(320)".into(),
        DataType::Utf8 if column.ends_with("_name") => "nvarchar(200)".into(),
        DataType::Utf8 => "nvarchar(100)".into(),
        other => crate::schema::type_name(other),
    }
}

#[async_trait::async_trait]
impl super::source::Source for SampleSource {
    fn kind(&self) -> &'static str {
        "sample"
    }

    fn builtin_columns(
        &self,
        table: &crate::config::SourceTable,
    ) -> Option<Vec<crate::schema::ColumnShape>> {
        Self::columns(&table.name).ok()
    }

    async fn discover(
        &self,
        table: &crate::config::SourceTable,
    ) -> Result<Vec<crate::schema::ColumnShape>> {
        Self::columns(&table.name)
    }

    async fn read(&self, req: super::source::ReadRequest<'_>) -> Result<super::source::TableRead> {
        let table = req.table;
        let lo = req
            .watermark_from
            .map(|w| w.value - table.lookback_seconds * 1_000_000);
        let window = Window { lo, hi: req.hi_us };
        let schema = Sample::schema(&table.name)?;
        let watermark_col = match &table.watermark {
            Some(c) => Some(schema.index_of(c).map_err(|_| Error::Source {
                message: format!(
                    "table `{}`: watermark column `{c}` (source.tables.watermark) does not exist; columns: {}",
                    table.name,
                    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                ),
                retryable: false,
            })?),
            None => None,
        };
        let mut partitions = Vec::new();
        for range in self.gen.partitions(&table.name, window, table.partitions) {
            let reader = self.gen.read(&table.name, window, range)?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::task::spawn_blocking(move || {
                for batch in reader {
                    if tx.blocking_send(batch).is_err() {
                        break;
                    }
                }
            });
            partitions.push(rx);
        }
        Ok(super::source::TableRead {
            columns: Self::columns(&table.name)?,
            schema,
            watermark_col,
            partitions,
            source_files: Vec::new(),
            rejected: None,
            change_version: None,
            snapshot: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, SourceKind};

    fn sample() -> Sample {
        Sample::new(&Source {
            kind: SourceKind::Sample,
            database: "LogisticsDB".into(),
            scale_factor: 0.002,
            seed: 7,
            start_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            batch_size: 1000,
            tables: vec![],
            mssql: None,
            files: None,
        })
    }

    fn count(s: &Sample, table: &str, w: Window, parts: usize) -> usize {
        s.partitions(table, w, parts)
            .into_iter()
            .flat_map(|r| s.read(table, w, r).unwrap())
            .map(|b| b.unwrap().num_rows())
            .sum()
    }

    #[test]
    fn full_load_equals_snapshot_plus_daily_windows() {
        let s = sample();
        let d = |n: i64| s.start_us + n * DAY;
        for table in ["customers", "shipments", "shipment_events", "invoices"] {
            let all = count(&s, table, Window { lo: None, hi: d(3) }, 1);
            let parts = count(&s, table, Window { lo: None, hi: d(1) }, 3)
                + count(
                    &s,
                    table,
                    Window {
                        lo: Some(d(1) - 1),
                        hi: d(2),
                    },
                    2,
                )
                + count(
                    &s,
                    table,
                    Window {
                        lo: Some(d(2) - 1),
                        hi: d(3),
                    },
                    1,
                );
            assert_eq!(all, parts, "{table}");
            assert!(all > 0, "{table}");
        }
    }

    #[test]
    fn same_seed_same_data() {
        let s = sample();
        let w = Window {
            lo: None,
            hi: s.start_us,
        };
        let a: Vec<_> = s
            .read("shipments", w, IdRange { start: 1, end: 200 })
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let b: Vec<_> = s
            .read("shipments", w, IdRange { start: 1, end: 200 })
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(a, b);
    }
}
