//! Ctrl-C / SIGTERM handling: the first signal asks the recording to stop
//! (and still write its output), a second one aborts at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // Second signal: abort without writing (async-signal-safe exit).
        const MSG: &[u8] =
            b"\nflameprobe: interrupted again: stopped at once, nothing was written\n";
        // SAFETY: write and _exit are async-signal-safe; MSG is static.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(130);
        }
    }
}

/// Installs the handlers. No SA_RESTART, so a blocking poll returns at once.
pub fn install() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// True once a stop signal has arrived.
pub fn stop_requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}
