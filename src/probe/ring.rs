//! BPF ring buffers drained with a time budget.
//!
//! libbpf delivers records until the buffer is empty, which never happens
//! when the producer is faster than the reader (a whole-machine recording
//! at a high frequency). The recording loop must still honour its deadline
//! and the first Ctrl-C, so every delivery here stops at a given instant:
//! the record callback checks the clock and, past the deadline, returns an
//! error code, which makes libbpf stop after that record (the record itself
//! is consumed, nothing is lost by stopping).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, RingBuffer, RingBufferBuilder};

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

    /// Delivers records until `until`, waiting for the first one until then
    /// at most. Returns whether records were left unread at the deadline.
    pub fn poll_until(&self, until: Instant) -> bool {
        self.deadline.set(until);
        self.cut.set(false);
        let wait = until.saturating_duration_since(Instant::now());
        let rc = self.ring.poll_raw(wait.max(Duration::from_millis(1)));
        if rc < 0 && rc != STOP && rc != -libc::EINTR {
            log::debug!(
                "ring buffer poll: {}",
                std::io::Error::from_raw_os_error(-rc)
            );
        }
        self.cut.get()
    }

    /// Delivers what is queued for at most `budget`. Returns whether
    /// everything was delivered.
    pub fn drain(&self, budget: Duration) -> bool {
        self.deadline.set(Instant::now() + budget);
        self.cut.set(false);
        let rc = self.ring.consume_raw();
        if rc < 0 && rc != STOP {
            log::debug!(
                "ring buffer consume: {}",
                std::io::Error::from_raw_os_error(-rc)
            );
        }
        !self.cut.get()
    }
}
