//! `lanyard-bench sign`: how fast the CA turns CSRs into checked X.509-SVIDs,
//! next to the raw ECDSA P-256 signing rate it is built on.
//!
//! Signing one SVID costs one CSR signature verification, one ECDSA
//! signature, certificate encoding and the profile check; the ratio shows
//! how much of the raw signing rate survives all of that.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use lanyard_ca::{CaConfig, CertificateAuthority, SvidKey, SvidRequest};
use lanyard_identity::{SpiffeId, TrustDomain};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

use crate::measure::run_for;
use crate::report::Table;

/// How many distinct CSRs (one per simulated workload key) are cycled through.
const CSR_COUNT: usize = 256;

/// Options of `lanyard-bench sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Seconds to spend on each of the two measurements.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
}

/// How many X.509-SVIDs `CertificateAuthority::sign_x509_svid` signs from
/// pre-generated CSRs on one thread in `budget` (after a short warm-up).
pub fn single_thread_rate(budget: Duration) -> anyhow::Result<crate::measure::Sample> {
    let key_dir = TempDir::new()?;
    let trust_domain = TrustDomain::new("bench.example.org")?;
    let cfg = CaConfig {
        jwt_algorithm: Default::default(),
        trust_domain: trust_domain.clone(),
        ca_ttl: Duration::from_secs(24 * 3600),
        key_dir: key_dir.path.clone(),
        upstream: None,
    };
    let now = SystemTime::now();
    let ca = CertificateAuthority::load_or_create(cfg, None, now)
        .context("creating the benchmark CA")?;
    // Pre-generate the CSRs so that only signing is measured.
    let csrs = (0..CSR_COUNT)
        .map(|_| SvidKey::generate()?.csr_der())
        .collect::<Result<Vec<_>, _>>()
        .context("generating CSRs")?;
    let ids = (0..CSR_COUNT)
        .map(|i| SpiffeId::from_parts(&trust_domain, &format!("/bench/workload-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let sign_one = |i: u64| -> Result<(), lanyard_ca::CaError> {
        let n = usize::try_from(i).unwrap_or(0) % CSR_COUNT;
        let svid = ca.sign_x509_svid(
            &SvidRequest {
                csr_der: &csrs[n],
                spiffe_id: &ids[n],
                dns_names: &[],
                ttl: Duration::from_secs(3600),
            },
            now,
        )?;
        black_box(svid);
        Ok(())
    };
    // Warm up caches and the allocator before timing.
    run_for(Duration::from_millis(200), 8, sign_one)?;
    run_for(budget, 8, sign_one).context("signing X.509-SVIDs")
}

/// Runs both measurements and returns the table.
pub fn run(args: &SignArgs) -> anyhow::Result<Table> {
    let budget = Duration::from_secs(args.seconds);
    let svids = single_thread_rate(budget)?;

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generating the baseline P-256 key failed"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| anyhow::anyhow!("loading the baseline P-256 key failed: {e}"))?;
    let message = [0x5au8; 32];
    let sign_raw = |_| -> Result<(), ring::error::Unspecified> {
        black_box(key.sign(&rng, black_box(&message))?);
        Ok(())
    };
    run_for(Duration::from_millis(200), 32, sign_raw)
        .map_err(|_| anyhow::anyhow!("raw ECDSA signing failed"))?;
    let raw =
        run_for(budget, 32, sign_raw).map_err(|_| anyhow::anyhow!("raw ECDSA signing failed"))?;

    let mut table = Table::new(format!(
        "lanyard-bench sign: {} s per measurement, {CSR_COUNT} pre-generated P-256 CSRs",
        args.seconds
    ));
    table.rate(
        "(a) X.509-SVIDs signed via CertificateAuthority::sign_x509_svid",
        svids,
    );
    table.rate(
        "(b) raw ECDSA P-256 signatures (ring, 32-byte message)",
        raw,
    );
    let ratio = if raw.rate() > 0.0 {
        svids.rate() / raw.rate()
    } else {
        0.0
    };
    table.derived("ratio a/b", format!("{ratio:.3}"));
    table.note(
        "(a) includes CSR signature verification, certificate encoding and signing, \
         and the X.509-SVID profile check.",
    );
    Ok(table)
}

/// A private scratch directory for the CA's key, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "lanyard-bench-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
