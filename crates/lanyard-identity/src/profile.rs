//! The X.509-SVID profile checker (SPIFFE X509-SVID standard, plus Lanyard's
//! stricter leaf profile from DESIGN.md).

/// What a checked leaf SVID says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvidSummary {
    /// The SPIFFE ID in the single URI SAN.
    pub spiffe_id: crate::SpiffeId,
    /// Lower-case hex serial without colons or leading zero bytes.
    pub serial: String,
    /// NotBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// NotAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// DNS SANs.
    pub dns_names: Vec<String>,
}

// TO IMPLEMENT (helper):
// pub fn check_x509_svid(leaf_der: &[u8]) -> Result<SvidSummary, ProfileError>
// pub fn check_signing_certificate(ca_der: &[u8]) -> Result<(), ProfileError>
