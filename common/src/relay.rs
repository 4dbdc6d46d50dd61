//! init's exit relay and fd store: the names under which init hands them to
//! the restarter in `TETHER_FDS`, and the relay's record format
//! (docs/ADOPTION.md, DESIGN.md "Descriptors that outlive the restarter").
//!
//! The relay is a pipe init makes at boot and keeps both ends of for life.
//! For every child init reaps that is not one of its two layer children it
//! writes one record: `pid: i32` then the raw `waitpid` status word
//! `status: i32`, both native-endian, in one `write(2)` (8 bytes, so atomic:
//! less than `PIPE_BUF`). The restarter reads records from the read end and
//! treats a pid it does not know as nothing.
//!
//! The fd store is one `socketpair(AF_UNIX, SOCK_SEQPACKET)`: what the
//! restarter sends on `store_send` queues at `store_recv`. Its message format
//! is the restarter's own; init never reads either end.

/// Bytes per relay record.
pub const RECORD_LEN: usize = 8;

/// `TETHER_FDS` name of the fd store's sending end.
pub const FD_STORE_SEND: &str = "store_send";
/// `TETHER_FDS` name of the fd store's receiving end.
pub const FD_STORE_RECV: &str = "store_recv";
/// `TETHER_FDS` name of the exit relay's read end.
pub const FD_RELAY: &str = "relay";

/// One record: `pid` then `status` (the raw `waitpid` word), native-endian.
pub fn encode(pid: i32, status: i32) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    let (p, s) = out.split_at_mut(4);
    p.copy_from_slice(&pid.to_ne_bytes());
    s.copy_from_slice(&status.to_ne_bytes());
    out
}

/// The complete records in `buf`, in order; a trailing partial record is
/// not returned (a reader keeps it for its next read; init writes each
/// record in one atomic `write(2)`, so a pipe never holds half of one unless
/// the reader read a length that is not a multiple of [`RECORD_LEN`]).
pub fn decode(buf: &[u8]) -> impl Iterator<Item = (i32, i32)> + '_ {
    buf.chunks_exact(RECORD_LEN).map(|r| {
        let mut pid = [0u8; 4];
        let mut status = [0u8; 4];
        let (p, s) = r.split_at(4);
        pid.copy_from_slice(p);
        status.copy_from_slice(s);
        (i32::from_ne_bytes(pid), i32::from_ne_bytes(status))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let cases = [(1, 0), (4242, 9), (i32::MAX, 0x0100), (-1, i32::MIN)];
        let mut buf = Vec::new();
        for (pid, status) in cases {
            let r = encode(pid, status);
            assert_eq!(r.len(), RECORD_LEN);
            assert_eq!(decode(&r).collect::<Vec<_>>(), vec![(pid, status)]);
            buf.extend_from_slice(&r);
        }
        assert_eq!(decode(&buf).collect::<Vec<_>>(), cases.to_vec());
    }

    #[test]
    fn the_layout_is_pid_then_status_native_endian() {
        let r = encode(0x0102_0304, 0x0506_0708);
        assert_eq!(r[..4], 0x0102_0304i32.to_ne_bytes());
        assert_eq!(r[4..], 0x0506_0708i32.to_ne_bytes());
    }

    #[test]
    fn a_partial_record_is_not_decoded() {
        let mut buf = encode(7, 256).to_vec();
        buf.extend_from_slice(&encode(8, 9)[..5]);
        assert_eq!(decode(&buf).collect::<Vec<_>>(), vec![(7, 256)]);
        assert_eq!(decode(&buf[..7]).count(), 0);
        assert_eq!(decode(&[]).count(), 0);
    }

    #[test]
    fn names_are_valid_fd_list_names() {
        let l = crate::fdlist::FdList::parse(&format!(
            "init=3,watchdog=4,{FD_STORE_SEND}=5,{FD_STORE_RECV}=6,{FD_RELAY}=7"
        ))
        .unwrap();
        assert_eq!(l.get(FD_STORE_SEND), Some(5));
        assert_eq!(l.get(FD_STORE_RECV), Some(6));
        assert_eq!(l.get(FD_RELAY), Some(7));
    }
}
