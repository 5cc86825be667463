//! Which trust domain the agent joins.
//!
//! Two sources can name it: the `trust_domain` setting (`--trust-domain`)
//! and the bootstrap bundle, when one of its CA certificates carries a
//! `spiffe://<trust domain>` URI SAN (Lanyard's self-signed CA does). A root
//! made by an existing PKI (upstream mode) carries none, so then the setting
//! is required. When both name one they must agree, and the server must
//! then prove it belongs to it: its SVID is `spiffe://<td>/lanyard/server`
//! and its Attest answer names the same trust domain.

use std::path::Path;

use lanyard_identity::TrustDomain;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::AgentError;

/// Where the configured trust domain comes from, as error messages name it.
pub(crate) const SETTING: &str = "trust_domain (--trust-domain)";

/// The trust domain the agent expects, and what named it (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expected {
    /// The trust domain.
    pub td: TrustDomain,
    /// `trust_domain (--trust-domain)` or `the trust bundle <path>`.
    pub named_by: String,
}

impl Expected {
    /// The configured trust domain, if any, named as the setting.
    pub(crate) fn configured(td: Option<&TrustDomain>) -> Option<Self> {
        td.map(|td| Self {
            td: td.clone(),
            named_by: SETTING.into(),
        })
    }
}

/// The trust domain named by the setting (`configured`) and by the bundle at
/// `bundle_path` (`in_bundle`, from [`bundle_trust_domain`]): either one, or
/// both when they agree.
///
/// # Errors
///
/// [`AgentError::TrustDomainMismatch`] when both are given and differ;
/// [`AgentError::TrustDomainUnknown`] when neither is.
pub(crate) fn expected(
    configured: Option<&TrustDomain>,
    in_bundle: Option<TrustDomain>,
    bundle_path: &Path,
) -> Result<Expected, AgentError> {
    let bundle_named = || format!("the trust bundle {}", bundle_path.display());
    match (configured, in_bundle) {
        (Some(cfg), Some(bundle)) if *cfg != bundle => Err(AgentError::TrustDomainMismatch {
            expected: cfg.clone(),
            expected_from: SETTING.into(),
            found: bundle,
            found_in: bundle_named(),
        }),
        (Some(cfg), _) => Ok(Expected {
            td: cfg.clone(),
            named_by: SETTING.into(),
        }),
        (None, Some(bundle)) => Ok(Expected {
            td: bundle,
            named_by: bundle_named(),
        }),
        (None, None) => Err(AgentError::TrustDomainUnknown {
            bundle: bundle_path.to_path_buf(),
        }),
    }
}

/// Checks that `found` (named by `found_in`) is the expected trust domain.
///
/// # Errors
///
/// [`AgentError::TrustDomainMismatch`] naming both.
pub(crate) fn check(
    expected: Option<&Expected>,
    found: &TrustDomain,
    found_in: impl FnOnce() -> String,
) -> Result<(), AgentError> {
    match expected {
        Some(e) if e.td != *found => Err(AgentError::TrustDomainMismatch {
            expected: e.td.clone(),
            expected_from: e.named_by.clone(),
            found: found.clone(),
            found_in: found_in(),
        }),
        _ => Ok(()),
    }
}

/// The trust domain a bootstrap bundle names: the `spiffe://<td>` URI SAN of
/// its CA certificate(s), all of which must agree. `Ok(None)` when no
/// certificate carries one (an upstream root made by an existing PKI).
///
/// # Errors
///
/// A message naming the problem: a certificate that does not parse, a
/// malformed SPIFFE URI SAN, or certificates naming different trust domains.
pub fn bundle_trust_domain(bundle: &[CertificateDer<'_>]) -> Result<Option<TrustDomain>, String> {
    let mut found: Option<TrustDomain> = None;
    for cert in bundle {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| format!("bad certificate: {e}"))?;
        let Ok(Some(san)) = parsed.subject_alternative_name() else {
            continue;
        };
        for name in &san.value.general_names {
            let GeneralName::URI(uri) = name else {
                continue;
            };
            let Some(rest) = uri.strip_prefix("spiffe://") else {
                continue;
            };
            let td = TrustDomain::new(rest.trim_end_matches('/'))
                .map_err(|e| format!("URI SAN {uri:?}: {e}"))?;
            match &found {
                Some(prev) if prev != &td => {
                    return Err(format!("bundle mixes trust domains {prev} and {td}"));
                }
                _ => found = Some(td),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ca_with_uri(uri: Option<&str>) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        if let Some(uri) = uri {
            params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn td(s: &str) -> TrustDomain {
        TrustDomain::new(s).unwrap()
    }

    #[test]
    fn trust_domain_from_bundle_uri_san() {
        let found = bundle_trust_domain(&[ca_with_uri(Some("spiffe://example.org"))]).unwrap();
        assert_eq!(found, Some(td("example.org")));
        let e = bundle_trust_domain(&[
            ca_with_uri(Some("spiffe://a.org")),
            ca_with_uri(Some("spiffe://b.org")),
        ])
        .unwrap_err();
        assert!(e.contains("mixes"), "{e}");
        let e = bundle_trust_domain(&[ca_with_uri(Some("spiffe://A.org"))]).unwrap_err();
        assert!(e.contains("URI SAN"), "{e}");
    }

    #[test]
    fn a_corporate_root_names_no_trust_domain() {
        assert_eq!(bundle_trust_domain(&[ca_with_uri(None)]).unwrap(), None);
        assert_eq!(
            bundle_trust_domain(&[ca_with_uri(Some("https://corp.example/ca"))]).unwrap(),
            None
        );
    }

    #[test]
    fn garbage_certificate_in_bundle() {
        let e = bundle_trust_domain(&[CertificateDer::from(vec![1u8, 2, 3])]).unwrap_err();
        assert!(e.contains("bad certificate"), "{e}");
    }

    #[test]
    fn the_setting_is_required_only_when_the_bundle_names_none() {
        let path = Path::new("/etc/lanyard/bundle.pem");
        let e = expected(None, None, path).unwrap_err().to_string();
        assert!(e.contains("/etc/lanyard/bundle.pem"), "{e}");
        assert!(e.contains("--trust-domain"), "{e}");
        let got = expected(Some(&td("corp.example")), None, path).unwrap();
        assert_eq!(got.td, td("corp.example"));
        assert_eq!(got.named_by, SETTING);
        let got = expected(None, Some(td("example.org")), path).unwrap();
        assert_eq!(got.td, td("example.org"));
        assert!(got.named_by.contains("bundle.pem"), "{}", got.named_by);
        let got = expected(Some(&td("example.org")), Some(td("example.org")), path).unwrap();
        assert_eq!(got.td, td("example.org"));
    }

    #[test]
    fn a_mismatch_names_both_trust_domains_and_their_sources() {
        let path = Path::new("/b.pem");
        let e = expected(Some(&td("one.example")), Some(td("two.example")), path)
            .unwrap_err()
            .to_string();
        for needle in ["one.example", "two.example", "--trust-domain", "/b.pem"] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let want = expected(Some(&td("one.example")), None, path).unwrap();
        let e = check(Some(&want), &td("two.example"), || "the server".into())
            .unwrap_err()
            .to_string();
        for needle in ["one.example", "two.example", "--trust-domain", "the server"] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        check(Some(&want), &td("one.example"), || unreachable!()).unwrap();
        check(None, &td("anything.example"), || unreachable!()).unwrap();
    }
}
