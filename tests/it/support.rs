//! Test helpers: temp projects, running the binary, reading Delta tables back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datafusion::prelude::SessionContext;

/// A pipeline with the sample `shipments` table only, for tests that bring their own SQL.
pub const ONE_TABLE: &str = r#"
name = "t"
[source]
type = "sample"
scale_factor = 0.002
[[source.tables]]
name = "shipments"
key = ["shipment_id"]
watermark = "modified_at"
[storage]
root = "lake"
"#;

/// A pipeline reading the CSV files `incoming/<table>/*.csv` into `bronze.<table>` (key `key`),
/// with a local lake and profiles off: for tests on a schema of their own.
pub fn files_pipeline(table: &str, key: &str) -> String {
    format!(
        "name = \"t\"\n[source]\ntype = \"files\"\nroot = \"incoming\"\n\
         [[source.tables]]\nname = \"{table}\"\npath = \"{table}/*.csv\"\nkey = [\"{key}\"]\n\
         [storage]\nroot = \"lake\"\n[profile]\nmode = \"off\"\n"
    )
}

/// A temporary project: `pipelines/<name>.toml`, `sql/<name>/...` and a lake directory.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Project {
    /// A copy of the demo pipeline and SQL at a small scale factor.
    pub fn demo(scale: f64) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let toml = std::fs::read_to_string(repo.join("pipelines/demo.toml")).unwrap();
        let toml = toml.replace("scale_factor = 1.0", &format!("scale_factor = {scale}"));
        assert!(toml.contains(&format!("scale_factor = {scale}")));
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("pipelines/demo.toml"), toml).unwrap();
        copy_dir(&repo.join("sql/demo"), &dir.path().join("sql/demo"));
        Project {
            dir,
            name: "demo".into(),
        }
    }

    /// A copy of the repository's `pipelines/<name>.toml` and its models (`sql/<name>/`), with the
    /// storage root pointed at the project's `lake` directory.
    pub fn from_repo(name: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let toml = std::fs::read_to_string(repo.join(format!("pipelines/{name}.toml"))).unwrap();
        let start = toml.find("\nroot = \"").expect("a storage root") + 1;
        let end = start + toml[start..].find('\n').unwrap();
        let toml = format!("{}root = \"lake\"{}", &toml[..start], &toml[end..]);
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join(format!("pipelines/{name}.toml")), toml).unwrap();
        copy_dir(
            &repo.join(format!("sql/{name}")),
            &dir.path().join(format!("sql/{name}")),
        );
        // The committed source schema contracts, which planning reads offline.
        let schemas = repo.join(format!("schemas/{name}"));
        if schemas.is_dir() {
            copy_dir(&schemas, &dir.path().join(format!("schemas/{name}")));
        }
        Project {
            dir,
            name: name.into(),
        }
    }

    /// A project with a custom pipeline body (source/storage) and SQL files `(layer/name.sql, text)`.
    pub fn custom(toml: &str, files: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("pipelines/t.toml"), toml).unwrap();
        for (rel, text) in files {
            let path = dir.path().join("sql/t").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Project {
            dir,
            name: "t".into(),
        }
    }

    pub fn pipeline(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("pipelines/{}.toml", self.name))
    }

    pub fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    /// Runs `smelter <args...>` with the pipeline file substituted for `{p}`.
    pub fn smelter(&self, args: &[&str]) -> Output {
        self.smelter_env(args, &[])
    }

    /// Like [`Project::smelter`], with extra environment variables.
    pub fn smelter_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run smelter")
    }

    /// The `smelter` command for `args` and `env`, not yet started.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let p = self.pipeline();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{p}", p.to_str().unwrap()))
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smelter"));
        cmd.args(&args)
            .env_remove("SMELTER_STORAGE_ROOT")
            .env("RUST_LOG", "smelter=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Points the pipeline's `[storage]` at `root` with `[storage.options]`.
    pub fn set_storage(&self, root: &str, options: &[(&str, &str)]) {
        let toml = std::fs::read_to_string(self.pipeline()).unwrap();
        let start = toml.find("[storage]").expect("a [storage] section");
        let end = toml[start..]
            .match_indices("\n[")
            .map(|(i, _)| start + i + 1)
            .find(|&i| !toml[i..].starts_with("[storage"))
            .unwrap_or(toml.len());
        let mut section = format!("[storage]\nroot = \"{root}\"\n[storage.options]\n");
        for (k, v) in options {
            section.push_str(&format!("{k} = \"{v}\"\n"));
        }
        let toml = format!("{}{section}\n{}", &toml[..start], &toml[end..]);
        std::fs::write(self.pipeline(), toml).unwrap();
    }

    /// Runs `smelter <args...>` and asserts it exits `want`; returns stdout and stderr.
    pub fn expect(&self, args: &[&str], want: i32) -> String {
        expect_code(&self.smelter(args), args, want)
    }

    /// `smelter run {p} --layer <layer> --logical-date 2026-11-30 --run-id <run_id>`, asserting
    /// exit `want`; returns stdout and stderr.
    pub fn run_layer(&self, layer: &str, run_id: &str, want: i32) -> String {
        self.expect(
            &[
                "run",
                "{p}",
                "--layer",
                layer,
                "--logical-date",
                "2026-11-30",
                "--run-id",
                run_id,
            ],
            want,
        )
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.smelter(args);
        assert!(
            out.status.success(),
            "smelter {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs a SQL query over lake tables `<layer>/<table>` given as `(alias, rel path)`.
    pub async fn query(
        &self,
        tables: &[(&str, &str)],
        sql: &str,
    ) -> Vec<arrow::record_batch::RecordBatch> {
        let ctx = SessionContext::new();
        for (alias, rel) in tables {
            let url = url::Url::from_directory_path(self.lake().join(rel)).unwrap();
            let table = deltalake::open_table(url)
                .await
                .unwrap_or_else(|e| panic!("open {rel}: {e}"));
            ctx.register_table(*alias, table.table_provider().await.unwrap())
                .unwrap();
        }
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    /// A single i64 from a query.
    pub async fn scalar(&self, tables: &[(&str, &str)], sql: &str) -> i64 {
        first_i64(&self.query(tables, sql).await)
    }
}

/// The first value of the first column of the first non-empty batch, cast to Int64.
pub fn first_i64(batches: &[arrow::record_batch::RecordBatch]) -> i64 {
    let b = batches.iter().find(|b| b.num_rows() > 0).expect("one row");
    let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64).unwrap();
    col.as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// Exit code of an output.
/// A command's stdout and stderr, labelled, for assertion messages.
pub fn out_text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `out` (of `smelter <args>`) exited with `want`; returns [`out_text`].
pub fn expect_code(out: &Output, args: &[&str], want: i32) -> String {
    let text = out_text(out);
    assert_eq!(code(out), want, "smelter {args:?}:\n{text}");
    text
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Stderr of an output.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
