//! Registration entries: which SPIFFE ID a workload matching some selectors
//! gets, and through which parent (agent).

/// A registration entry ID (a UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub uuid::Uuid);

/// A registration entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's ID.
    pub id: EntryId,
    /// The SPIFFE ID issued to matching workloads.
    pub spiffe_id: crate::SpiffeId,
    /// The agent (or parent entry's ID) allowed to receive SVIDs for this entry.
    pub parent_id: crate::SpiffeId,
    /// All must be among the workload's selectors. Never empty.
    pub selectors: Vec<crate::Selector>,
    /// X.509-SVID lifetime in seconds; `None` means the server default.
    pub x509_svid_ttl_secs: Option<u64>,
    /// DNS SANs added to the SVID.
    pub dns_names: Vec<String>,
    /// Seconds since the Unix epoch after which the entry is ignored.
    pub expires_at: Option<i64>,
    /// Free text passed to workloads in the Workload API `hint` field.
    pub hint: String,
    /// Bumped on each update.
    pub revision: u64,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

// TO IMPLEMENT (helper): Display/FromStr/Serialize for EntryId (hyphenated UUID), EntryId::new_random(),
// Serialize/Deserialize for Entry (snake_case field names as above), Entry::validate(&self) -> Result<(), IdError>
// (non-empty selectors, DNS names syntactically valid, hint <= 1024 bytes, ttl > 0 when set).
