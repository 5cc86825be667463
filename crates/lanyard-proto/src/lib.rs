//! Generated protobuf and gRPC code for Lanyard.
//!
//! - [`workload`]: the SPIFFE Workload API, unchanged from the standard
//!   (`/SpiffeWorkloadAPI/...`), served by the agent.
//! - [`node::v1`]: server <-> agent.
//! - [`admin::v1`]: operator CLI <-> server, over the admin Unix socket.

// Generated code: documentation lives in the .proto files.
#![allow(missing_docs, unused_qualifications, clippy::all)]
// Comments copied from the .proto files are not rustdoc.
#![allow(rustdoc::all)]
#![forbid(unsafe_code)]

/// Every `.proto` file of the APIs, compiled: a serialized
/// `google.protobuf.FileDescriptorSet` holding the Workload, Node and Admin
/// APIs and the types they share, dependencies included. A client in
/// another language can build its message classes from it without the
/// sources (Python: `descriptor_pool` and `message_factory`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lanyard_descriptors.bin"));

/// The SPIFFE Workload API (the standard's proto has no package).
pub mod workload {
    tonic::include_proto!("_");
}

/// Messages both Lanyard APIs use, defined once.
pub mod types {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("lanyard.types.v1");
    }
}

/// Server <-> agent API.
pub mod node {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("lanyard.node.v1");
        /// The registration entry, shared with the Admin API.
        pub use crate::types::v1::Entry;
    }
}

/// Operator API.
pub mod admin {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("lanyard.admin.v1");
        /// The registration entry, shared with the Node API.
        pub use crate::types::v1::Entry;
    }
}
