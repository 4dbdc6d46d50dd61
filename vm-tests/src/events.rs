//! What the harness sees of a VM, as one timeline of timestamped events:
//! serial console lines, lines from the fault agent's serial port, QMP
//! events (the hardware watchdog firing, resets), QEMU's own stderr, and
//! the harness's notes. Reader threads send them over a crossbeam channel;
//! the test thread consumes them in arrival order with deadlines.
//!
//! Waiting is cursor-based: [`Timeline::wait_for`] searches the events
//! after the cursor and moves the cursor past the match, so a test reads
//! the console like a script ("first this, then that"). [`Timeline::mark`]
//! and [`Timeline::seek`] allow searching again from an earlier point. A
//! timeout error carries the last lines seen, for the test's failure
//! message. Every event is also appended to a transcript file when one is
//! set (CI keeps them under `target/vm-logs/`).

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The guest's first serial port (`ttyS0`, the kernel console).
    Console,
    /// The guest's second serial port (`ttyS1`), where the fault agent talks.
    Agent,
    /// A QMP event or reply (`WATCHDOG {"action":"reset"}`, `RESET ...`).
    Qmp,
    /// QEMU's stderr.
    Qemu,
    /// The harness's own notes.
    Harness,
    /// The console closed: QEMU exited.
    Exit,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Console => "console",
            Source::Agent => "agent",
            Source::Qmp => "qmp",
            Source::Qemu => "qemu",
            Source::Harness => "harness",
            Source::Exit => "exit",
        }
    }
}

/// One line or event, stamped with the host's monotonic clock on arrival.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: Instant,
    pub source: Source,
    pub text: String,
}

impl Event {
    pub fn is(&self, source: Source, needle: &str) -> bool {
        self.source == source && self.text.contains(needle)
    }
}

/// A wait that did not end in a match.
#[derive(Debug)]
pub enum WaitError {
    Timeout {
        what: String,
        waited: Duration,
        tail: String,
    },
    /// QEMU exited (or every reader ended) before the match.
    Ended { what: String, tail: String },
    /// [`Timeline::expect_none`] saw what must not happen.
    Unexpected {
        what: String,
        event: String,
        tail: String,
    },
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout { what, waited, tail } => {
                write!(
                    f,
                    "timed out after {:.1}s waiting for {}; last events:\n{}",
                    waited.as_secs_f64(),
                    what,
                    tail
                )
            }
            WaitError::Ended { what, tail } => write!(
                f,
                "VM ended while waiting for {}; last events:\n{}",
                what, tail
            ),
            WaitError::Unexpected { what, event, tail } => {
                write!(f, "unexpected {}: {}; last events:\n{}", what, event, tail)
            }
        }
    }
}

impl std::error::Error for WaitError {}

/// The event stream of one VM.
pub struct Timeline {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    events: Vec<Event>,
    cursor: usize,
    start: Instant,
    transcript: Option<std::fs::File>,
    echo: bool,
    printer: Option<Printer>,
    ended: bool,
}

/// Called with each event as it arrives (and its offset in seconds from
/// the VM's start): the demo's live, filtered timeline.
pub type Printer = Box<dyn FnMut(f64, &Event) + Send>;

impl Timeline {
    pub fn new(start: Instant) -> Timeline {
        let (tx, rx) = crossbeam_channel::unbounded();
        Timeline {
            tx,
            rx,
            events: Vec::new(),
            cursor: 0,
            start,
            transcript: None,
            echo: false,
            printer: None,
            ended: false,
        }
    }

    /// A sender for a reader thread.
    pub fn sender(&self) -> Sender<Event> {
        self.tx.clone()
    }

    /// Appends every event to `path` as it arrives.
    pub fn set_transcript(&mut self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.transcript = Some(std::fs::File::create(path)?);
        Ok(())
    }

    /// Prints every event on stderr as it arrives (`TETHER_VM_ECHO=1`).
    pub fn set_echo(&mut self, on: bool) {
        self.echo = on;
    }

    /// Calls `p` with every event from now on, as it arrives.
    pub fn set_printer(&mut self, p: Option<Printer>) {
        self.printer = p;
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Seconds since the VM was started.
    pub fn offset(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    pub fn format(&self, e: &Event) -> String {
        format!(
            "[{:8.3}] {:<7}| {}",
            self.offset(e.at),
            e.source.label(),
            e.text
        )
    }

    fn push(&mut self, e: Event) {
        if e.source == Source::Exit {
            self.ended = true;
        }
        let line = self.format(&e);
        if let Some(t) = self.transcript.as_mut() {
            let _ = writeln!(t, "{}", line);
        }
        if self.echo {
            eprintln!("{}", line);
        }
        let offset = self.offset(e.at);
        if let Some(p) = self.printer.as_mut() {
            p(offset, &e);
        }
        self.events.push(e);
    }

    /// Records a note of the harness in the timeline.
    pub fn note(&mut self, text: impl Into<String>) -> Instant {
        let at = Instant::now();
        self.push(Event {
            at,
            source: Source::Harness,
            text: text.into(),
        });
        at
    }

    /// Takes everything already delivered, without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.push(e);
        }
    }

    /// Receives events until `deadline`; false when the stream ended.
    fn pump_until(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            self.drain();
            return !self.ended;
        }
        match self.rx.recv_timeout(deadline - now) {
            Ok(e) => {
                self.push(e);
                self.drain();
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// The last `n` events, formatted.
    pub fn tail(&self, n: usize) -> String {
        let from = self.events.len().saturating_sub(n);
        self.events[from..]
            .iter()
            .map(|e| self.format(e))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every event received so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The cursor (an index into [`Timeline::events`]).
    pub fn mark(&self) -> usize {
        self.cursor
    }

    /// Moves the cursor (e.g. back to a [`Timeline::mark`]).
    pub fn seek(&mut self, to: usize) {
        self.cursor = to.min(self.events.len());
    }

    /// Moves the cursor past everything received so far.
    pub fn skip_to_end(&mut self) {
        self.drain();
        self.cursor = self.events.len();
    }

    /// Waits up to `timeout` for an event after the cursor matching `pred`;
    /// moves the cursor past it.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, WaitError> {
        let begun = Instant::now();
        let deadline = begun + timeout;
        loop {
            if let Some(i) = self.events[self.cursor..].iter().position(&pred) {
                let idx = self.cursor + i;
                self.cursor = idx + 1;
                return Ok(self.events[idx].clone());
            }
            self.cursor = self.events.len();
            if self.ended {
                return Err(WaitError::Ended {
                    what: what.to_string(),
                    tail: self.tail(40),
                });
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout {
                    what: what.to_string(),
                    waited: begun.elapsed(),
                    tail: self.tail(40),
                });
            }
            if !self.pump_until(deadline) {
                self.ended = true;
            }
        }
    }

    /// Waits for a line on `source` containing `needle`.
    pub fn wait_line(
        &mut self,
        source: Source,
        needle: &str,
        timeout: Duration,
    ) -> Result<Event, WaitError> {
        let what = format!("{} line containing {:?}", source.label(), needle);
        self.wait_for(&what, timeout, |e| e.is(source, needle))
    }

    /// Watches for `during`: an event after the cursor matching `pred` is an
    /// error. The cursor is left where it was (the events stay readable).
    pub fn expect_none(
        &mut self,
        what: &str,
        during: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + during;
        let from = self.cursor;
        loop {
            if let Some(e) = self.events[from..].iter().find(|e| pred(e)) {
                return Err(WaitError::Unexpected {
                    what: what.to_string(),
                    event: self.format(e),
                    tail: self.tail(40),
                });
            }
            if Instant::now() >= deadline || self.ended {
                return Ok(());
            }
            if !self.pump_until(deadline) {
                self.ended = true;
            }
        }
    }

    /// Whether QEMU has exited (the console closed).
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Turns raw serial bytes into text lines: drops carriage returns and
/// other control characters except tabs, and ANSI escape sequences.
pub fn clean_line(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(0x40..0x7e)
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: Source, text: &str) -> Event {
        Event {
            at: Instant::now(),
            source,
            text: text.to_string(),
        }
    }

    #[test]
    fn wait_for_reads_in_order_and_moves_the_cursor() {
        let mut t = Timeline::new(Instant::now());
        let tx = t.sender();
        for s in ["boot 1", "ready", "boot 2", "ready"] {
            tx.send(ev(Source::Console, s)).unwrap();
        }
        t.wait_line(Source::Console, "boot 2", Duration::from_secs(1))
            .unwrap();
        let r = t
            .wait_line(Source::Console, "ready", Duration::from_secs(1))
            .unwrap();
        assert_eq!(r.text, "ready");
        assert_eq!(t.mark(), 4);
        let e = t
            .wait_line(Source::Console, "boot 1", Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(e, WaitError::Timeout { .. }), "{}", e);
        t.seek(0);
        t.wait_line(Source::Console, "boot 1", Duration::from_millis(50))
            .unwrap();
    }

    #[test]
    fn source_must_match_as_well_as_text() {
        let mut t = Timeline::new(Instant::now());
        t.sender().send(ev(Source::Agent, "WATCHDOG")).unwrap();
        assert!(t
            .wait_line(Source::Qmp, "WATCHDOG", Duration::from_millis(30))
            .is_err());
    }

    #[test]
    fn expect_none_fails_on_a_forbidden_event_and_keeps_the_cursor() {
        let mut t = Timeline::new(Instant::now());
        let tx = t.sender();
        tx.send(ev(Source::Console, "fine")).unwrap();
        t.expect_none("reset", Duration::from_millis(20), |e| {
            e.is(Source::Qmp, "RESET")
        })
        .unwrap();
        tx.send(ev(Source::Qmp, "RESET {}")).unwrap();
        let e = t
            .expect_none("reset", Duration::from_millis(20), |e| {
                e.is(Source::Qmp, "RESET")
            })
            .unwrap_err();
        assert!(matches!(e, WaitError::Unexpected { .. }));
        assert_eq!(t.mark(), 0);
    }

    #[test]
    fn end_of_stream_ends_a_wait_early() {
        let mut t = Timeline::new(Instant::now());
        t.sender().send(ev(Source::Exit, "console closed")).unwrap();
        let begun = Instant::now();
        let e = t
            .wait_line(Source::Console, "never", Duration::from_secs(30))
            .unwrap_err();
        assert!(matches!(e, WaitError::Ended { .. }));
        assert!(begun.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn serial_noise_is_cleaned() {
        assert_eq!(clean_line(b"\x1b[0;32mOK\x1b[0m done\r"), "OK done");
        assert_eq!(clean_line(b"a\tb\x07"), "a\tb");
    }
}
