//! The CA journal: a serializable record of the CA generations (certificates,
//! key file names, rotation states) that the server persists in its store and
//! hands back on restart. It never holds key material.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::error::CaError;
use crate::slot::{CaSlot, CaSlotState};
use lanyard_keys::pem_block;

/// The journal format written by this version.
const JOURNAL_VERSION: u32 = 1;

/// Serializable record of the CA slots: certificates (PEM), key file names
/// and rotation states. Persist it after every change (creation and every
/// [`Rotation`](crate::Rotation) other than `Unchanged`) and pass it back to
/// [`CertificateAuthority::load_or_create`](crate::CertificateAuthority::load_or_create).
/// It never contains key material: keys stay in the key directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaJournal {
    version: u32,
    trust_domain: String,
    upstream: bool,
    slots: Vec<JournalSlot>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct JournalSlot {
    state: CaSlotState,
    key_file: String,
    certificate: String,
}

/// One journal slot, decoded.
pub(crate) struct RestoredSlot {
    pub(crate) state: CaSlotState,
    pub(crate) key_file: String,
    pub(crate) cert: CertificateDer<'static>,
}

impl CaJournal {
    pub(crate) fn record<'a>(
        trust_domain: &str,
        upstream: bool,
        slots: impl Iterator<Item = &'a CaSlot>,
    ) -> Self {
        Self {
            version: JOURNAL_VERSION,
            trust_domain: trust_domain.to_owned(),
            upstream,
            slots: slots
                .map(|s| JournalSlot {
                    state: s.state,
                    key_file: s.key_file.clone(),
                    certificate: pem_block("CERTIFICATE", s.cert.as_ref()),
                })
                .collect(),
        }
    }

    /// Checks the journal against the configuration and decodes its slots.
    pub(crate) fn decode(
        &self,
        trust_domain: &str,
        upstream: bool,
    ) -> Result<Vec<RestoredSlot>, CaError> {
        if self.version != JOURNAL_VERSION {
            return Err(CaError::journal(format!(
                "journal version {} is not supported; this Lanyard reads version {JOURNAL_VERSION}",
                self.version
            )));
        }
        if self.trust_domain != trust_domain {
            return Err(CaError::journal(format!(
                "it is for trust domain {}, but the configuration says {trust_domain}",
                self.trust_domain
            )));
        }
        if self.upstream != upstream {
            let mode = |u: bool| if u { "upstream" } else { "self-signed" };
            return Err(CaError::journal(format!(
                "it was written by a {} CA, but the configuration asks for a {} CA; \
                 switching modes needs a new journal",
                mode(self.upstream),
                mode(upstream)
            )));
        }
        let count = |st: CaSlotState| self.slots.iter().filter(|s| s.state == st).count();
        if count(CaSlotState::Active) != 1 || count(CaSlotState::Prepared) > 1 {
            return Err(CaError::journal(format!(
                "it must hold exactly one active CA and at most one prepared CA; it holds {} \
                 active and {} prepared",
                count(CaSlotState::Active),
                count(CaSlotState::Prepared)
            )));
        }
        self.slots
            .iter()
            .map(|s| {
                let cert = CertificateDer::from_pem_slice(s.certificate.as_bytes())
                    .map_err(|e| {
                        CaError::journal(format!(
                            "the certificate paired with key file {} is not PEM ({e})",
                            s.key_file
                        ))
                    })?
                    .into_owned();
                Ok(RestoredSlot {
                    state: s.state,
                    key_file: s.key_file.clone(),
                    cert,
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn journal(json: serde_json::Value) -> Result<CaJournal, serde_json::Error> {
        serde_json::from_value(json)
    }

    fn slot(state: &str) -> serde_json::Value {
        serde_json::json!({
            "state": state,
            "key_file": "ca-00.key",
            "certificate": pem_block("CERTIFICATE", &[0x30, 0x00]),
        })
    }

    fn base(slots: Vec<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "trust_domain": "example.org",
            "upstream": false,
            "slots": slots,
        })
    }

    fn problem(j: &CaJournal, td: &str, upstream: bool) -> String {
        match j.decode(td, upstream) {
            Err(CaError::Journal { problem }) => problem,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_well_formed_journal_decodes() {
        let j = journal(base(vec![
            slot("retired"),
            slot("active"),
            slot("prepared"),
        ]))
        .unwrap();
        let slots = j.decode("example.org", false).unwrap();
        assert_eq!(slots.len(), 3);
        assert_eq!(slots[1].state, CaSlotState::Active);
        assert_eq!(slots[1].cert.as_ref(), &[0x30, 0x00]);
    }

    #[test]
    fn mismatches_are_named() {
        let j = journal(base(vec![slot("active")])).unwrap();
        assert!(problem(&j, "other.org", false).contains("other.org"));
        assert!(problem(&j, "example.org", true).contains("upstream"));

        let mut v = base(vec![slot("active")]);
        v["version"] = 2.into();
        assert!(problem(&journal(v).unwrap(), "example.org", false).contains("version 2"));

        let two = journal(base(vec![slot("active"), slot("active")])).unwrap();
        assert!(problem(&two, "example.org", false).contains("exactly one active"));
        let none = journal(base(vec![slot("retired")])).unwrap();
        assert!(problem(&none, "example.org", false).contains("exactly one active"));

        let mut bad_pem = base(vec![slot("active")]);
        bad_pem["slots"][0]["certificate"] = "nope".into();
        assert!(problem(&journal(bad_pem).unwrap(), "example.org", false).contains("not PEM"));
    }

    #[test]
    fn unknown_fields_and_states_are_refused() {
        let mut v = base(vec![slot("active")]);
        v["private_key"] = "x".into();
        assert!(journal(v).is_err());
        assert!(journal(base(vec![slot("sleeping")])).is_err());
    }
}
