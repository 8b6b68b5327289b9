//! Generic row → Arrow batch building for the sample generator.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// One cell value.
#[derive(Debug, Clone)]
pub enum V {
    /// 64-bit integer.
    I64(Option<i64>),
    /// 32-bit integer.
    I32(Option<i32>),
    /// Owned string.
    Str(Option<String>),
    /// Static string.
    S(&'static str),
    /// Decimal128 raw value (scale from the schema).
    Dec(Option<i128>),
    /// Timestamp, microseconds since the epoch.
    Ts(Option<i64>),
    /// Date, days since the epoch.
    Date(Option<i32>),
}

/// Accumulates rows of one schema into Arrow builders.
pub struct BatchBuilder {
    schema: SchemaRef,
    builders: Vec<Box<dyn ArrayBuilder>>,
    rows: usize,
}

impl BatchBuilder {
    /// New builder for `schema` with room for `capacity` rows.
    pub fn new(schema: SchemaRef, capacity: usize) -> Self {
        let builders = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Decimal128(p, s) => Box::new(
                    Decimal128Builder::with_capacity(capacity)
                        .with_precision_and_scale(*p, *s)
                        .expect("valid decimal"),
                ) as Box<dyn ArrayBuilder>,
                DataType::Timestamp(TimeUnit::Microsecond, tz) => Box::new(
                    TimestampMicrosecondBuilder::with_capacity(capacity)
                        .with_timezone_opt(tz.clone()),
                ),
                other => arrow::array::make_builder(other, capacity),
            })
            .collect();
        BatchBuilder {
            schema,
            builders,
            rows: 0,
        }
    }

    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row; `row` must match the schema.
    pub fn push(&mut self, row: &[V]) {
        for (b, v) in self.builders.iter_mut().zip(row) {
            let any = b.as_any_mut();
            match v {
                V::I64(x) => any
                    .downcast_mut::<Int64Builder>()
                    .expect("i64")
                    .append_option(*x),
                V::I32(x) => any
                    .downcast_mut::<Int32Builder>()
                    .expect("i32")
                    .append_option(*x),
                V::Str(x) => any
                    .downcast_mut::<StringBuilder>()
                    .expect("utf8")
                    .append_option(x.as_deref()),
                V::S(x) => any
                    .downcast_mut::<StringBuilder>()
                    .expect("utf8")
                    .append_value(x),
                V::Dec(x) => any
                    .downcast_mut::<Decimal128Builder>()
                    .expect("decimal")
                    .append_option(*x),
                V::Ts(x) => any
                    .downcast_mut::<TimestampMicrosecondBuilder>()
                    .expect("timestamp")
                    .append_option(*x),
                V::Date(x) => any
                    .downcast_mut::<Date32Builder>()
                    .expect("date")
                    .append_option(*x),
            }
        }
        self.rows += 1;
    }

    /// Finishes the buffered rows into a batch and resets.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(Error::from)
    }
}
