//! Direct tests of what the kernel offers flameprobe: each creates the
//! smallest thing that needs the feature (a ring-buffer map, a two-
//! instruction program, a link that the kernel must refuse for a known
//! reason, a perf event) and closes it at once. Nothing stays attached.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::probe::perf::{self, SamplingClock};

/// What a direct test found.
#[derive(Debug)]
pub enum Tested {
    /// The kernel did it.
    Works,
    /// The kernel refused it (also EPERM when this process holds what the
    /// test needs: then the kernel or a security module refuses it).
    Fails(io::Error),
    /// Not tested: this process lacks the privileges (the error).
    NotPermitted(io::Error),
}

impl Tested {
    /// Classifies a test's outcome; `privileged`: this process holds the
    /// capabilities the test needs.
    pub fn of(result: io::Result<()>, privileged: bool) -> Tested {
        match result {
            Ok(()) => Tested::Works,
            Err(e) if is_permission(&e) && !privileged => Tested::NotPermitted(e),
            Err(e) => Tested::Fails(e),
        }
    }
}

/// EPERM or EACCES: refused for lack of privileges (or by a security policy).
pub fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// A libbpf return value (a new descriptor, or a negative errno) as a
/// result owning the descriptor.
fn fd_result(ret: libc::c_int) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    // SAFETY: libbpf returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// Creates a BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`, Linux 5.8+): every
/// flameprobe probe delivers its records through one.
pub fn ring_buffer() -> io::Result<()> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    // SAFETY: no name, no options; the kernel validates the rest.
    let ret = unsafe {
        libbpf_sys::bpf_map_create(
            libbpf_sys::BPF_MAP_TYPE_RINGBUF,
            std::ptr::null(),
            0,
            0,
            page,
            std::ptr::null(),
        )
    };
    fd_result(ret).map(drop)
}

/// `r0 = 0; exit`: a program that does nothing, valid for every type.
fn return_zero() -> [libbpf_sys::bpf_insn; 2] {
    const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
    const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    let insn = |code| libbpf_sys::bpf_insn {
        code,
        ..Default::default()
    };
    [insn(ALU64_MOV_K), insn(JMP_EXIT)]
}

/// Loads [`return_zero`] as `prog_type` with an expected attach type and
/// target (a BTF id, 0 for none).
fn load_return_zero(
    prog_type: libbpf_sys::bpf_prog_type,
    attach_type: libbpf_sys::bpf_attach_type,
    attach_btf_id: u32,
) -> io::Result<OwnedFd> {
    let insns = return_zero();
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach_type,
        attach_btf_id,
        ..Default::default()
    };
    // SAFETY: the instructions and options outlive the call; the license
    // is a NUL-terminated string.
    let ret = unsafe {
        libbpf_sys::bpf_prog_load(
            prog_type,
            std::ptr::null(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    fd_result(ret)
}

/// Uprobe sessions (`uprobe.session`, Linux 6.13+), which `--probe memleak`
/// attaches its allocator probes with: a session link on `/`, which is not
/// a regular file, is refused with EBADF by a kernel that knows session
/// links (it got as far as checking the file) and with EINVAL by one that
/// does not know the attach type. libbpf detects multi-uprobe links the
/// same way.
pub fn uprobe_session() -> io::Result<()> {
    let prog = load_return_zero(
        libbpf_sys::BPF_PROG_TYPE_KPROBE,
        libbpf_sys::BPF_TRACE_UPROBE_SESSION,
        0,
    )?;
    let path = c"/";
    let offset: libc::c_ulong = 0;
    let mut opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        ..Default::default()
    };
    opts.__bindgen_anon_1.uprobe_multi =
        libbpf_sys::bpf_link_create_opts__bindgen_ty_1__bindgen_ty_3 {
            path: path.as_ptr(),
            offsets: &offset,
            cnt: 1,
            ..Default::default()
        };
    // SAFETY: the options and what they point to outlive the call.
    let ret = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            0,
            libbpf_sys::BPF_TRACE_UPROBE_SESSION,
            &opts,
        )
    };
    match fd_result(ret) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
        // A link on "/" cannot exist; had one been made, it is closed.
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The BTF id of kernel function or tracepoint `name` for `attach_type`.
fn vmlinux_btf_id(name: &str, attach_type: libbpf_sys::bpf_attach_type) -> io::Result<u32> {
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name; libbpf reads the kernel's BTF.
    let ret = unsafe { libbpf_sys::libbpf_find_vmlinux_btf_id(name.as_ptr(), attach_type) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    Ok(ret as u32)
}

/// A BTF-enabled tracepoint program (`tp_btf/<tracepoint>`, what
/// `--probe offcpu` and `wall` attach to `sched_switch`) loads.
pub fn btf_tracepoint(tracepoint: &str) -> io::Result<()> {
    let id = vmlinux_btf_id(tracepoint, libbpf_sys::BPF_TRACE_RAW_TP)?;
    load_return_zero(
        libbpf_sys::BPF_PROG_TYPE_TRACING,
        libbpf_sys::BPF_TRACE_RAW_TP,
        id,
    )
    .map(drop)
}

/// An fentry program on kernel function `function` loads and attaches
/// (BPF trampolines). flameprobe does not use fentry; this is for the
/// record. `function` should be one nothing calls in normal operation.
pub fn fentry(function: &str) -> io::Result<()> {
    let id = vmlinux_btf_id(function, libbpf_sys::BPF_TRACE_FENTRY)?;
    let prog = load_return_zero(
        libbpf_sys::BPF_PROG_TYPE_TRACING,
        libbpf_sys::BPF_TRACE_FENTRY,
        id,
    )?;
    // SAFETY: no options; the program descriptor is valid.
    let ret = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            0,
            libbpf_sys::BPF_TRACE_FENTRY,
            std::ptr::null(),
        )
    };
    fd_result(ret).map(drop)
}

/// The kernel's BPF run-time statistics (`--bpf-stats`), turned on and at
/// once off again.
pub fn bpf_stats() -> io::Result<()> {
    crate::probe::enable_bpf_stats().map(drop)
}

/// Opens a sampling perf event of `clock` on `cpu` for all tasks (what
/// `record` opens on every CPU), at a low frequency, and closes it.
pub fn perf_event(clock: SamplingClock, cpu: u32) -> io::Result<()> {
    perf::open_sampling(clock, cpu, 1).map(drop)
}
