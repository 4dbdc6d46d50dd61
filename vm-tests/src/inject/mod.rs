//! `tether-inject` (docs/INJECT.md): the fault matrix run on an appliance
//! image from a TOML fault plan.
//!
//! | module | holds |
//! |---|---|
//! | [`plan`] | the plan's parser and its checks against the image |

pub mod plan;
