//! How Smelter's own plan nodes travel between the processes of a Ballista cluster: a logical
//! codec (driver → scheduler) and a physical codec (scheduler → executors) that encode
//! [`crate::table::delta_files`]' nodes and hand every other node to Ballista's own codecs
//! ([`BallistaLogicalExtensionCodec`], [`BallistaPhysicalExtensionCodec`]).
//!
//! Encoding: the bytes [`TAG`] followed by the node's settings as JSON; anything without the
//! tag is Ballista's. Driver, scheduler and executors must all be `smelter` processes of the
//! same release (a stock Ballista process cannot decode these nodes).

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use serde::{Deserialize, Serialize};

use super::dedup::LatestPerKeyExec;
use crate::table::delta_files::{FilesSpec, WriteFiles, WriteFilesExec};

/// The prefix of an encoded Smelter node.
const TAG: &[u8] = b"smelter:";

/// The Smelter nodes a plan may hold, with their settings.
#[derive(Serialize, Deserialize)]
enum Node {
    /// [`WriteFiles`] / [`WriteFilesExec`].
    DeltaFiles(FilesSpec),
    /// [`LatestPerKeyExec`] (physical only: the scheduler's optimizer makes the logical node):
    /// its `keys` key expressions, then its order, as one protobuf
    /// `PhysicalSortExprNodeCollection` (keys with default options).
    LatestPerKey { keys: usize, exprs: Vec<u8> },
}

fn encode(node: &Node, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(TAG);
    serde_json::to_writer(buf, node).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn decode(buf: &[u8]) -> Option<Result<Node>> {
    buf.strip_prefix(TAG).map(|rest| {
        serde_json::from_slice(rest).map_err(|e| {
            DataFusionError::Internal(format!(
                "a Smelter plan node this process cannot read (are all cluster processes the same smelter release?): {e}"
            ))
        })
    })
}

fn one<T: Clone>(inputs: &[T]) -> Result<T> {
    inputs
        .first()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("a Smelter plan node without its input".into()))
}

/// The function methods both codec traits share, with the same signatures: the profile's
/// functions by name ([`own_udf`], [`own_udaf`]), everything else from Ballista's codec.
macro_rules! function_codec {
    () => {
        fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
            match own_udf(name) {
                Some(f) => Ok(f),
                None => self.ballista.try_decode_udf(name, buf),
            }
        }

        fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.ballista.try_encode_udf(node, buf)
        }

        fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
            match own_udaf(name) {
                Some(f) => Ok(f),
                None => self.ballista.try_decode_udaf(name, buf),
            }
        }

        fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.ballista.try_encode_udaf(node, buf)
        }

        fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
            self.ballista.try_decode_udwf(name, buf)
        }

        fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.ballista.try_encode_udwf(node, buf)
        }
    };
}

/// The logical codec of driver and scheduler.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        match decode(buf) {
            Some(node) => match node? {
                Node::DeltaFiles(spec) => Ok(Extension {
                    node: Arc::new(WriteFiles::new(one(inputs)?, spec)?),
                }),
                Node::LatestPerKey { .. } => Err(DataFusionError::Internal(
                    "LatestPerKey is planned by the scheduler, not sent to it".into(),
                )),
            },
            None => self.ballista.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        match node.node.as_any().downcast_ref::<WriteFiles>() {
            Some(write) => encode(&Node::DeltaFiles(write.spec().clone()), buf),
            None => self.ballista.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: arrow::datatypes::SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    function_codec!();
}

/// The profile's aggregate function named `name` ([`crate::profile::sketch::functions`]):
/// executors decode a task's functions with DataFusion's registry first, which lacks them.
fn own_udaf(name: &str) -> Option<Arc<AggregateUDF>> {
    let (quantiles, _) = crate::profile::sketch::functions();
    (quantiles.name() == name).then_some(quantiles)
}

/// The profile's scalar function named `name`, as [`own_udaf`].
fn own_udf(name: &str) -> Option<Arc<ScalarUDF>> {
    let (_, distinct_key) = crate::profile::sketch::functions();
    (distinct_key.name() == name).then_some(distinct_key)
}

/// The physical codec of scheduler and executors.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match decode(buf) {
            Some(node) => match node? {
                Node::DeltaFiles(spec) => Ok(Arc::new(WriteFilesExec::new(one(inputs)?, spec))),
                Node::LatestPerKey { keys, exprs } => {
                    use datafusion_proto::physical_plan::from_proto::parse_physical_sort_exprs;
                    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;
                    use datafusion_proto::protobuf::PhysicalSortExprNodeCollection;
                    use prost::Message;
                    let input = one(inputs)?;
                    let nodes = PhysicalSortExprNodeCollection::decode(exprs.as_slice())
                        .map_err(|e| DataFusionError::Internal(format!("LatestPerKey: {e}")))?;
                    let mut sorts = parse_physical_sort_exprs(
                        &nodes.physical_sort_expr_nodes,
                        ctx,
                        &input.schema(),
                        self,
                        &DefaultPhysicalProtoConverter {},
                    )?;
                    let order = sorts.split_off(keys.min(sorts.len()));
                    let keys = sorts.into_iter().map(|s| s.expr).collect();
                    Ok(Arc::new(LatestPerKeyExec::new(input, keys, order)))
                }
            },
            None => self.ballista.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(write) = node.as_any().downcast_ref::<WriteFilesExec>() {
            return encode(&Node::DeltaFiles(write.spec().clone()), buf);
        }
        if let Some(latest) = node.as_any().downcast_ref::<LatestPerKeyExec>() {
            use datafusion::physical_expr::PhysicalSortExpr;
            use datafusion_proto::physical_plan::to_proto::serialize_physical_sort_exprs;
            use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;
            use datafusion_proto::protobuf::PhysicalSortExprNodeCollection;
            use prost::Message;
            let (keys, order) = latest.parts();
            let sorts = keys
                .iter()
                .map(|k| PhysicalSortExpr::new_default(k.clone()))
                .chain(order.iter().cloned());
            let nodes = PhysicalSortExprNodeCollection {
                physical_sort_expr_nodes: serialize_physical_sort_exprs(
                    sorts,
                    self,
                    &DefaultPhysicalProtoConverter {},
                )?,
            };
            let node = Node::LatestPerKey {
                keys: keys.len(),
                exprs: nodes.encode_to_vec(),
            };
            return encode(&node, buf);
        }
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.ballista.try_decode_expr(buf, inputs)
    }

    fn try_encode_expr(&self, node: &Arc<dyn PhysicalExpr>, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_expr(node, buf)
    }

    function_codec!();
}
