//! BPF ring buffers drained with a time budget.
//!
//! libbpf delivers records until the buffer is empty, which never happens
//! when the producer is faster than the reader (a whole-machine recording
//! at a high frequency). The recording loop must still honour its deadline
//! and the first Ctrl-C, so every delivery here stops at a given instant:
//! the record callback checks the clock and, past the deadline, returns an
//! error code, which makes libbpf stop after that record (the record itself
//! is consumed, nothing is lost by stopping).
//!
//! Programs wake the reader only for batches (a wake-up per record costs
//! more than the record), so a recording waits ([`Ring::wait`]) until
//! woken or its next deadline, then takes in whatever is queued
//! ([`Ring::consume_until`]).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::{Link, MapCore, RingBuffer, RingBufferBuilder};

use super::setup::ProbeError;

/// What the callback returns to make libbpf stop delivering (distinct from
/// the -EINTR of a poll interrupted by a signal).
const STOP: i32 = -libc::ECANCELED;

/// A ring buffer whose deliveries end at a deadline.
pub struct Ring<'cb> {
    ring: RingBuffer<'cb>,
    deadline: Rc<Cell<Instant>>,
    cut: Rc<Cell<bool>>,
}

impl<'cb> Ring<'cb> {
    /// A reader of `map` handing every record to `on_record`.
    pub fn new(
        map: &dyn MapCore,
        mut on_record: impl FnMut(&[u8]) + 'cb,
    ) -> Result<Self, ProbeError> {
        let deadline = Rc::new(Cell::new(Instant::now()));
        let cut = Rc::new(Cell::new(false));
        let (d, c) = (deadline.clone(), cut.clone());
        let mut builder = RingBufferBuilder::new();
        builder
            .add(map, move |data: &[u8]| {
                on_record(data);
                if Instant::now() >= d.get() {
                    c.set(true);
                    return STOP;
                }
                0
            })
            .map_err(ProbeError::load)?;
        let ring = builder.build().map_err(ProbeError::load)?;
        Ok(Ring {
            ring,
            deadline,
            cut,
        })
    }

    /// Waits until the program wakes the reader (a batch is queued) or
    /// `until`, without delivering anything.
    pub fn wait(&self, until: Instant) {
        let wait = until.saturating_duration_since(Instant::now());
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: waits on libbpf's epoll descriptor for this ring buffer;
        // the event buffer holds one event.
        unsafe {
            libc::epoll_wait(
                self.ring.epoll_fd(),
                &mut ev,
                1,
                wait.as_millis().min(i32::MAX as u128) as i32,
            )
        };
    }

    /// Delivers what is queued, until `until` at most. Returns whether
    /// records were left unread at the deadline.
    pub fn consume_until(&self, until: Instant) -> bool {
        self.deadline.set(until);
        self.cut.set(false);
        let rc = self.ring.consume_raw();
        if rc < 0 && rc != STOP {
            log::debug!(
                "ring buffer consume: {}",
                std::io::Error::from_raw_os_error(-rc)
            );
        }
        self.cut.get()
    }

    /// Delivers what is queued for at most `budget`. Returns whether
    /// everything was delivered.
    pub fn drain(&self, budget: Duration) -> bool {
        !self.consume_until(Instant::now() + budget)
    }
}

/// A probe that delivers through a [`Ring`] while its links are held:
/// the recording loop's side of every probe, written once.
pub trait Delivery<'obj> {
    fn ring(&self) -> &Ring<'obj>;
    fn links(&mut self) -> &mut Vec<Link>;

    /// Waits until the program has a batch of records queued, or `until`.
    fn wait(&self, until: Instant) {
        self.ring().wait(until);
    }

    /// Delivers what is queued, until `until` at most.
    fn consume(&self, until: Instant) {
        self.ring().consume_until(until);
    }

    /// Detaches the programs (nothing more is recorded) while the maps
    /// stay readable.
    fn detach(&mut self) {
        self.links().clear();
    }

    /// Delivers what is still queued, for at most `budget`; returns
    /// whether everything was delivered.
    fn drain(&self, budget: Duration) -> bool {
        self.ring().drain(budget)
    }

    /// Detaches, then delivers what is still queued (see [`Self::drain`]).
    fn stop(&mut self, budget: Duration) -> bool {
        self.detach();
        self.drain(budget)
    }
}
