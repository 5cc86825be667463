//! The operator behind an admin call: the peer's Unix identity on the socket.

use std::fmt;

use tonic::{Request, Status, transport::server::UdsConnectInfo};

/// A Unix user calling the admin socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Principal {
    pub uid: u32,
    pub gid: u32,
    pub user: Option<String>,
}

impl Principal {
    pub fn of<T>(req: &Request<T>) -> Result<Self, Status> {
        let cred = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .ok_or_else(|| {
                Status::unauthenticated("admin calls must come over the admin Unix socket")
            })?;
        let uid = cred.uid();
        Ok(Self {
            uid,
            gid: cred.gid(),
            user: crate::accounts::user_name(uid),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(name) => write!(f, "uid:{}({name})", self.uid),
            None => write!(f, "uid:{}", self.uid),
        }
    }
}
