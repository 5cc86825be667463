//! Mapping of library errors to gRPC statuses with messages that say what
//! was wrong. Internal details go to the log, not to the caller.

use lanyard_store::StoreError;
use tonic::Status;

pub(crate) fn store_status(e: StoreError) -> Status {
    match &e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        StoreError::TokenUsed | StoreError::TokenExpired { .. } | StoreError::Refused(_) => {
            Status::permission_denied(e.to_string())
        }
        StoreError::Conflict { .. } => Status::aborted(e.to_string()),
        _ => {
            tracing::error!(error = %e, "datastore failure");
            Status::internal("datastore failure (see server log)")
        }
    }
}
