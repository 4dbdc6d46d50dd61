//! The host side of the fault agent protocol (see `src/bin/tether-fault.rs`
//! for the verbs): numbered commands on the agent's serial port, `RESULT
//! <id> <json>` replies found in the VM's timeline.

use crate::events::{Event, Source, WaitError};
use crate::qemu::Vm;
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A command that did not give a successful result.
#[derive(Debug)]
pub enum AgentError {
    Send(std::io::Error),
    Wait(WaitError),
    /// The agent answered `ok: false`.
    Failed {
        command: String,
        error: String,
    },
    BadReply {
        command: String,
        reply: String,
    },
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Send(e) => write!(f, "sending to the agent: {}", e),
            AgentError::Wait(e) => write!(f, "{}", e),
            AgentError::Failed { command, error } => {
                write!(f, "agent command `{}` failed: {}", command, error)
            }
            AgentError::BadReply { command, reply } => {
                write!(f, "agent command `{}`: bad reply {:?}", command, reply)
            }
        }
    }
}

impl std::error::Error for AgentError {}

impl From<WaitError> for AgentError {
    fn from(e: WaitError) -> Self {
        AgentError::Wait(e)
    }
}

/// A successful reply: its JSON and when it arrived on the host.
#[derive(Clone, Debug)]
pub struct Reply {
    pub value: Value,
    pub event: Event,
}

impl Reply {
    pub fn u64(&self, key: &str) -> u64 {
        self.value.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
    }

    pub fn i64(&self, key: &str) -> i64 {
        self.value.get(key).and_then(|v| v.as_i64()).unwrap_or(0)
    }

    pub fn str(&self, key: &str) -> &str {
        self.value.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Vm {
    /// Waits for the agent's `AGENT ready` line of the current boot.
    pub fn wait_agent_ready(&mut self, timeout: Duration) -> Result<Event, WaitError> {
        self.timeline
            .wait_line(Source::Agent, "AGENT ready", timeout)
    }

    /// Sends `command` and waits for its result. The cursor of the
    /// timeline is left where it was: results are matched by id, so other
    /// events stay readable in order.
    pub fn agent(&mut self, command: &str, timeout: Duration) -> Result<Reply, AgentError> {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        self.send_agent(&format!("{} {}", id, command))
            .map_err(AgentError::Send)?;
        let prefix = format!("RESULT {} ", id);
        let mark = self.timeline.mark();
        let what = format!("the agent's reply to `{}`", command);
        let r = self.timeline.wait_for(&what, timeout, |e| {
            e.source == Source::Agent && e.text.starts_with(&prefix)
        });
        self.timeline.seek(mark);
        let event = r?;
        let json = &event.text[prefix.len()..];
        let value: Value = serde_json::from_str(json).map_err(|_| AgentError::BadReply {
            command: command.to_string(),
            reply: event.text.clone(),
        })?;
        if value.get("ok").and_then(|v| v.as_bool()) != Some(true) {
            let error = value
                .get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string();
            return Err(AgentError::Failed {
                command: command.to_string(),
                error,
            });
        }
        Ok(Reply { value, event })
    }
}
