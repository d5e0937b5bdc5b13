//! Continuous mode's sending side: a thread that pushes windows one after
//! the other, retrying a failed push with backoff, while newer windows
//! wait in a bounded spool (when it is full the oldest waiting window is
//! dropped, counted and said). The recording only hands windows over
//! ([`Sender::submit`] never waits), so sampling never waits for the
//! network.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::{Client, Retry};
use super::Push;

/// First wait before a retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Tries of one window before it is given up.
const MAX_TRIES: u32 = 8;

/// One window to push.
pub struct Job {
    pub push: Push,
    /// The window, for messages ("window 3 (12:00:30-12:00:45)").
    pub what: String,
}

/// How the pushes went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Windows the receiver took.
    pub pushed: u64,
    /// Retries made.
    pub retried: u64,
    /// Windows dropped from the full spool, or left when time ran out at
    /// the end.
    pub dropped: u64,
    /// Windows given up: refused by the receiver (4xx), or still failing
    /// after every try.
    pub failed: u64,
    /// The last error, for the summary.
    pub last_error: Option<String>,
}

struct State {
    queue: VecDeque<Job>,
    capacity: usize,
    /// Set at the end: push what is left until then.
    closing: Option<Instant>,
    stats: SenderStats,
    /// The thread has ended.
    done: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sender thread and its spool.
pub struct Sender {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Starts the thread; at most `capacity` windows wait.
    pub fn start(client: Client, capacity: usize) -> std::io::Result<Sender> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity: capacity.max(1),
                closing: None,
                stats: SenderStats::default(),
                done: false,
            }),
            wake: Condvar::new(),
        });
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("flameprobe-push".into())
            .spawn(move || {
                run(&inner, &client);
                inner.lock().done = true;
                inner.wake.notify_all();
            })?;
        Ok(Sender {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a window (never waits). When the spool is full, the oldest
    /// waiting window is dropped.
    pub fn submit(&self, job: Job) {
        self.handle().submit(job)
    }

    /// A handle that queues windows from another thread.
    pub fn handle(&self) -> Submit {
        Submit {
            shared: self.shared.clone(),
        }
    }

    pub fn stats(&self) -> SenderStats {
        self.shared.lock().stats.clone()
    }

    /// Windows waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Pushes what is still queued, for at most `limit`; windows left then
    /// are counted as dropped. Returns how it all went.
    pub fn finish(mut self, limit: Duration) -> SenderStats {
        let deadline = Instant::now() + limit;
        let mut s = self.shared.lock();
        s.closing = Some(deadline);
        self.shared.wake.notify_all();
        while !s.done {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .shared
                .wake
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let done = s.done;
        let left = s.queue.len() as u64;
        if left > 0 {
            s.stats.dropped += left;
            s.queue.clear();
            log::warn!("{left} windows were not pushed: time ran out at the end");
        }
        let stats = s.stats.clone();
        drop(s);
        if done {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        // Otherwise the thread is in a request that outlives the limit: it
        // ends with the process.
        stats
    }
}

/// Queues windows for the sender thread, from any thread.
pub struct Submit {
    shared: Arc<Shared>,
}

impl Submit {
    /// Queues a window (never waits). When the spool is full, the oldest
    /// waiting window is dropped, counted and said.
    pub fn submit(&self, job: Job) {
        let mut s = self.shared.lock();
        if s.queue.len() >= s.capacity {
            if let Some(old) = s.queue.pop_front() {
                s.stats.dropped += 1;
                log::warn!(
                    "the push spool is full ({} windows waiting): dropped the oldest, {}; \
                     {} dropped so far",
                    s.capacity,
                    old.what,
                    s.stats.dropped
                );
            }
        }
        s.queue.push_back(job);
        drop(s);
        self.shared.wake.notify_all();
    }
}

/// The thread: the oldest window first, each until it is taken, refused,
/// or has been tried [`MAX_TRIES`] times.
fn run(shared: &Shared, client: &Client) {
    loop {
        let job = {
            let mut s = shared.lock();
            loop {
                if let Some(job) = s.queue.pop_front() {
                    break job;
                }
                if s.closing.is_some() {
                    return;
                }
                s = shared.wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        push_one(shared, client, &job);
    }
}

fn push_one(shared: &Shared, client: &Client, job: &Job) {
    let mut next = 0; // requests of the job already taken
    let mut tries = 0;
    let mut backoff = FIRST_BACKOFF;
    while next < job.push.requests.len() {
        match client.send(&job.push.requests[next]) {
            Ok(()) => {
                next += 1;
                continue;
            }
            Err(e) => {
                tries += 1;
                let mut s = shared.lock();
                s.stats.last_error = Some(e.message.clone());
                let pause = match e.retry {
                    Retry::Never => {
                        s.stats.failed += 1;
                        log::warn!("{e}; {} is dropped", job.what);
                        return;
                    }
                    Retry::Later(after) => after.unwrap_or(backoff),
                };
                let late = s.closing.is_some_and(|d| Instant::now() + pause > d);
                if tries >= MAX_TRIES || late {
                    s.stats.failed += 1;
                    log::warn!("{e}; gave up on {} after {tries} tries", job.what);
                    return;
                }
                s.stats.retried += 1;
                log::warn!(
                    "{e}; trying again in {}s ({} newer windows waiting)",
                    pause.as_secs_f64(),
                    s.queue.len()
                );
                // Sleep, but wake at the end to try once more at once.
                let until = Instant::now() + pause;
                while s.closing.is_none() {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    s = shared
                        .wake
                        .wait_timeout(s, until - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    shared.lock().stats.pushed += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::client::Request;
    use crate::push::url::Endpoint;

    fn job(n: usize) -> Job {
        Job {
            push: Push {
                requests: vec![Request {
                    path: "/x".into(),
                    content_type: "text/plain",
                    body: vec![],
                }],
                series: vec![],
                bytes: 0,
            },
            what: format!("window {n}"),
        }
    }

    /// Nothing listens on the port: every push is refused; the spool keeps
    /// the newest windows and drops (and counts) the oldest.
    #[test]
    fn spool_is_bounded_and_drops_the_oldest() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let sender = Sender::start(Client::new(endpoint, &[], Duration::from_secs(2)), 2).unwrap();
        for n in 0..6 {
            sender.submit(job(n));
        }
        // One in flight at most, two waiting.
        assert!(sender.waiting() <= 2);
        let stats = sender.finish(Duration::from_millis(300));
        assert_eq!(stats.pushed, 0);
        assert_eq!(stats.dropped + stats.failed, 6, "{stats:?}");
        assert!(stats.dropped >= 3, "{stats:?}");
        assert!(
            stats
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("refused"),
            "{stats:?}"
        );
    }
}
