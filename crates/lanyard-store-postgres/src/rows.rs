//! Records to and from table rows. A row that does not decode (a bad SPIFFE
//! ID, selector or JSON, a negative revision) is
//! [`StoreError::Corrupt`](lanyard_store::StoreError::Corrupt), naming the
//! table and key; it is never skipped.

use lanyard_identity::{Entry, EntryId, Selector, SpiffeId};
use lanyard_store::{AgentRecord, JoinTokenRecord, Revocation, StoreError, SvidRecord};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

/// The columns [`entry`] reads, in order.
pub(crate) const ENTRY_COLUMNS: &str = "id, spiffe_id, parent_id, selectors, x509_svid_ttl_secs, \
     dns_names, expires_at, hint, revision, created_at, jwt_svid_ttl_secs";
/// The columns [`agent`] reads, in order.
pub(crate) const AGENT_COLUMNS: &str = "spiffe_id, attestation_type, selectors, serial, \
     expires_at, attested_at, banned, evicted, revision";
/// The columns [`svid`] reads, in order.
pub(crate) const SVID_COLUMNS: &str =
    "serial, spiffe_id, entry_id, agent_id, task_id, issued_at, not_after";
/// The columns [`revocation`] reads, in order.
pub(crate) const REVOCATION_COLUMNS: &str = "serial, revoked_at, not_after, reason";

/// What a damaged row is reported as.
fn corrupt(table: &str, key: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: format!("row {key:?} of table `{table}`: {what}"),
    }
}

fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    i: usize,
    table: &str,
    key: &str,
) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| corrupt(table, key, format!("column {i}: {e}")))
}

fn spiffe_id(value: &str, table: &str, key: &str) -> Result<SpiffeId, StoreError> {
    SpiffeId::new(value).map_err(|e| corrupt(table, key, format!("bad SPIFFE ID {value:?}: {e}")))
}

fn selectors(values: Vec<String>, table: &str, key: &str) -> Result<Vec<Selector>, StoreError> {
    values
        .iter()
        .map(|s| {
            s.parse::<Selector>()
                .map_err(|e| corrupt(table, key, format!("bad selector {s:?}: {e}")))
        })
        .collect()
}

fn unsigned(value: i64, table: &str, key: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(table, key, format!("negative number {value}")))
}

/// A `u64` as the bigint it is stored in.
pub(crate) fn signed(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt {
        what: format!("{what} {value} does not fit a 64-bit signed column"),
    })
}

/// Selectors as the text array they are stored in.
pub(crate) fn selector_texts(selectors: &[Selector]) -> Vec<String> {
    selectors.iter().map(ToString::to_string).collect()
}

pub(crate) fn entry(row: &Row) -> Result<Entry, StoreError> {
    let t = "entries";
    let id: uuid::Uuid = get(row, 0, t, "?")?;
    let key = id.hyphenated().to_string();
    let k = key.as_str();
    Ok(Entry {
        id: EntryId(id),
        spiffe_id: spiffe_id(get(row, 1, t, k)?, t, k)?,
        parent_id: spiffe_id(get(row, 2, t, k)?, t, k)?,
        selectors: selectors(get(row, 3, t, k)?, t, k)?,
        x509_svid_ttl_secs: get::<Option<i64>>(row, 4, t, k)?
            .map(|v| unsigned(v, t, k))
            .transpose()?,
        dns_names: get(row, 5, t, k)?,
        expires_at: get(row, 6, t, k)?,
        hint: get(row, 7, t, k)?,
        revision: unsigned(get(row, 8, t, k)?, t, k)?,
        created_at: get(row, 9, t, k)?,
        jwt_svid_ttl_secs: get::<Option<i64>>(row, 10, t, k)?
            .map(|v| unsigned(v, t, k))
            .transpose()?,
    })
}

pub(crate) fn agent(row: &Row) -> Result<AgentRecord, StoreError> {
    let t = "agents";
    let key: String = get(row, 0, t, "?")?;
    let k = key.as_str();
    Ok(AgentRecord {
        spiffe_id: spiffe_id(k, t, k)?,
        attestation_type: get(row, 1, t, k)?,
        selectors: selectors(get(row, 2, t, k)?, t, k)?,
        serial: get(row, 3, t, k)?,
        expires_at: get(row, 4, t, k)?,
        attested_at: get(row, 5, t, k)?,
        banned: get(row, 6, t, k)?,
        evicted: get(row, 7, t, k)?,
        revision: unsigned(get(row, 8, t, k)?, t, k)?,
    })
}

pub(crate) fn svid(row: &Row) -> Result<SvidRecord, StoreError> {
    let t = "svids";
    let serial: String = get(row, 0, t, "?")?;
    let k = serial.as_str();
    Ok(SvidRecord {
        spiffe_id: spiffe_id(get(row, 1, t, k)?, t, k)?,
        entry_id: get::<Option<uuid::Uuid>>(row, 2, t, k)?.map(EntryId),
        agent_id: get::<Option<&str>>(row, 3, t, k)?
            .map(|a| spiffe_id(a, t, k))
            .transpose()?,
        task_id: get(row, 4, t, k)?,
        issued_at: get(row, 5, t, k)?,
        not_after: get(row, 6, t, k)?,
        serial,
    })
}

pub(crate) fn revocation(row: &Row) -> Result<Revocation, StoreError> {
    let t = "revocations";
    let serial: String = get(row, 0, t, "?")?;
    let k = serial.as_str();
    Ok(Revocation {
        revoked_at: get(row, 1, t, k)?,
        not_after: get(row, 2, t, k)?,
        reason: get(row, 3, t, k)?,
        serial,
    })
}

/// A join token row: `token_id, expires_at, created_at, spiffe_id, used_at`.
pub(crate) fn join_token(row: &Row) -> Result<(JoinTokenRecord, Option<i64>), StoreError> {
    let t = "join_tokens";
    let token_id: String = get(row, 0, t, "?")?;
    let k = token_id.as_str();
    let record = JoinTokenRecord {
        expires_at: get(row, 1, t, k)?,
        created_at: get(row, 2, t, k)?,
        spiffe_id: get::<Option<&str>>(row, 3, t, k)?
            .map(|s| spiffe_id(s, t, k))
            .transpose()?,
        token_id: token_id.clone(),
    };
    Ok((record, get(row, 4, t, k)?))
}

/// A JSON record column (tasks).
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &Row,
    i: usize,
    table: &str,
    key: &str,
) -> Result<T, StoreError> {
    let value: serde_json::Value = get(row, i, table, key)?;
    serde_json::from_value(value).map_err(|e| corrupt(table, key, format!("cannot decode: {e}")))
}

/// A record as the JSON it is stored as.
pub(crate) fn to_json<T: serde::Serialize>(
    what: &str,
    value: &T,
) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|source| StoreError::Encode {
        what: what.to_owned(),
        source,
    })
}
