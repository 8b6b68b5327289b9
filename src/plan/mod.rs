//! The Plan: a validated pipeline plus its SQL models, their dependencies and their run order.
//!
//! Models are `sql/<pipeline>/<layer>/<name>.sql` files. Their header is parsed by [`header`];
//! their dependencies are found by parsing the SQL (no `ref()`), and [`graph`] orders them
//! topologically across silver and gold. Templated values (`{{ logical_date }}`, `{{ run_id }}`,
//! `{{ var.x }}`) become bound query parameters, never spliced text.

pub mod fingerprint;
pub mod graph;
pub mod header;
pub mod ident;
pub mod relations;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::common::ParamValues;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use crate::config::{self, Pipeline};
use crate::error::{Error, Result};
pub use header::{HardDeletes, Header, Materialization};

/// Medallion layers, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// SQL Server (or sample) → landing Parquet.
    Extract,
    /// Landing → bronze tables with metadata columns.
    Bronze,
    /// Cleaned, conformed models.
    Silver,
    /// Business aggregates and marts.
    Gold,
}

impl Layer {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Extract => "extract",
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
        }
    }

    /// Layers that hold tables a SQL model can read.
    pub const TABLE_LAYERS: [Layer; 3] = [Layer::Bronze, Layer::Silver, Layer::Gold];

    /// Parses a table-layer name.
    pub fn table_layer(s: &str) -> Option<Layer> {
        Self::TABLE_LAYERS.into_iter().find(|l| l.as_str() == s)
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to a lake table, `<layer>.<table>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TableId {
    /// Layer.
    pub layer: Layer,
    /// Table name.
    pub name: String,
}

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.layer, self.name)
    }
}

/// A SQL model of the silver or gold layer.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// The table it writes.
    pub id: TableId,
    /// The SQL file.
    pub file: PathBuf,
    /// Parsed header.
    pub header: Header,
    /// SQL with templated values replaced by `$name` placeholders.
    pub sql: String,
    /// Tables it reads, found by parsing the SQL.
    pub depends_on: Vec<TableId>,
    /// Data-quality rules from the `expect:` header.
    pub rules: Vec<crate::quality::Rule>,
    /// The bronze tables the SQL reads through a catch-up window
    /// (`{{ unprocessed('bronze.<table>') }}`), in the order of their `$unprocessed_<i>`
    /// parameters; the runner binds each to the bronze run ids of that table this model has
    /// not consumed yet (see [`crate::layers::window`]).
    pub unprocessed: Vec<TableId>,
}

/// Values bound to a model's placeholders for one run.
#[derive(Debug, Clone)]
pub struct RunParams {
    /// The run's logical date.
    pub logical_date: chrono::NaiveDate,
    /// The run id.
    pub run_id: String,
}

impl RunParams {
    /// The logical date as days since 1970-01-01.
    pub fn logical_day(&self) -> i32 {
        self.logical_date
            .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
            .num_days() as i32
    }

    /// The end of the logical date (exclusive), in microseconds since the epoch (UTC): the upper
    /// bound of timestamp-watermark extraction windows.
    pub fn window_end_us(&self) -> i64 {
        (self.logical_day() as i64 + 1) * 86_400_000_000
    }
}

/// A validated pipeline with its models in run order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pipeline configuration.
    pub pipeline: Pipeline,
    /// Silver and gold models, in topological (run) order.
    pub models: Vec<Model>,
}

impl Plan {
    /// Loads the pipeline file and every model, reporting all problems at once.
    pub fn load(path: &Path) -> Result<Plan> {
        let pipeline = config::load(path)?;
        let mut problems = Vec::new();
        let models = load_models(&pipeline, &mut problems);
        let models = graph::order(&pipeline, models, &mut problems);
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        Ok(Plan { pipeline, models })
    }

    /// The table format of lake table `id`: its model's `table_format` (a model's quarantine
    /// table follows the model), else the pipeline's `[format] table`.
    pub fn table_kind(&self, id: &TableId) -> config::TableKind {
        self.models
            .iter()
            .find(|m| {
                m.id.layer == id.layer
                    && (m.id.name == id.name
                        || crate::quarantine::table_name(&m.id.name) == id.name)
            })
            .and_then(|m| m.header.table_format)
            .unwrap_or(self.pipeline.format.table)
    }

    /// Bronze tables, one per source table.
    pub fn bronze_tables(&self) -> Vec<TableId> {
        bronze_tables(&self.pipeline)
    }

    /// Models of one layer, in run order.
    pub fn layer_models(&self, layer: Layer) -> impl Iterator<Item = &Model> {
        self.models.iter().filter(move |m| m.id.layer == layer)
    }

    /// Parameter values for a run: `logical_date`, `run_id`, every `var_<name>`, and
    /// `unprocessed_<i>` (the bronze run ids of the model's `i`-th catch-up window, a list of
    /// strings; see [`render`]).
    pub fn param_values(&self, params: &RunParams, unprocessed: &[Vec<String>]) -> ParamValues {
        let mut map: BTreeMap<String, ScalarValue> = BTreeMap::new();
        for (i, runs) in unprocessed.iter().enumerate() {
            map.insert(
                format!("{UNPROCESSED}_{i}"),
                ScalarValue::List(ScalarValue::new_list_nullable(
                    &runs
                        .iter()
                        .map(|r| ScalarValue::Utf8(Some(r.clone())))
                        .collect::<Vec<_>>(),
                    &arrow::datatypes::DataType::Utf8,
                )),
            );
        }
        map.insert(
            "logical_date".into(),
            ScalarValue::Date32(Some(params.logical_day())),
        );
        map.insert(
            "run_id".into(),
            ScalarValue::Utf8(Some(params.run_id.clone())),
        );
        for (k, v) in &self.pipeline.vars {
            map.insert(format!("var_{k}"), v.clone());
        }
        ParamValues::Map(map.into_iter().map(|(k, v)| (k, v.into())).collect())
    }
}

fn load_models(pipeline: &Pipeline, problems: &mut Vec<String>) -> Vec<Model> {
    let mut models = Vec::new();
    for layer in [Layer::Silver, Layer::Gold] {
        // Table names fold like unquoted SQL identifiers (`Carriers.sql` writes `carriers`), so
        // two files whose names differ only in case would write the same table.
        let mut files_of: BTreeMap<String, PathBuf> = BTreeMap::new();
        let dir = pipeline.models_dir.join(layer.as_str());
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "sql"))
                .collect(),
            Err(_) => continue,
        };
        files.sort();
        for file in files {
            let shown = display_path(pipeline, &file);
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push(format!(
                    "{shown}: model file names must use only letters, digits and `_`"
                ));
                continue;
            }
            let name = stem.to_ascii_lowercase();
            if let Some(first) = files_of.get(&name) {
                problems.push(format!(
                    "{} and {shown} both define table `{layer}.{name}` (table names are not case-sensitive); rename or remove one",
                    display_path(pipeline, first)
                ));
                continue;
            }
            files_of.insert(name.clone(), file.clone());
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{shown}: cannot read: {e}"));
                    continue;
                }
            };
            let header = header::parse(&shown, &text, problems);
            let rules = crate::quality::parse(&shown, &header.expect, problems);
            let (sql, unprocessed) = match render(&shown, &text, pipeline) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            models.push(Model {
                id: TableId { layer, name },
                file,
                header,
                sql,
                depends_on: Vec::new(),
                rules,
                unprocessed,
            });
        }
    }
    models
}

/// Bronze tables of a pipeline, one per source table.
pub fn bronze_tables(pipeline: &Pipeline) -> Vec<TableId> {
    pipeline
        .source
        .tables
        .iter()
        .map(|t| TableId {
            layer: Layer::Bronze,
            name: t.name.clone(),
        })
        .collect()
}

/// The path of `file` as shown in messages: relative to the project root when possible.
pub fn display_path(pipeline: &Pipeline, file: &Path) -> String {
    file.strip_prefix(&pipeline.project_dir)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The template function of catch-up windows, and the prefix of their parameters.
pub const UNPROCESSED: &str = "unprocessed";

/// Renders the templated values of a model into `$name` placeholders (bound at run time), and
/// returns the bronze tables it reads through a catch-up window.
///
/// `{{ unprocessed('bronze.customers') }}` renders the derived table
/// `(SELECT * FROM bronze."customers" WHERE array_has($unprocessed_0, "_run_id"))`: the rows that
/// bronze runs not yet consumed by this model landed in that table (the `i`-th such table gets
/// `$unprocessed_<i>`). It is written where a table goes, with an alias: `FROM {{
/// unprocessed('bronze.customers') }} AS c`.
fn render(shown: &str, text: &str, pipeline: &Pipeline) -> Result<(String, Vec<TableId>), String> {
    let windows: std::sync::Arc<std::sync::Mutex<Vec<TableId>>> = Default::default();
    let mut env = minijinja::Environment::new();
    let seen = windows.clone();
    let tables = bronze_tables(pipeline);
    env.add_function(
        UNPROCESSED,
        move |table: String| -> Result<String, minijinja::Error> {
            let name = table
                .split_once('.')
                .filter(|(layer, _)| layer.eq_ignore_ascii_case("bronze"))
                .map(|(_, name)| name.trim_matches('"'));
            let found = name.and_then(|n| {
                tables
                    .iter()
                    .find(|t| t.name == n)
                    .or_else(|| tables.iter().find(|t| t.name.eq_ignore_ascii_case(n)))
            });
            let Some(found) = found else {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!(
                        "unprocessed() reads a bronze table of this pipeline, `bronze.<table>`, not `{table}`{}",
                        suggest(
                            &table,
                            tables.iter().map(|t| t.to_string()).collect::<Vec<_>>().iter().map(String::as_str)
                        )
                    ),
                ));
            };
            let mut seen = seen.lock().expect("template state");
            let index = match seen.iter().position(|t| t == found) {
                Some(i) => i,
                None => {
                    seen.push(found.clone());
                    seen.len() - 1
                }
            };
            Ok(format!(
                "(SELECT * FROM bronze.{} WHERE array_has(${UNPROCESSED}_{index}, \"_run_id\"))",
                ident::to_sql(&found.name)
            ))
        },
    );
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let vars: BTreeMap<&str, String> = pipeline
        .vars
        .keys()
        .map(|k| (k.as_str(), format!("$var_{k}")))
        .collect();
    let ctx = minijinja::context! {
        logical_date => "$logical_date",
        run_id => "$run_id",
        var => vars,
    };
    let rendered = env.render_str(text, ctx).map_err(|e| {
        let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
        format!(
            "{shown}{line}: template error: {}; available: logical_date, run_id, unprocessed('bronze.<table>'), var.<name> ({})",
            e.detail().unwrap_or(&e.kind().to_string()),
            if pipeline.vars.is_empty() {
                "no vars defined in the pipeline".to_string()
            } else {
                pipeline
                    .vars
                    .keys()
                    .map(|k| format!("var.{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    })?;
    let windows = windows.lock().expect("template state").clone();
    Ok((rendered, windows))
}

/// `"; did you mean `x`?"` for the closest candidate, or an empty string.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// The candidate nearest to `name` by edit distance, if one is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3) && *d > 0)
        .min()
        .map(|(_, c)| c)
}
