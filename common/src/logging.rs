//! The `log` backend every binary uses (filled in by the common-io work).
