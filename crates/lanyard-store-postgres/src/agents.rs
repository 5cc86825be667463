//! Agents (attestation, renewal, eviction and bans) and their one-time join
//! tokens.

use deadpool_postgres::GenericClient;
use lanyard_identity::SpiffeId;
use lanyard_store::rules::{attested, renewed, with_standing};
use lanyard_store::{
    AgentRecord, AgentStanding, JoinTokenRecord, Revocation, StoreError, SvidRecord, Sweep,
};
use tracing::{debug, info, warn};

use crate::PostgresStore;
use crate::rows::{self, AGENT_COLUMNS, selector_texts, signed};
use crate::sql::{exec, opt_row, rows};
use crate::svids::{self, Subject, check_serial_free, sweep};

pub(crate) async fn load(
    c: &impl GenericClient,
    id: &SpiffeId,
) -> Result<Option<AgentRecord>, StoreError> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE spiffe_id = $1");
    opt_row(c, &sql, &[&id.as_str()])
        .await?
        .as_ref()
        .map(rows::agent)
        .transpose()
}

/// Inserts the agent, or replaces the stored one with it.
pub(crate) async fn upsert(c: &impl GenericClient, a: &AgentRecord) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO agents (spiffe_id, attestation_type, selectors, serial, expires_at, \
         attested_at, banned, evicted, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = EXCLUDED.attestation_type, \
         selectors = EXCLUDED.selectors, serial = EXCLUDED.serial, \
         expires_at = EXCLUDED.expires_at, attested_at = EXCLUDED.attested_at, \
         banned = EXCLUDED.banned, evicted = EXCLUDED.evicted, revision = EXCLUDED.revision",
        &[
            &a.spiffe_id.as_str(),
            &a.attestation_type,
            &selector_texts(&a.selectors),
            &a.serial,
            &a.expires_at,
            &a.attested_at,
            &a.banned,
            &a.evicted,
            &signed("revision", a.revision)?,
        ],
    )
    .await?;
    Ok(())
}

// === impl PostgresStore ===

impl PostgresStore {
    pub(crate) fn put_agent_tx(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.serializable("put_agent", async |tx| {
            if load(tx, &agent.spiffe_id).await?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: "agent",
                    key: agent.spiffe_id.to_string(),
                });
            }
            upsert(tx, agent).await
        })
    }

    pub(crate) fn attest_agent_tx(
        &self,
        agent: &AgentRecord,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        let stored = self.serializable("attest_agent", async |tx| {
            let previous = load(tx, &agent.spiffe_id).await?;
            let stored = attested(previous.as_ref(), agent)?;
            check_serial_free(tx, &svid.serial).await?;
            upsert(tx, &stored).await?;
            svids::insert(tx, svid).await?;
            Ok(stored)
        })?;
        info!(
            agent = stored.spiffe_id.as_str(),
            revision = stored.revision,
            "agent attested"
        );
        Ok(stored)
    }

    pub(crate) fn renew_agent_tx(
        &self,
        agent_id: &SpiffeId,
        presented: &str,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        let stored = self.serializable("renew_agent", async |tx| {
            let agent = renewed(load(tx, agent_id).await?, agent_id, presented, svid)?;
            check_serial_free(tx, &svid.serial).await?;
            upsert(tx, &agent).await?;
            svids::insert(tx, svid).await?;
            Ok(agent)
        })?;
        debug!(agent = agent_id.as_str(), serial = %svid.serial, "agent SVID renewal recorded");
        Ok(stored)
    }

    pub(crate) fn set_agent_standing_tx(
        &self,
        agent_id: &SpiffeId,
        standing: AgentStanding,
        how: &Sweep,
    ) -> Result<(AgentRecord, Vec<Revocation>), StoreError> {
        let (agent, revoked) = self.serializable("set_agent_standing", async |tx| {
            let agent = with_standing(load(tx, agent_id).await?, agent_id, standing)?;
            upsert(tx, &agent).await?;
            let revoked = sweep(tx, Subject::Agent(agent_id), how).await?;
            Ok((agent, revoked))
        })?;
        warn!(
            agent = agent_id.as_str(),
            ?standing,
            revoked = revoked.len(),
            "agent standing changed"
        );
        Ok((agent, revoked))
    }

    pub(crate) fn get_agent_now(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        self.read(async |c| load(c, id).await)
    }

    pub(crate) fn list_agents_now(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY spiffe_id");
        self.read(async |c| rows(c, &sql, &[]).await?.iter().map(rows::agent).collect())
    }

    /// One INSERT: the primary key makes a second token with the same ID
    /// (used or not) fail.
    pub(crate) fn create_join_token_now(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        let created = self.read(async |c| {
            exec(
                c,
                "INSERT INTO join_tokens (token_id, expires_at, created_at, spiffe_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (token_id) DO NOTHING",
                &[
                    &token.token_id,
                    &token.expires_at,
                    &token.created_at,
                    &token.spiffe_id.as_ref().map(SpiffeId::as_str),
                ],
            )
            .await
        })?;
        if created == 0 {
            return Err(StoreError::AlreadyExists {
                kind: "join token",
                key: token.token_id.clone(),
            });
        }
        info!(token_id = %token.token_id, expires_at = token.expires_at, "join token created");
        Ok(())
    }

    /// One UPDATE at READ COMMITTED marks the token used only if it is
    /// unused and unexpired. Concurrent consumers queue on the row's lock;
    /// each one after the first re-reads the row the first committed, finds
    /// `used_at` set and matches nothing. So exactly one wins, across every
    /// server sharing the database. A caller that matched nothing reads the
    /// row to say why.
    pub(crate) fn consume_join_token_now(
        &self,
        token_id: &str,
        now: i64,
    ) -> Result<JoinTokenRecord, StoreError> {
        const COLUMNS: &str = "token_id, expires_at, created_at, spiffe_id, used_at";
        self.read(async |c| {
            let consumed = opt_row(
                c,
                &format!(
                    "UPDATE join_tokens SET used_at = $2 \
                     WHERE token_id = $1 AND used_at IS NULL AND expires_at > $2 \
                     RETURNING {COLUMNS}"
                ),
                &[&token_id, &now],
            )
            .await?;
            if let Some(row) = consumed {
                info!(token_id, "join token consumed");
                return Ok(rows::join_token(&row)?.0);
            }
            let current = opt_row(
                c,
                &format!("SELECT {COLUMNS} FROM join_tokens WHERE token_id = $1"),
                &[&token_id],
            )
            .await?;
            let Some(row) = current else {
                return Err(StoreError::NotFound {
                    kind: "join token",
                    key: token_id.to_owned(),
                });
            };
            match rows::join_token(&row)? {
                (_, Some(used_at)) => {
                    info!(token_id, used_at, "refused join token: already used");
                    Err(StoreError::TokenUsed)
                }
                (token, None) => {
                    info!(
                        token_id,
                        expired_at = token.expires_at,
                        now,
                        "refused join token: expired"
                    );
                    Err(StoreError::TokenExpired {
                        expired_at: token.expires_at,
                    })
                }
            }
        })
    }
}
