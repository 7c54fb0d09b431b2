//! Report formats: a table for people at a terminal, JSON (stable schema,
//! documented in docs/verify.md) for pipelines, Markdown for a customer's
//! security team, JUnit XML for CI dashboards.

use serde_json::{Value, json};

use super::{CheckResult, Report, Status, Summary, TenantReport};

/// `apiVersion` of the JSON report; bumped only on incompatible changes.
pub const JSON_API_VERSION: &str = "bulkhead.dev/verify/v1";

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text with failing evidence (default).
    Table,
    /// One JSON document (schema `bulkhead.dev/verify/v1`).
    Json,
    /// Markdown for a security review.
    Markdown,
    /// JUnit XML: one testsuite per tenant, one testcase per check.
    Junit,
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Json => serde_json::to_string_pretty(&to_json(report)).unwrap_or_default() + "\n",
        Format::Markdown => markdown(report),
        Format::Junit => junit(report),
    }
}

/// The per-tenant summary lines, `<tenant>: N passed, M failed[, K not applicable][, E errors]`.
pub fn summary_lines(report: &Report) -> String {
    let mut out = String::new();
    for t in &report.tenants {
        out.push_str(&format!("{}: {}\n", t.tenant, t.summary().line()));
    }
    out
}

fn summary_json(s: Summary) -> Value {
    json!({"passed": s.passed, "failed": s.failed, "notApplicable": s.not_applicable, "errors": s.errors})
}

fn check_json(r: &CheckResult) -> Value {
    json!({
        "id": r.check.id,
        "title": r.check.title,
        "category": r.check.category,
        "benchmark": r.check.benchmark,
        "control": r.check.control,
        "status": r.status,
        "reason": r.reason,
        "remediation": r.check.remediation,
        "evidence": r.evidence,
    })
}

/// The JSON document.
pub fn to_json(report: &Report) -> Value {
    let total = report.summary();
    let mut summary = summary_json(total);
    summary["tenants"] = json!(report.tenants.len());
    json!({
        "apiVersion": JSON_API_VERSION,
        "kind": "VerificationReport",
        "generatedAt": report.generated_at,
        "generator": {"name": "bulkhead", "version": env!("CARGO_PKG_VERSION")},
        "passed": total.ok(false),
        "summary": summary,
        "tenants": report.tenants.iter().map(|t| {
            let s = t.summary();
            json!({
                "name": t.tenant,
                "passed": s.ok(false),
                "summary": summary_json(s),
                "checks": t.results.iter().map(check_json).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}

fn table(report: &Report) -> String {
    let name_w = report.tenants.iter().map(|t| t.tenant.len()).max().unwrap_or(6).max(6);
    let id_w = super::checks::CATALOGUE.iter().map(|c| c.id.len()).max().unwrap_or(2);
    let mut out = format!("{:name_w$}  {:id_w$}  {:6}  TITLE\n", "TENANT", "ID", "STATUS");
    for t in &report.tenants {
        for r in &t.results {
            out.push_str(&format!(
                "{:name_w$}  {:id_w$}  {:6}  {}\n",
                t.tenant,
                r.check.id,
                r.status.label(),
                r.check.title
            ));
            if matches!(r.status, Status::Fail | Status::Error) {
                out.push_str(&format!("{:name_w$}  {:id_w$}          ↳ {}\n", "", "", r.reason));
                for e in r.evidence.iter().filter(|e| !e.ok).take(10) {
                    let who = e.subject.as_deref().map(|s| format!("[{s}] ")).unwrap_or_default();
                    out.push_str(&format!(
                        "{:name_w$}  {:id_w$}            {who}{} → {}\n",
                        "", "", e.request, e.response
                    ));
                }
            }
        }
    }
    out.push('\n');
    out.push_str(&summary_lines(report));
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn icon(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅ pass",
        Status::Fail => "❌ fail",
        Status::NotApplicable => "➖ not applicable",
        Status::Error => "⚠️ error",
    }
}

fn markdown_tenant(t: &TenantReport, out: &mut String) {
    let s = t.summary();
    out.push_str(&format!("## Tenant `{}`\n\n**{}**\n\n", t.tenant, s.line()));
    out.push_str("| Result | Check | Title | Category | Benchmark |\n|---|---|---|---|---|\n");
    for r in &t.results {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            icon(r.status),
            r.check.id,
            md_cell(r.check.title),
            r.check.category,
            r.check.benchmark.map(|b| format!("`{b}`")).unwrap_or_else(|| "bulkhead".into())
        ));
    }
    let findings: Vec<&CheckResult> =
        t.results.iter().filter(|r| matches!(r.status, Status::Fail | Status::Error)).collect();
    if !findings.is_empty() {
        out.push_str("\n### Findings\n");
        for r in findings {
            out.push_str(&format!("\n#### {} `{}` {}\n\n", icon(r.status), r.check.id, r.check.title));
            out.push_str(&format!(
                "- **Control:** {}\n- **Finding:** {}\n- **Remediation:** {}\n",
                r.check.control, r.reason, r.check.remediation
            ));
            let bad: Vec<_> = r.evidence.iter().filter(|e| !e.ok).collect();
            if !bad.is_empty() {
                out.push_str("- **Evidence:**\n");
                for e in bad {
                    let who = e.subject.as_deref().map(|s| format!("as {s}: ")).unwrap_or_default();
                    out.push_str(&format!("  - {who}`{}` → {}\n", md_cell(&e.request), md_cell(&e.response)));
                }
            }
        }
    }
    let na: Vec<&CheckResult> = t.results.iter().filter(|r| r.status == Status::NotApplicable).collect();
    if !na.is_empty() {
        out.push_str("\n### Not applicable\n\n");
        for r in na {
            out.push_str(&format!("- `{}` {}: {}\n", r.check.id, r.check.title, r.reason));
        }
    }
    out.push_str("\n### Evidence of passing controls\n\n");
    for r in t.results.iter().filter(|r| r.status == Status::Pass) {
        out.push_str(&format!(
            "- `{}` {}: {} ({} request(s) or comparison(s))\n",
            r.check.id,
            r.check.title,
            r.reason,
            r.evidence.len()
        ));
    }
    out.push('\n');
}

fn markdown(report: &Report) -> String {
    let total = report.summary();
    let mut out = String::from("# Tenant isolation report\n\n");
    out.push_str(&format!(
        "Generated {} by bulkhead {} against the live cluster: every check below was run as the tenant's own subjects (SubjectAccessReview, impersonated server-side dry-run) or compared the live objects with the tenant's plan. Check ids starting with `MTB-` are those of the Kubernetes multi-tenancy benchmarks.\n\n",
        report.generated_at,
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(&format!("**Overall: {} — {}**\n\n", if total.ok(false) { "passed" } else { "FAILED" }, total.line()));
    for t in &report.tenants {
        markdown_tenant(t, &mut out);
    }
    out
}

/// Escapes text for XML, dropping characters XML 1.0 cannot hold.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

fn evidence_text(r: &CheckResult, only_bad: bool) -> String {
    let mut text = format!("{}\n", r.reason);
    for e in r.evidence.iter().filter(|e| !only_bad || !e.ok) {
        let who = e.subject.as_deref().map(|s| format!("[{s}] ")).unwrap_or_default();
        text.push_str(&format!("{}{who}{} -> {}\n", if e.ok { "ok   " } else { "FAIL " }, e.request, e.response));
    }
    text
}

fn junit(report: &Report) -> String {
    let total = report.summary();
    let tests: usize = report.tenants.iter().map(|t| t.results.len()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"bulkhead verify\" tests=\"{tests}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" timestamp=\"{}\">\n",
        total.failed,
        total.errors,
        total.not_applicable,
        xml_escape(&report.generated_at)
    ));
    for t in &report.tenants {
        let s = t.summary();
        out.push_str(&format!(
            "  <testsuite name=\"tenant {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" timestamp=\"{}\">\n",
            xml_escape(&t.tenant),
            t.results.len(),
            s.failed,
            s.errors,
            s.not_applicable,
            xml_escape(&report.generated_at)
        ));
        for r in &t.results {
            out.push_str(&format!(
                "    <testcase classname=\"bulkhead.verify.{}\" name=\"{} {}\">\n",
                xml_escape(&t.tenant),
                r.check.id,
                xml_escape(r.check.title)
            ));
            match r.status {
                Status::Pass => {}
                Status::Fail => out.push_str(&format!(
                    "      <failure type=\"{}\" message=\"{}\">{}</failure>\n",
                    r.check.id,
                    xml_escape(&r.reason),
                    xml_escape(&format!("{}Remediation: {}", evidence_text(r, true), r.check.remediation))
                )),
                Status::Error => out.push_str(&format!(
                    "      <error type=\"{}\" message=\"{}\">{}</error>\n",
                    r.check.id,
                    xml_escape(&r.reason),
                    xml_escape(&evidence_text(r, true))
                )),
                Status::NotApplicable => {
                    out.push_str(&format!("      <skipped message=\"{}\"/>\n", xml_escape(&r.reason)))
                }
            }
            out.push_str(&format!("      <system-out>{}</system-out>\n", xml_escape(&evidence_text(r, false))));
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::checks::{self, CATALOGUE};
    use super::super::{CheckResult, Evidence};
    use super::*;

    fn sample() -> Report {
        let results = CATALOGUE
            .iter()
            .enumerate()
            .map(|(i, c)| match i % 4 {
                0 => CheckResult::new(c.id, Status::Pass, "fine", vec![Evidence::plain("a", "b", true)]),
                1 => CheckResult::new(
                    c.id,
                    Status::Fail,
                    "broken <&> \"x\"",
                    vec![Evidence::of("User a|b", "req\u{1}", "denied", false)],
                ),
                2 => CheckResult::not_applicable(c.id, "no such feature"),
                _ => CheckResult::error(c.id, "boom"),
            })
            .collect();
        Report {
            generated_at: "2026-01-01T00:00:00Z".into(),
            tenants: vec![TenantReport { tenant: "acme".into(), results }],
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = to_json(&sample());
        assert_eq!(v["apiVersion"], JSON_API_VERSION);
        assert_eq!(v["passed"], false);
        let t = &v["tenants"][0];
        assert_eq!(t["name"], "acme");
        assert_eq!(t["checks"].as_array().unwrap().len(), CATALOGUE.len());
        let c = &t["checks"][1];
        for field in ["id", "title", "category", "benchmark", "control", "status", "reason", "remediation", "evidence"]
        {
            assert!(c.get(field).is_some(), "{field}");
        }
        assert_eq!(c["status"], "fail");
        assert_eq!(t["checks"][2]["status"], "not-applicable");
        assert_eq!(c["evidence"][0]["ok"], false);
        assert_eq!(checks::get(c["id"].as_str().unwrap()).id, c["id"]);
    }

    #[test]
    fn summary_line_counts() {
        let line = summary_lines(&sample());
        let n = CATALOGUE.len();
        let per = |k: usize| (0..n).filter(|i| i % 4 == k).count();
        assert_eq!(
            line,
            format!("acme: {} passed, {} failed, {} not applicable, {} errors\n", per(0), per(1), per(2), per(3))
        );
    }

    #[test]
    fn xml_is_escaped() {
        let x = junit(&sample());
        assert!(!x.contains('\u{1}'));
        assert!(x.contains("broken &lt;&amp;&gt; &quot;x&quot;"));
        assert!(render(&sample(), Format::Markdown).contains("as User a|b: "));
    }
}
