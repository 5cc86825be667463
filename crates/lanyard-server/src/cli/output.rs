//! Rendering operator output: aligned tables or one JSON document.

use std::time::{Duration, UNIX_EPOCH};

use lanyard_proto::admin::v1 as pb;

/// RFC 3339 (UTC, seconds) for unix seconds; empty for 0 ("never").
pub(crate) fn time(secs: i64) -> String {
    if secs <= 0 {
        return String::new();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs as u64)).to_string()
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

pub(crate) fn entry_text(e: &pb::Entry) -> String {
    let ttl = |secs: i64| {
        if secs > 0 {
            humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
        } else {
            "(server default)".into()
        }
    };
    let rows = [
        ("ID", e.id.clone()),
        ("SPIFFE ID", e.spiffe_id.clone()),
        ("Parent ID", e.parent_id.clone()),
        ("Selectors", e.selectors.join(", ")),
        ("X.509-SVID TTL", ttl(e.x509_svid_ttl_seconds)),
        ("JWT-SVID TTL", ttl(e.jwt_svid_ttl_seconds)),
        ("DNS names", e.dns_names.join(", ")),
        ("Expires at", time(e.expires_at)),
        ("Hint", e.hint.clone()),
        ("Revision", e.revision.to_string()),
        ("Created at", time(e.created_at)),
    ];
    rows.iter()
        .map(|(k, v)| format!("{k:<15} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn entry_row(e: &pb::Entry) -> Vec<String> {
    vec![
        e.id.clone(),
        e.spiffe_id.clone(),
        e.parent_id.clone(),
        e.selectors.join(","),
    ]
}

pub(crate) fn agent_row(a: &pb::Agent) -> Vec<String> {
    let status = if a.banned {
        "banned"
    } else if a.evicted {
        "evicted"
    } else {
        "attested"
    };
    vec![
        a.spiffe_id.clone(),
        a.attestation_type.clone(),
        status.into(),
        a.serial.clone(),
        time(a.expires_at),
    ]
}

pub(crate) fn svid_row(s: &pb::Svid) -> Vec<String> {
    vec![
        s.serial.clone(),
        s.spiffe_id.clone(),
        s.entry_id.clone(),
        s.agent_id.clone(),
        time(s.not_after),
        if s.revoked { "yes" } else { "" }.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "LONG"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    LONG\nxxx  y");
    }

    #[test]
    fn times_are_rfc3339_and_zero_is_never() {
        assert_eq!(time(0), "");
        assert_eq!(time(86_400), "1970-01-02T00:00:00Z");
    }
}
