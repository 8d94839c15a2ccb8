//! Wrappers around a real store: one counts the calls, one injects faults.

use std::{
    sync::{
        atomic::{AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_kv_session::{
    storage::{ChangeSet, SaveOutcome, SessionMap, SessionStore},
    SessionId, StoreError,
};

/// Counts every call into the store it wraps.
#[derive(Debug, Clone)]
pub struct CountingStore<S> {
    inner: S,
    calls: Arc<Counts>,
}

/// The calls made, per operation.
#[derive(Debug, Default)]
pub struct Counts {
    /// `load` calls.
    pub load: AtomicUsize,
    /// `create` calls.
    pub create: AtomicUsize,
    /// `update` calls.
    pub update: AtomicUsize,
    /// `renew` calls.
    pub renew: AtomicUsize,
    /// `touch` calls.
    pub touch: AtomicUsize,
    /// `delete` calls.
    pub delete: AtomicUsize,
}

impl Counts {
    /// All calls together.
    pub fn total(&self) -> usize {
        [
            &self.load,
            &self.create,
            &self.update,
            &self.renew,
            &self.touch,
            &self.delete,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }
}

impl<S> CountingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            calls: Arc::default(),
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn calls(&self) -> &Counts {
        &self.calls
    }
}

fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::SeqCst);
}

impl<S: SessionStore> SessionStore for CountingStore<S> {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        bump(&self.calls.load);
        self.inner.load(id).await
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        bump(&self.calls.create);
        self.inner.create(id, data, ttl).await
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        bump(&self.calls.update);
        self.inner.update(id, changes).await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        bump(&self.calls.renew);
        self.inner.renew(from, to, changes).await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        bump(&self.calls.touch);
        self.inner.touch(id, ttl).await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        bump(&self.calls.delete);
        self.inner.delete(id).await
    }
}

/// What a [`FaultyStore`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Passes every call through.
    None = 0,
    /// Fails every call as unavailable.
    Down = 1,
    /// Never answers.
    Hang = 2,
}

/// Passes calls to a real store, or fails them, as switched at run time.
#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    inner: S,
    fault: Arc<AtomicU8>,
}

impl<S> FaultyStore<S> {
    /// Wraps `inner`, with no fault.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            fault: Arc::new(AtomicU8::new(Fault::None as u8)),
        }
    }

    /// Switches the fault.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    async fn check(&self) -> Result<(), StoreError> {
        match self.fault.load(Ordering::SeqCst) {
            1 => Err(StoreError::unavailable(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "injected: connection refused",
            ))),
            2 => {
                std::future::pending::<()>().await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl<S: SessionStore> SessionStore for FaultyStore<S> {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        self.check().await?;
        self.inner.load(id).await
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.create(id, data, ttl).await
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        self.check().await?;
        self.inner.update(id, changes).await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.check().await?;
        self.inner.renew(from, to, changes).await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.touch(id, ttl).await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.delete(id).await
    }
}

/// Holds the first `create` of a session (not of a user's index, whose id no cookie can
/// carry) once armed, until released: a log-in caught between indexing its id and writing
/// its session.
#[derive(Debug, Clone)]
pub struct HeldCreate<S> {
    inner: S,
    state: Arc<HeldState>,
}

#[derive(Debug, Default)]
struct HeldState {
    armed: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl<S> HeldCreate<S> {
    /// Wraps `inner`, unarmed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: Arc::default(),
        }
    }

    /// Holds the next create of a session.
    pub fn arm(&self) {
        self.state.armed.store(true, Ordering::SeqCst);
    }

    /// Waits until a create is held.
    pub async fn entered(&self) {
        self.state.entered.notified().await;
    }

    /// Lets the held create go on.
    pub fn release(&self) {
        self.state.release.notify_one();
    }
}

impl<S: SessionStore> SessionStore for HeldCreate<S> {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        self.inner.load(id).await
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let session = SessionId::parse(id.as_str()).is_some();
        if session && self.state.armed.swap(false, Ordering::SeqCst) {
            self.state.entered.notify_one();
            self.state.release.notified().await;
        }
        self.inner.create(id, data, ttl).await
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        self.inner.update(id, changes).await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.inner.renew(from, to, changes).await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.touch(id, ttl).await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }
}
