//! CRL build time and size: `CertificateAuthority::sign_crl` in-process at
//! each size, against a single-entry CRL (the fixed cost of one CRL: the
//! signature and the envelope) in the same run.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use lanyard_ca::{CaConfig, CertificateAuthority, RevocationReason, RevokedSerial};
use lanyard_identity::TrustDomain;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::{
    processes::{TRUST_DOMAIN, scratch_dir},
    report::{Table, bytes, duration, ratio},
};

/// nextUpdate - thisUpdate, as the server signs it.
const CRL_VALIDITY: Duration = Duration::from_secs(3600);
/// Each size is signed for at least this long (and at least `repeats` times).
const MIN_TIME_PER_SIZE: Duration = Duration::from_secs(1);
/// Cap on the runs of a cheap size.
const MAX_RUNS: usize = 2_000;

/// A serial shaped like the ones the CA issues: 16 random bytes, positive,
/// second bit set; lower-case hex.
fn random_serial(rng: &SystemRandom) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// One size's result.
struct Measured {
    runs: usize,
    median: Duration,
    der_len: usize,
}

fn measure(
    ca: &CertificateAuthority,
    revoked: &[RevokedSerial],
    repeats: usize,
) -> anyhow::Result<Measured> {
    let now = SystemTime::now();
    // Warm-up, and the size (the same for every run of this list).
    let der_len = ca
        .sign_crl(revoked, 1, now, CRL_VALIDITY)
        .context("signing a CRL")?
        .len();
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < MAX_RUNS
        && (times.len() < repeats.max(1) || started.elapsed() < MIN_TIME_PER_SIZE)
    {
        let number = u64::try_from(times.len())
            .unwrap_or(u64::MAX)
            .saturating_add(2);
        let start = Instant::now();
        let der = ca
            .sign_crl(revoked, number, now, CRL_VALIDITY)
            .context("signing a CRL")?;
        times.push(start.elapsed());
        std::hint::black_box(der);
    }
    times.sort_unstable();
    let median = crate::stats::percentile(&times, 50.0).unwrap_or_default();
    Ok(Measured {
        runs: times.len(),
        median,
        der_len,
    })
}

/// Signs CRLs of 1 and of each of `sizes` revoked serials.
pub fn run(sizes: &[usize], repeats: usize) -> anyhow::Result<Table> {
    let key_dir = scratch_dir("crl-ca")?;
    let now = SystemTime::now();
    let ca = CertificateAuthority::load_or_create(
        CaConfig {
            jwt_algorithm: Default::default(),
            trust_domain: TrustDomain::new(TRUST_DOMAIN)?,
            ca_ttl: Duration::from_secs(24 * 3600),
            key_dir: key_dir.path().to_path_buf(),
            upstream: None,
        },
        None,
        now,
    )
    .context("creating the benchmark CA")?;

    let most = sizes.iter().copied().max().unwrap_or(1).max(1);
    eprintln!("revocation: generating {most} random serials");
    let rng = SystemRandom::new();
    let revoked_at = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let serials = (0..most)
        .map(|_| {
            Ok(RevokedSerial {
                serial: random_serial(&rng)?,
                revoked_at,
                reason: RevocationReason::KeyCompromise,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut table = Table::with_columns(
        "lanyard-bench revocation: CRL build (CertificateAuthority::sign_crl, P-256)",
        &[
            "serials",
            "runs",
            "median",
            "vs 1 entry",
            "per entry",
            "DER size",
            "bytes/entry",
        ],
    );
    eprintln!("revocation: signing 1-entry CRLs (baseline)");
    let base = measure(&ca, &serials[..1], repeats)?;
    table.row(
        "(b) baseline: 1 revoked serial (fixed cost)",
        vec![
            "1".into(),
            base.runs.to_string(),
            duration(base.median),
            String::new(),
            String::new(),
            bytes(base.der_len as u64),
            String::new(),
        ],
    );
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for n in sorted.into_iter().filter(|n| *n > 1) {
        eprintln!("revocation: signing {n}-entry CRLs");
        let m = measure(&ca, &serials[..n], repeats)?;
        let extra = (n - 1) as f64;
        let per_entry = (m.median.as_secs_f64() - base.median.as_secs_f64()).max(0.0) / extra;
        let bytes_per_entry = (m.der_len as f64 - base.der_len as f64) / extra;
        table.row(
            &format!("(a) {n} revoked serials"),
            vec![
                n.to_string(),
                m.runs.to_string(),
                duration(m.median),
                ratio(m.median.as_secs_f64(), base.median.as_secs_f64()),
                format!("{:.2}µs", per_entry * 1e6),
                bytes(m.der_len as u64),
                format!("{bytes_per_entry:.1}"),
            ],
        );
    }
    table.note(
        "per entry = (median(a) - median(b)) / (serials - 1); bytes/entry likewise on the DER \
         size. Serials are 16 random bytes as the CA issues them, each with a revocation date \
         and reason code.",
    );
    Ok(table)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_sixteen_byte_hex() {
        let rng = SystemRandom::new();
        for _ in 0..32 {
            let s = random_serial(&rng).unwrap();
            assert_eq!(s.len(), 32);
            let first = u8::from_str_radix(&s[..2], 16).unwrap();
            assert_eq!(first & 0xc0, 0x40, "{s}");
        }
    }
}
