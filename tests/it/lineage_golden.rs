//! Golden-file tests of column lineage: the `library` pipeline under `tests/lineage/` (its own
//! schema, not the demo's: members, books and loans read from CSV files) has 30+ models, one per
//! SQL shape. For each model, `smelter plan --lineage --format json` is rendered as text (per
//! output column its direct inputs, its own indirect inputs, and the source columns both resolve
//! to; then the model's indirect inputs) and compared with `tests/lineage/golden/<model>.txt`, whose contents
//! were checked by hand. Regenerate after a deliberate change and review the diff:
//!
//! ```sh
//! SMELTER_BLESS=1 cargo test --release --test it lineage_golden
//! ```

use std::path::Path;

use serde_json::Value;

use crate::support::{copy_dir, Project};

/// A copy of `tests/lineage` (pipeline, models, contracts, data) in a temp directory.
pub fn library() -> Project {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lineage");
    for sub in ["pipelines", "sql", "schemas", "data"] {
        copy_dir(&src.join(sub), &dir.path().join(sub));
    }
    Project {
        dir,
        name: "library".into(),
    }
}

/// One model's lineage as reviewable text; `root` (the project directory) is shown as `<root>`.
fn render(model: &str, m: &Value, root: &str) -> String {
    let edge = |e: &Value, key: &str| {
        format!(
            "{}.{} {}",
            e["table"].as_str().unwrap().replace(root, "<root>"),
            e["column"].as_str().unwrap(),
            e[key].as_str().unwrap()
        )
    };
    let mut out = format!("# {model}\n");
    for c in m["columns"].as_array().unwrap() {
        out.push_str(&format!("{}\n", c["name"].as_str().unwrap()));
        for (label, list, key) in [
            ("direct  ", "inputs", "kind"),
            ("indirect", "indirect", "subtype"),
            ("source  ", "sources", "kind"),
            ("isource ", "indirect_sources", "subtype"),
        ] {
            for e in c[list].as_array().unwrap() {
                out.push_str(&format!("  {label} {}\n", edge(e, key)));
            }
        }
    }
    let model_wide = m["indirect"].as_array().unwrap();
    if !model_wide.is_empty() {
        out.push_str("(every column)\n");
        for e in model_wide {
            out.push_str(&format!("  indirect {}\n", edge(e, "subtype")));
        }
    }
    out
}

#[test]
fn lineage_golden() {
    let p = library();
    let out = p.ok(&["plan", "{p}", "--lineage", "--format", "json"]);
    let json: Value = serde_json::from_str(&out).unwrap();
    let models = json["models"].as_object().unwrap();
    assert!(models.len() >= 30, "{} models", models.len());
    let root = std::fs::canonicalize(p.dir.path()).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lineage/golden");
    let bless = std::env::var("SMELTER_BLESS").is_ok_and(|v| v == "1");
    if bless {
        let _ = std::fs::remove_dir_all(&golden);
        std::fs::create_dir_all(&golden).unwrap();
    }
    let mut differ = Vec::new();
    for (model, m) in models {
        let text = render(model, m, &root.display().to_string())
            .replace(&p.dir.path().display().to_string(), "<root>");
        let file = golden.join(format!("{model}.txt"));
        if bless {
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        if want != text {
            differ.push(format!(
                "{}:\n--- expected\n{want}--- got\n{text}",
                file.display()
            ));
        }
    }
    if !bless {
        let files = std::fs::read_dir(&golden).unwrap().count();
        assert_eq!(files, models.len(), "stale files in {}", golden.display());
    }
    assert!(
        differ.is_empty(),
        "lineage differs from the golden files (SMELTER_BLESS=1 regenerates them):\n{}",
        differ.join("\n")
    );
}
