//! Stop requests: SIGTERM (how Airflow stops a task on timeout or when it is marked failed) and
//! SIGINT (Ctrl-C).
//!
//! [`listen`] installs the handlers once, at start-up. A layer run races its steps against
//! [`requested`]: when a signal arrives, the step in flight is abandoned before its commit (each
//! table commits once, after its data files are written, so nothing partial becomes visible), the
//! steps that did commit and the interrupted one are recorded in the run log, and the run ends with
//! [`crate::Error::Interrupted`] (exit 75, retryable).

use std::sync::OnceLock;

use tokio::sync::watch;

/// The signal received, if any: `None` until the first SIGTERM or SIGINT.
static STOP: OnceLock<watch::Sender<Option<&'static str>>> = OnceLock::new();

fn channel() -> &'static watch::Sender<Option<&'static str>> {
    STOP.get_or_init(|| watch::channel(None).0)
}

/// Installs the SIGTERM and SIGINT handlers; call once from inside the async runtime. Returns
/// `false` when the handlers cannot be installed (the process then dies on the default action).
pub fn listen() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return false;
    };
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // The first signal is kept; later ones change nothing.
            channel().send_if_modified(|s| {
                if s.is_none() {
                    *s = Some(name);
                    true
                } else {
                    false
                }
            });
        }
    });
    true
}

/// Resolves with the signal's name once a stop was requested (at once if it already was); never
/// resolves otherwise.
pub async fn requested() -> &'static str {
    let mut rx = channel().subscribe();
    loop {
        if let Some(name) = *rx.borrow_and_update() {
            return name;
        }
        if rx.changed().await.is_err() {
            // The sender is static and never dropped.
            std::future::pending::<()>().await;
        }
    }
}

/// Clean-ups started by [`defer`] that the process waits for before it exits ([`settle`]).
static DEFERRED: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Starts `task` now, on the current runtime, as a clean-up the process waits for before it
/// exits (see [`settle`]): for work a dropped future must still do, such as cancelling its
/// cluster job when a stop request abandons it. Outside a runtime it does nothing.
pub fn defer(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let handle = runtime.spawn(task);
        DEFERRED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }
}

/// Waits for the clean-ups [`defer`] started, for at most `limit` in all; the ones still
/// running then are abandoned.
pub async fn settle(limit: std::time::Duration) {
    let handles = std::mem::take(&mut *DEFERRED.lock().unwrap_or_else(|e| e.into_inner()));
    if handles.is_empty() {
        return;
    }
    if tokio::time::timeout(limit, futures::future::join_all(handles))
        .await
        .is_err()
    {
        tracing::warn!(
            limit_s = limit.as_secs(),
            "Clean-ups still running at exit were abandoned."
        );
    }
}
