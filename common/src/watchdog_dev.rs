//! Watchdog device ioctls on an owned fd (filled in by the common-io work).
