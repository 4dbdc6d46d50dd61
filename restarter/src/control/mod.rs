//! The control socket: `tetherctl`'s way in.
//!
//! - [`protocol`]: the request parser, responses and status rendering (pure).
//! - [`map`]: requests and signals → commands (pure).
//! - [`server`]: the non-blocking server the event loop drives.
//!
//! Protocol (see `docs/PROTOCOL.md` and `RUN/control.sock`): one request per
//! connection, a single UTF-8 line of at most 512 bytes; the answer is `ok`
//! or `error: MESSAGE` on the first line, then the body, then the server
//! closes. Anyone may ask for status; changing state needs uid 0 or the
//! configured `[control] group`.

pub mod map;
pub mod protocol;
pub mod server;

pub use protocol::{
    format_ms, is_valid_name, parse_request, parse_signal, Layer, Request, RequestError, Response,
    ServiceStatus, StatusReport, MAX_NAME, MAX_REQUEST, MAX_RESPONSE,
};
pub use server::{
    may_change, proc_status_groups, resolve_group, ClientId, Counters, Incoming, Limits, Peer,
    Server,
};
