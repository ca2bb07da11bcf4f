//! What one worker owns besides its connections, passed to them explicitly (no
//! thread-locals): its read buffers, its File backend state (file cache, root descriptors), its
//! idle upstream connections (HTTP/1.1, and HTTP/2's multiplexed ones) and its pipes. A test builds one with [`WorkerCtx::new`].
//!
//! Two small caches stay thread-local on purpose, because they are invisible to any logic: the
//! formatted `Date` of the current second and the pool of response-head buffers
//! ([`crate::http::response`]); and the logger's per-thread buffer ([`crate::logging`]).

use crate::files::FilesState;
use crate::net::buffers::Buffers;
use crate::net::splice::Pipes;
use crate::proxy::h2pool::H2Pool;
use crate::proxy::pool::Pool;

/// One worker's state, used only on its thread.
#[derive(Default)]
pub struct WorkerCtx {
    /// The worker's index (into [`crate::shared::Shared::workers`]).
    pub id: usize,
    pub buffers: Buffers,
    pub files: FilesState,
    pub upstreams: Pool,
    pub h2upstreams: H2Pool,
    pub pipes: Pipes,
}

impl WorkerCtx {
    pub fn new(id: usize) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }
}
