//! The engine's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    #[error("interface {0} has no IPv4 address to send from (set a source address)")]
    NoSourceAddress(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "address label {label:?} must be {interface:?} or start with \"{interface}:\", at most 15 bytes"
    )]
    InvalidLabel { label: String, interface: String },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("authentication for {interface} vhid {vhid}: {source}")]
    Auth {
        interface: String,
        vhid: u8,
        #[source]
        source: carp_proto::AuthError,
    },
    #[error("vhid {vhid} is configured twice on {interface}")]
    DuplicateVhid { interface: String, vhid: u8 },
    #[error(
        "load sharing group {group}: {interface} has {found} of the group's node addresses; it needs exactly one (or set self)"
    )]
    LoadShareNode {
        group: String,
        interface: String,
        found: usize,
    },
    #[error("interface {0} has no link-local IPv6 address to send IPv6 advertisements from")]
    NoLinkLocal(String),
}

impl Error {
    /// The interface the operation named does not exist (any more).
    pub(crate) fn is_no_device(&self) -> bool {
        match self {
            Error::NoSuchInterface(_) => true,
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENODEV),
            _ => false,
        }
    }
}
