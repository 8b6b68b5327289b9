//! The HTML profile report: one self-contained page (inline CSS and SVG, no scripts, no network
//! assets) with a table overview, per-column statistics, histograms, top values and drift flags.

use std::fmt::Write;

use super::{ColumnKind, ColumnProfile, Histogram, TableProfile};

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2733;background:#f6f8fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.sub{color:#5b6b7c;margin-bottom:16px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);margin-bottom:8px}
th,td{padding:5px 9px;border-bottom:1px solid #e4e8ee;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:12px 16px;margin:12px 0}
.cols{display:flex;flex-wrap:wrap;gap:12px}
.col{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:10px 12px;width:330px}
.col h3{font-size:14px;margin:0 0 2px}.type{color:#6b7b8c;font-size:12px}
.kv{display:grid;grid-template-columns:auto 1fr;gap:1px 10px;font-size:12px;margin:6px 0}
.kv span:nth-child(odd){color:#5b6b7c}
.ok{color:#1a7f37}.warn{background:#fff4d6;color:#7a5200;padding:1px 6px;border-radius:4px}
.fail{background:#ffe1e1;color:#a10d0d;padding:1px 6px;border-radius:4px}
.bar{fill:#3b82c4}.top{fill:#7aa7d6}.axis{stroke:#9aa8b6;stroke-width:1}
svg text{font-size:10px;fill:#4a5868}
"#;

/// Renders one page for `profiles` under `title`.
pub fn render<'a>(title: &str, profiles: impl IntoIterator<Item = &'a TableProfile>) -> String {
    let profiles: Vec<&TableProfile> = profiles.into_iter().collect();
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{CSS}</style></head><body><h1>Smelter profile</h1><div class=\"sub\">{t} · generated {now}</div>",
        t = esc(title),
        now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    h.push_str("<table><tr><th>table</th><th>rows</th><th>columns</th><th>size</th><th>files</th><th>version</th><th>profiled</th><th>drift</th></tr>");
    for p in &profiles {
        let _ = write!(
            h,
            "<tr><td><a href=\"#{id}\">{t}</a></td><td class=\"n\">{rows}</td><td class=\"n\">{cols}</td><td class=\"n\">{size}</td><td class=\"n\">{files}</td><td class=\"n\">{ver}</td><td>{sampled}</td><td>{drift}</td></tr>",
            id = anchor(&p.table),
            t = esc(&p.table),
            rows = group(p.row_count),
            cols = p.column_count,
            size = p.size_bytes.map(bytes).unwrap_or_else(|| "–".into()),
            files = p.files.map(group).unwrap_or_else(|| "–".into()),
            ver = p.version.map(|v| v.to_string()).unwrap_or_else(|| "–".into()),
            sampled = match p.sampled_rows {
                Some(s) => format!("sample of {}", group(s)),
                None => "every row".into(),
            },
            drift = drift_badge(p),
        );
    }
    h.push_str("</table>");
    for p in &profiles {
        let _ = write!(h, "<h2 id=\"{}\">{}</h2>", anchor(&p.table), esc(&p.table));
        if !p.drift.is_empty() {
            h.push_str("<div class=\"card\"><b>Drift against the previous profile</b><ul>");
            for d in &p.drift {
                let class = match d.action {
                    crate::config::DriftAction::Fail => "fail",
                    crate::config::DriftAction::Warn => "warn",
                };
                let _ = write!(
                    h,
                    "<li><span class=\"{class}\">{class}</span> {}</li>",
                    esc(&d.to_string())
                );
            }
            h.push_str("</ul></div>");
        }
        h.push_str("<table><tr><th>column</th><th>type</th><th>nulls</th><th>distinct</th><th>min</th><th>max</th><th>mean</th><th>stddev</th><th>p05</th><th>p50</th><th>p95</th></tr>");
        for c in &p.columns {
            let q = |x: f64| {
                c.quantiles
                    .iter()
                    .find(|q| q.quantile == x)
                    .map(|q| num(q.value))
                    .unwrap_or_default()
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"type\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&c.name),
                esc(&c.data_type),
                pct(c.null_proportion),
                distinct(c),
                esc(&short(c.min.as_deref().unwrap_or(""))),
                esc(&short(c.max.as_deref().unwrap_or(""))),
                c.mean.map(num).unwrap_or_default(),
                c.stddev.map(num).unwrap_or_default(),
                q(0.05),
                q(0.5),
                q(0.95),
            );
        }
        h.push_str("</table><div class=\"cols\">");
        for c in &p.columns {
            column_card(&mut h, p, c);
        }
        h.push_str("</div>");
    }
    h.push_str("</body></html>\n");
    h
}

fn column_card(h: &mut String, p: &TableProfile, c: &ColumnProfile) {
    let flags: Vec<_> = p
        .drift
        .iter()
        .filter(|d| d.column.as_deref() == Some(c.name.as_str()))
        .collect();
    let _ = write!(
        h,
        "<div class=\"col\"><h3>{} {}</h3><div class=\"type\">{} · {:?}</div><div class=\"kv\">",
        esc(&c.name),
        if flags.is_empty() {
            String::new()
        } else {
            "<span class=\"warn\">drift</span>".into()
        },
        esc(&c.data_type),
        c.kind
    );
    let mut kv = |k: &str, v: String| {
        let _ = write!(h, "<span>{k}</span><span>{}</span>", esc(&v));
    };
    kv(
        "nulls",
        format!("{} ({})", group(c.null_count), pct(c.null_proportion)),
    );
    kv("distinct", distinct(c));
    if let Some(m) = &c.min {
        kv("min", short(m));
    }
    if let Some(m) = &c.max {
        kv("max", short(m));
    }
    if let (Some(a), Some(b), Some(m)) = (c.min_length, c.max_length, c.mean_length) {
        kv("length", format!("{a} – {b}, mean {}", num(m)));
    }
    if c.kind == ColumnKind::Numeric {
        if let (Some(m), Some(s)) = (c.mean, c.stddev) {
            kv("mean ± sd", format!("{} ± {}", num(m), num(s)));
        }
        if !c.quantiles.is_empty() {
            kv(
                "p05…p95",
                c.quantiles
                    .iter()
                    .map(|q| num(q.value))
                    .collect::<Vec<_>>()
                    .join(" · "),
            );
        }
    }
    for d in flags {
        kv("drift", d.to_string());
    }
    h.push_str("</div>");
    if let Some(hist) = &c.histogram {
        histogram_svg(h, hist, c);
    }
    // Top values only say something when a value repeats.
    if c.top_k.first().is_some_and(|v| v.count > 1) {
        top_svg(h, c);
    }
    h.push_str("</div>");
}

fn histogram_svg(h: &mut String, hist: &Histogram, c: &ColumnProfile) {
    let (w, ht, pad) = (306.0, 90.0, 14.0);
    let peak = hist.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = hist.counts.len().max(1) as f64;
    let bw = w / n;
    let _ = write!(
        h,
        "<svg width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"histogram of {}\">",
        ht + pad,
        ht + pad,
        esc(&c.name)
    );
    for (i, &count) in hist.counts.iter().enumerate() {
        let bh = (count as f64 / peak) * (ht - 4.0);
        let _ = write!(
            h,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
            i as f64 * bw + 0.5,
            ht - bh,
            (bw - 1.0).max(0.5),
            bh,
            esc(&format!("[{}, {})", num(hist.edges[i]), num(hist.edges[i + 1]))),
            count
        );
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"0\" y1=\"{ht}\" x2=\"{w}\" y2=\"{ht}\"/><text x=\"0\" y=\"{}\">{}</text><text x=\"{w}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        ht + 11.0,
        esc(&short(c.min.as_deref().unwrap_or(""))),
        ht + 11.0,
        esc(&short(c.max.as_deref().unwrap_or("")))
    );
}

fn top_svg(h: &mut String, c: &ColumnProfile) {
    let rows = c.top_k.len() as f64;
    let (w, rh) = (306.0, 15.0);
    let peak = c.top_k.iter().map(|v| v.count).max().unwrap_or(1).max(1) as f64;
    let _ = write!(
        h,
        "<svg width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"top values of {}\">",
        rows * rh + 2.0,
        esc(&c.name)
    );
    for (i, v) in c.top_k.iter().enumerate() {
        let y = i as f64 * rh;
        let bw = (v.count as f64 / peak) * 150.0;
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{:.1}\">{}</text><rect class=\"top\" x=\"110\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y + 11.0,
            esc(&short_to(&v.value, 16)),
            y + 2.0,
            bw.max(1.0),
            rh - 4.0,
            114.0 + bw,
            y + 11.0,
            group(v.count)
        );
    }
    h.push_str("</svg>");
}

fn drift_badge(p: &TableProfile) -> String {
    if p.drift.is_empty() {
        "<span class=\"ok\">none</span>".into()
    } else if p.drift_failed() {
        format!("<span class=\"fail\">{} breach(es)</span>", p.drift.len())
    } else {
        format!("<span class=\"warn\">{} warning(s)</span>", p.drift.len())
    }
}

fn distinct(c: &ColumnProfile) -> String {
    match c.distinct_count {
        Some(d) if c.distinct_exact => group(d),
        Some(d) => format!("≈{}", group(d)),
        None => "–".into(),
    }
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('�'),
            c => out.push(c),
        }
    }
    out
}

fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn short(s: &str) -> String {
    short_to(s, 28)
}

fn short_to(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_string()
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn num(x: f64) -> String {
    if x.abs() >= 1e6 || (x != 0.0 && x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
