//! Runtime failures (issue 13, items 1, 2, 3 and 10): each row reproduces one kind of fault on a
//! copy of the demo (scale 0.01, one good run of 2026-11-01) and states the exit code and the words
//! the message must hold. No row may exit 1 (a bug), no log line may carry colour codes or a
//! backtrace, and after each failure the good tables hold exactly the rows they held before.
//!
//! Environment faults are real, not simulated:
//! - *not writable*: the tests run as root, for whom `chmod` changes nothing, so the command runs
//!   as `nobody` (via `setpriv`) over a lake owned by root; as any other user the lake is made
//!   read-only with `chmod`.
//! - *disk full*: the lake is copied onto a small tmpfs (`mount -t tmpfs`), filled to the last
//!   byte, and the layer runs on it. Without the right to mount, those rows are skipped and say so.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::support::{code, copy_dir, stderr, Project};

/// How the command of a row runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Env {
    /// As the test user.
    Plain,
    /// With a lake the command may not write.
    ReadOnlyLake,
    /// With a lake on a full file system.
    FullDisk,
}

/// One reproduction.
struct Row {
    /// What it reproduces.
    name: &'static str,
    /// Changes the copy of the demo before the command (SQL files, landed files).
    setup: fn(&Project),
    /// The command; `{p}` is the pipeline file.
    args: &'static [&'static str],
    env: Env,
    /// Expected exit code.
    code: i32,
    /// Words the error must contain; `{lake}` is the lake directory.
    words: &'static [&'static str],
}

const SILVER_BAD: &[&str] = &[
    "run",
    "{p}",
    "--layer",
    "silver",
    "--models",
    "bad",
    "--logical-date",
    "2026-11-01",
    "--run-id",
    "good",
];
const EXTRACT_NEXT: &[&str] = &[
    "run",
    "{p}",
    "--layer",
    "extract",
    "--logical-date",
    "2026-11-02",
    "--run-id",
    "next",
];
const BRONZE_NEXT: &[&str] = &[
    "run",
    "{p}",
    "--layer",
    "bronze",
    "--logical-date",
    "2026-11-02",
    "--run-id",
    "next",
];
const SILVER_NEXT: &[&str] = &[
    "run",
    "{p}",
    "--layer",
    "silver",
    "--logical-date",
    "2026-11-02",
    "--run-id",
    "next",
];

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "divide by a zero count in a silver model",
            setup: |p| {
                model(
                    p,
                    "SELECT SUM(carrier_id) / COUNT(CASE WHEN false THEN 1 END) AS x FROM bronze.shipments",
                )
            },
            args: SILVER_BAD,
            env: Env::Plain,
            code: 2,
            words: &["sql/demo/silver/bad.sql", "silver.bad", "Divide by zero"],
        },
        Row {
            name: "a cast of text that is no number",
            setup: |p| {
                model(
                    p,
                    "SELECT shipment_id, CAST(CONCAT('DHL0', carrier_id) AS INT) AS carrier FROM bronze.shipments",
                )
            },
            args: SILVER_BAD,
            env: Env::Plain,
            code: 2,
            words: &["sql/demo/silver/bad.sql", "Cast error", "DHL0"],
        },
        Row {
            name: "a constant cast that fails while planning",
            setup: |p| {
                model(
                    p,
                    "SELECT shipment_id, CAST('DHL01' AS INT) AS c FROM bronze.shipments",
                )
            },
            args: SILVER_BAD,
            env: Env::Plain,
            code: 2,
            words: &["sql/demo/silver/bad.sql", "'DHL01'"],
        },
        Row {
            name: "a narrowing decimal cast that overflows",
            setup: |p| {
                model(
                    p,
                    "SELECT shipment_id, CAST(declared_value AS DECIMAL(6,2)) AS v FROM bronze.shipments",
                )
            },
            args: SILVER_BAD,
            env: Env::Plain,
            code: 2,
            words: &[
                "sql/demo/silver/bad.sql",
                "silver.bad",
                "too large to store in a Decimal128 of precision 6",
            ],
        },
        Row {
            name: "a SQL syntax error shows the parser's whole message",
            setup: |p| model(p, "SELECT shipment_id,\n  FROM FROM bronze.shipments"),
            args: SILVER_BAD,
            env: Env::Plain,
            code: 2,
            words: &[
                "sql/demo/silver/bad.sql:4:19",
                "Expected: end of statement, found: .",
            ],
        },
        Row {
            name: "a Duration column the table format cannot store (no backtrace)",
            setup: |p| {
                model(
                    p,
                    "SELECT shipment_id, delivered_at - created_at AS d FROM bronze.shipments",
                )
            },
            args: SILVER_BAD,
            env: Env::Plain,
            code: 2,
            words: &["sql/demo/silver/bad.sql", "Duration"],
        },
        Row {
            name: "a landed decimal column arrives as text",
            setup: |p| {
                p.ok(EXTRACT_NEXT);
                rewrite_landing(p, "shipments", |batch| {
                    let n = batch.num_rows();
                    let text: ArrayRef = Arc::new(StringArray::from(vec!["821.596 kg"; n]));
                    replace_column(
                        batch,
                        "weight_kg",
                        Field::new("weight_kg", DataType::Utf8, true),
                        text,
                    )
                });
            },
            args: BRONZE_NEXT,
            env: Env::Plain,
            code: 2,
            words: &[
                "bronze.shipments",
                "`weight_kg`",
                "part-0000.parquet",
                "Utf8",
            ],
        },
        Row {
            name: "invalid UTF-8 in a landed string column",
            setup: |p| {
                p.ok(EXTRACT_NEXT);
                corrupt_utf8(p, "shipments", "status");
            },
            args: BRONZE_NEXT,
            env: Env::Plain,
            code: 3,
            words: &["bronze.shipments", "`status`", "part-0000.parquet"],
        },
        Row {
            name: "a NULL in a NOT NULL key",
            setup: |p| {
                p.ok(EXTRACT_NEXT);
                rewrite_landing(p, "shipments", |batch| {
                    let ids = batch.column_by_name("shipment_id").unwrap();
                    let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
                    let with_null: Int64Array = (0..ids.len())
                        .map(|i| (i != 0).then(|| ids.value(i)))
                        .collect();
                    replace_column(
                        batch,
                        "shipment_id",
                        Field::new("shipment_id", DataType::Int64, true),
                        Arc::new(with_null),
                    )
                });
            },
            args: BRONZE_NEXT,
            env: Env::Plain,
            code: 3,
            words: &[
                "bronze.shipments",
                "`shipment_id`",
                "part-0000.parquet",
                "NOT NULL",
            ],
        },
        Row {
            name: "the lake is not writable (silver)",
            setup: |p| {
                p.ok(EXTRACT_NEXT);
                p.ok(BRONZE_NEXT);
            },
            args: SILVER_NEXT,
            env: Env::ReadOnlyLake,
            code: 2,
            words: &["{lake}", "permission denied", "writable"],
        },
        Row {
            name: "the lake is not writable (extract)",
            setup: |_| {},
            args: EXTRACT_NEXT,
            env: Env::ReadOnlyLake,
            code: 2,
            words: &["{lake}", "permission denied", "writable"],
        },
        Row {
            name: "disk full in extract",
            setup: |_| {},
            args: EXTRACT_NEXT,
            env: Env::FullDisk,
            code: 75,
            words: &["{lake}", "free space", "landing.customers"],
        },
        Row {
            name: "disk full in bronze",
            setup: |p| {
                p.ok(EXTRACT_NEXT);
            },
            args: BRONZE_NEXT,
            env: Env::FullDisk,
            code: 75,
            words: &["{lake}", "free space", "bronze."],
        },
        Row {
            name: "disk full in silver",
            setup: |p| {
                p.ok(EXTRACT_NEXT);
                p.ok(BRONZE_NEXT);
            },
            args: SILVER_NEXT,
            env: Env::FullDisk,
            code: 75,
            words: &["{lake}", "free space", "model `silver."],
        },
    ]
}

#[tokio::test]
async fn runtime_failures_are_classified_and_named() {
    let base = baseline();
    let mut problems = Vec::new();
    let mut codes = Vec::new();
    for row in rows() {
        let p = copy_of(&base);
        // Backtraces are on, so a leak into a message would show.
        std::env::set_var("RUST_BACKTRACE", "1");
        (row.setup)(&p);
        // After the setup, which may legitimately load a later run into bronze.
        let before = fingerprint(&p).await;
        let Some(out) = (match row.env {
            Env::Plain => Some(p.smelter(row.args)),
            Env::ReadOnlyLake => Some(run_without_write_access(&p, row.args)),
            Env::FullDisk => run_on_full_disk(&p, row.args),
        }) else {
            eprintln!("skipped `{}`: cannot mount a tmpfs here", row.name);
            continue;
        };
        let err = stderr(&out);
        codes.push((row.name, code(&out)));
        let lake = std::fs::canonicalize(p.lake()).unwrap();
        let mut fail = |what: String| problems.push(format!("`{}`: {what}\n{err}", row.name));
        if code(&out) != row.code {
            fail(format!("exit {} instead of {}", code(&out), row.code));
        }
        for word in row.words {
            let word = word.replace("{lake}", lake.to_str().unwrap());
            if !err.contains(&word) {
                fail(format!("message lacks `{word}`"));
            }
        }
        if has_colour(&err) {
            fail("stderr is not a terminal but carries ANSI escape codes".into());
        }
        if err.contains("backtrace") || err.contains("RUST_BACKTRACE") {
            fail("a backtrace reached the user".into());
        }
        let error_lines = err.lines().filter(|l| l.contains("ERROR")).count();
        if error_lines != 1 {
            fail(format!("{error_lines} error lines instead of one"));
        }
        if fingerprint(&p).await != before {
            fail("the good tables changed".into());
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    let bugs: Vec<_> = codes.iter().filter(|(_, c)| *c == 1).collect();
    assert!(
        bugs.is_empty(),
        "bad input reported as an internal bug: {bugs:?}"
    );
}

/// The demo at scale 0.01 after one good run of 2026-11-01; each row works on a copy.
fn baseline() -> Project {
    let p = Project::demo(0.01);
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-11-01",
        "--run-id",
        "good",
    ]);
    p
}

/// A fresh copy of a project, lake included (tables hold relative paths only).
fn copy_of(base: &Project) -> Project {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(base.dir.path(), dir.path());
    Project {
        dir,
        name: base.name.clone(),
    }
}

/// Row counts and key sums of the good tables: unchanged by any failure.
async fn fingerprint(p: &Project) -> Vec<i64> {
    let mut out = Vec::new();
    for (alias, rel) in [
        ("b", "bronze/shipments"),
        ("s", "silver/shipments"),
        ("g", "gold/daily_shipments_by_carrier"),
    ] {
        out.push(
            p.scalar(&[(alias, rel)], &format!("SELECT COUNT(*) FROM {alias}"))
                .await,
        );
    }
    out.push(
        p.scalar(
            &[("b", "bronze/shipments")],
            "SELECT SUM(shipment_id) FROM b",
        )
        .await,
    );
    out.push(
        p.scalar(
            &[("s", "silver/shipments")],
            "SELECT SUM(carrier_id) FROM s",
        )
        .await,
    );
    out
}

/// Adds the silver model `bad.sql` with `sql` under a materialization header.
fn model(p: &Project, sql: &str) {
    std::fs::write(
        p.dir.path().join("sql/demo/silver/bad.sql"),
        format!("-- materialized: table\n-- description: a failing model\n{sql}\n"),
    )
    .unwrap();
}

/// The first landed file of `table` for run `next`.
fn landing_file(p: &Project, table: &str) -> std::path::PathBuf {
    p.lake()
        .join(format!("landing/{table}/run=next/part-0000.parquet"))
}

/// Rewrites the first landed file of `table` with `f` applied to each batch.
fn rewrite_landing(p: &Project, table: &str, f: impl Fn(&RecordBatch) -> RecordBatch) {
    let path = landing_file(p, table);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| f(&b.unwrap())).collect();
    write_parquet(&path, &batches, WriterProperties::default());
}

fn write_parquet(path: &Path, batches: &[RecordBatch], props: WriterProperties) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
}

/// `batch` with column `name` replaced by `array` of type `field`.
fn replace_column(batch: &RecordBatch, name: &str, field: Field, array: ArrayRef) -> RecordBatch {
    let i = batch.schema().index_of(name).unwrap();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    fields[i] = field;
    columns[i] = array;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Puts bytes that are not UTF-8 into the first value of string column `column` of the first
/// landed file of `table`: the file is written plain (no dictionary, compression or statistics),
/// so a marker value can be found in the bytes and overwritten in place.
fn corrupt_utf8(p: &Project, table: &str, column: &str) {
    const MARKER: &[u8] = b"\x01MARKER\x01";
    rewrite_landing(p, table, |b| b.clone());
    let path = landing_file(p, table);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let first = &batches[0];
    let values = first.column_by_name(column).unwrap();
    let values = values.as_any().downcast_ref::<StringArray>().unwrap();
    let marked: StringArray = (0..values.len())
        .map(|i| {
            Some(if i == 0 {
                std::str::from_utf8(MARKER).unwrap().to_string()
            } else {
                values.value(i).to_string()
            })
        })
        .collect();
    let field = first.schema().field_with_name(column).unwrap().clone();
    batches[0] = replace_column(first, column, field, Arc::new(marked));
    let props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .build();
    write_parquet(&path, &batches, props);
    let mut bytes = std::fs::read(&path).unwrap();
    let at: Vec<usize> = bytes
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the marker occurs once in the file");
    bytes[at[0]..at[0] + MARKER.len()].copy_from_slice(b"\xff\xfe\xfdBAD\xc3\x28");
    std::fs::write(&path, bytes).unwrap();
}

/// Runs `args` without write access to the lake: as `nobody` when the tests run as root (for
/// whom permission bits do not apply), else with the lake's directories made read-only.
fn run_without_write_access(p: &Project, args: &[&str]) -> Output {
    let probe = p.dir.path().join("owner-probe");
    std::fs::write(&probe, b"").unwrap();
    let root = std::fs::metadata(&probe).unwrap().uid() == 0;
    if !root {
        set_writable(&p.lake(), false);
        let out = p.smelter(args);
        set_writable(&p.lake(), true);
        return out;
    }
    // `nobody` must reach the pipeline, the SQL and the binary, but owns nothing in the lake.
    let mode = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(p.dir.path(), mode).unwrap();
    let cmd = p.command(args, &[]);
    let bin = p.dir.path().join("smelter");
    if std::fs::hard_link(cmd.get_program(), &bin).is_err() {
        std::fs::copy(cmd.get_program(), &bin).unwrap();
    }
    let mut unprivileged = Command::new("setpriv");
    unprivileged
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(cmd.get_args())
        .env_remove("SMELTER_STORAGE_ROOT")
        .env("RUST_LOG", "smelter=info");
    let out = unprivileged.output().expect("run setpriv");
    std::fs::remove_file(&bin).unwrap();
    out
}

fn set_writable(dir: &Path, writable: bool) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            set_writable(&e.path(), writable);
        }
    }
    let mode = if writable { 0o755 } else { 0o555 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `args` with the lake on a tmpfs that has no byte left, then frees the space and moves
/// the lake back; `None` when mounting is not allowed here.
fn run_on_full_disk(p: &Project, args: &[&str]) -> Option<Output> {
    let lake = p.lake();
    let saved = p.dir.path().join("lake-saved");
    std::fs::rename(&lake, &saved).unwrap();
    std::fs::create_dir(&lake).unwrap();
    let size_mb = dir_size(&saved) / (1 << 20) + 8;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
        .arg(&lake)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        std::fs::remove_dir(&lake).unwrap();
        std::fs::rename(&saved, &lake).unwrap();
        return None;
    }
    let _unmount = Unmount(lake.clone());
    copy_dir(&saved, &lake);
    fill(&lake.join("filler"));
    let out = p.smelter(args);
    std::fs::remove_file(lake.join("filler")).unwrap();
    // Back on the ordinary disk, for the fingerprint of the good tables.
    let after = p.dir.path().join("lake-after");
    copy_dir(&lake, &after);
    drop(_unmount);
    std::fs::remove_dir(&lake).unwrap();
    std::fs::rename(&after, &lake).unwrap();
    Some(out)
}

/// Unmounts the tmpfs even when the row panics.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dir_size(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

/// Runs a failing command on a pseudo-terminal (`script`), with `env`, and returns what it
/// printed there.
fn on_terminal(p: &Project, env: &[(&str, &str)]) -> String {
    let cmd = p.command(&["run", "{p}", "--layer", "gold"], env);
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .env("RUST_LOG", "smelter=info");
    script.env_remove("NO_COLOR");
    for (k, v) in env {
        script.env(k, v);
    }
    let out = script.output().expect("run script");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let p = Project::demo(0.002);
    // Gold fails without silver tables: an ERROR line is printed in each case.
    let piped = stderr(&p.smelter(&["run", "{p}", "--layer", "gold"]));
    assert!(piped.contains("ERROR") && !has_colour(&piped), "{piped}");
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped the terminal half: no `script` to open a pseudo-terminal");
        return;
    }
    let tty = on_terminal(&p, &[]);
    assert!(tty.contains("ERROR") && has_colour(&tty), "{tty:?}");
    let no_color = on_terminal(&p, &[("NO_COLOR", "1")]);
    assert!(
        no_color.contains("ERROR") && !has_colour(&no_color),
        "{no_color:?}"
    );
}

/// Whether `text` holds an SGR (colour) escape `ESC [ n;n m`; the progress spinner's cursor
/// controls on a terminal are not colour.
fn has_colour(text: &str) -> bool {
    text.split("\u{1b}[").skip(1).any(|rest| {
        let params: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .collect();
        rest[params.len()..].starts_with('m')
    })
}
