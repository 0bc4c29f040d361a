//! What runs in the calling process (a CLI command, later a server's request): planning a VM,
//! recording it, preparing its disk and config drive, starting its supervisor and waiting for
//! the report; stopping and removing; changing a running VM's policy. Nothing here runs in the
//! supervisor.

pub(super) mod guest;
pub(super) mod lifecycle;
pub(super) mod media;
pub(super) mod network;
pub(super) mod request;
pub(super) mod restore;
pub(super) mod snapshot;
mod spawn;
