//! Which connection runs under which backend pid, for `pg_cancel_backend(pid)`.
//!
//! CancelRequest messages carry a (pid, secret) pair and are handled by pgwire's
//! `ConnectionManager`; `pg_cancel_backend` only knows the pid, so connections also register
//! their cancel handle here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgwire::api::ConnectionHandle;

#[derive(Default)]
pub struct CancelRegistry {
    handles: Mutex<HashMap<i32, Arc<ConnectionHandle>>>,
}

impl CancelRegistry {
    pub fn register(&self, pid: i32, handle: Arc<ConnectionHandle>) {
        self.lock().insert(pid, handle);
    }

    pub fn unregister(&self, pid: i32) {
        self.lock().remove(&pid);
    }

    /// Cancels the statement running on `pid`; `false` if there is no such connection.
    pub fn cancel(&self, pid: i32) -> bool {
        let Some(handle) = self.lock().get(&pid).cloned() else { return false };
        // The handle's lock is only held to swap a oneshot sender: blocking on it is brief.
        futures::executor::block_on(handle.cancel());
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<ConnectionHandle>>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }
}
