//! The Admin API (`lanyard.admin.v1`) served on the admin Unix socket.

mod principal;
mod service;

pub(crate) use self::{
    principal::Principal,
    service::{AdminService, check_entry_ids},
};
