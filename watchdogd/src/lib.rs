//! The pure cores of tether-watchdogd, as a library: what the model checker
//! links (STYLE.md, "Module map: watchdogd/src"). `gate` decides from the
//! beats whether the device may be petted; `device` decides what to do with
//! the device in each turn, every pinging action under the gate's decision;
//! `turn` holds both with the heartbeat watch and orders one turn of the
//! loop (start-up backlog, drain, evaluate, device, beat to init). None
//! makes a system call; `main.rs` is the shell.

#![forbid(unsafe_code)]

pub mod device;
pub mod gate;
pub mod turn;
