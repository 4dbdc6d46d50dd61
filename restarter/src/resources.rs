//! Each service's resources, owned by the event loop in one table indexed
//! by `ServiceId` (STYLE.md §3): its output pipes, notify socket (and the
//! user it was made for), cgroup, and the `/proc` start time of its current
//! process. A row is filled only on the supervisor's `Action::Provision`
//! (when a spec enters the set or changes) or, after a restarter crash,
//! from init's fd store (re-adoption); it is emptied only on
//! `Action::Release` (the service left the set). Starting a process uses
//! what the row holds; it creates nothing (a provision that failed, e.g.
//! out of descriptors, goes back to the supervisor as
//! `Event::ProvisionFailed`: it provisions again before the next start,
//! whose failure reports the error if that fails too).

use crate::cgroup::ServiceCgroup;
use crate::notify::NotifySocket;
use crate::output::ServiceOutput;
use crate::supervisor::ServiceId;

/// One service's resources.
#[derive(Default)]
pub struct Resources {
    pub output: Option<ServiceOutput>,
    pub notify: Option<NotifySocket>,
    /// The `user` the notify socket's owner was resolved for (the lookup
    /// runs again only when it changes).
    pub notify_user: Option<Option<String>>,
    pub cgroup: Option<ServiceCgroup>,
    /// `/proc/PID/stat` start time of the current process.
    pub start_time: u64,
    /// The last provision failed (errno, why): the supervisor provisions
    /// again before the next start, which fails with this if that fails
    /// too.
    pub provision_error: Option<(Option<i32>, String)>,
}

/// The table: one row per slot, empty rows for free slots.
#[derive(Default)]
pub struct Table {
    rows: Vec<Resources>,
}

impl Table {
    pub fn get(&self, id: ServiceId) -> Option<&Resources> {
        self.rows.get(id.index())
    }

    pub fn get_mut(&mut self, id: ServiceId) -> Option<&mut Resources> {
        self.rows.get_mut(id.index())
    }

    /// The row of `id`, made if needed: only for a provision or an
    /// adoption.
    pub fn row(&mut self, id: ServiceId) -> &mut Resources {
        if self.rows.len() <= id.index() {
            self.rows.resize_with(id.index() + 1, Resources::default);
        }
        &mut self.rows[id.index()]
    }

    /// Empties the row of `id` (a release), returning what it held.
    pub fn release(&mut self, id: ServiceId) -> Resources {
        self.rows
            .get_mut(id.index())
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Every row (for a clean exit).
    pub fn take_all(&mut self) -> Vec<Resources> {
        std::mem::take(&mut self.rows)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resources> {
        self.rows.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Resources> {
        self.rows.iter_mut()
    }
}
