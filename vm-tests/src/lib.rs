//! VM harness.
