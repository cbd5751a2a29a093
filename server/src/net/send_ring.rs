//! One frame to many sockets in one system call, through io_uring.
//!
//! Relaying an update to N peers is N `send`s, and on loopback the kernel's
//! share of each (entering and leaving the kernel, finding the socket, the
//! receiver's side of TCP) is most of a delivery's cost. Submitted as one
//! io_uring batch the same sends cost about a third less kernel time per
//! socket (README, "Relaying with io_uring").
//!
//! Every send carries `MSG_DONTWAIT`, which io_uring honours by completing
//! the request inline with whatever the socket took, or `EAGAIN`: exactly
//! `try_write`'s contract. So nothing is in flight when `send_all` returns,
//! and the caller queues the rest as it would after a short `try_write`. A
//! thread's ring checks that contract once, when it is created.
//!
//! Where io_uring is missing (not Linux, an old kernel, a seccomp profile
//! that refuses it, `TANDEM_IO_URING=false`), `send_all` returns `false` and
//! the caller writes one socket at a time.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns batching on or off for the whole process (`TANDEM_IO_URING`).
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Sends `frame` on each socket of `fds` without waiting, as `try_write`
/// would, and sets `results[i]` to what `fds[i]` took (an error when the
/// ring failed and the outcome is unknown: that socket cannot be written to
/// again). Returns `false`, having sent nothing, when this thread has no
/// usable ring.
pub fn send_all(frame: &Bytes, fds: &[RawFd], results: &mut Vec<io::Result<usize>>) -> bool {
    if !ENABLED.load(Ordering::Relaxed) {
        return false;
    }
    imp::send_all(frame, fds, results)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Once;

    use bytes::Bytes;
    use io_uring::{opcode, types, IoUring};

    /// Sends submitted per `io_uring_enter`: a larger batch costs less per
    /// send (the receivers' wake-ups are shared too), and 1,024 entries keep
    /// the ring near 100 KiB per room thread.
    const ENTRIES: u32 = 1024;

    const FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

    enum Ring {
        Unprobed,
        Unavailable,
        Ready(Box<IoUring>),
    }

    thread_local! {
        static RING: RefCell<Ring> = const { RefCell::new(Ring::Unprobed) };
    }

    pub fn send_all(frame: &Bytes, fds: &[RawFd], results: &mut Vec<io::Result<usize>>) -> bool {
        RING.with(|cell| {
            let Ok(mut ring) = cell.try_borrow_mut() else {
                return false; // not reentrant; cannot happen, costs nothing to refuse
            };
            if let Ring::Unprobed = *ring {
                *ring = match open() {
                    Ok(r) => Ring::Ready(Box::new(r)),
                    Err(e) => {
                        report_unavailable(&e);
                        Ring::Unavailable
                    }
                };
            }
            let Ring::Ready(uring) = &mut *ring else {
                return false;
            };
            results.clear();
            results.resize_with(fds.len(), || Err(io::ErrorKind::Other.into()));
            for (start, chunk) in (0..).step_by(ENTRIES as usize).zip(fds.chunks(ENTRIES as usize)) {
                if let Err(e) = submit(uring, frame, start, chunk, results) {
                    // Never seen. A send whose outcome is unknown may have
                    // written part of the frame, so its peer cannot be
                    // written to again: it keeps the error and is dropped
                    // (it resyncs when it reconnects). The ring is not used
                    // again.
                    tracing::error!(error = %e, "io_uring failed; relaying with one send per peer from now on");
                    *ring = Ring::Unavailable;
                    break;
                }
            }
            true
        })
    }

    /// One `io_uring_enter` for `chunk`; fills `results[start..]`.
    fn submit(
        uring: &mut IoUring,
        frame: &Bytes,
        start: usize,
        chunk: &[RawFd],
        results: &mut [io::Result<usize>],
    ) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        {
            let mut sq = uring.submission();
            for (k, &fd) in chunk.iter().enumerate() {
                let entry = opcode::Send::new(types::Fd(fd), frame.as_ptr(), len)
                    .flags(FLAGS)
                    .build()
                    .user_data((start + k) as u64);
                // SAFETY: `frame` outlives the request: every send completes
                // inline (MSG_DONTWAIT, checked by `open`) and this function
                // waits for all completions; on an error it leaks a clone
                // of `frame` when some are missing (`leak_if_pending`).
                if unsafe { sq.push(&entry) }.is_err() {
                    return Err(io::Error::other("submission queue full"));
                }
            }
        }
        let mut done = 0;
        while done < chunk.len() {
            match uring.submit_and_wait(chunk.len() - done) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    leak_if_pending(uring, frame, chunk.len() - done);
                    return Err(e);
                }
            }
            for cqe in uring.completion() {
                let Some(slot) = usize::try_from(cqe.user_data())
                    .ok()
                    .and_then(|i| results.get_mut(i))
                else {
                    continue;
                };
                *slot = match cqe.result() {
                    n if n >= 0 => Ok(n as usize),
                    e => Err(io::Error::from_raw_os_error(-e)),
                };
                done += 1;
            }
        }
        Ok(())
    }

    /// Sends the kernel may still read from: the frame is leaked rather
    /// than freed under them. Never seen; here so that an unexpected error
    /// from `io_uring_enter` cannot become a read of freed memory.
    fn leak_if_pending(uring: &mut IoUring, frame: &Bytes, pending: usize) {
        let reaped = uring.completion().count();
        if reaped < pending {
            std::mem::forget(frame.clone());
        }
    }

    /// A ring whose sends complete inline: a full socket answers `EAGAIN`
    /// at once instead of a request parked until it drains.
    fn open() -> io::Result<IoUring> {
        let mut uring = IoUring::new(ENTRIES)?;
        let mut probe = io_uring::Probe::new();
        uring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::Send::CODE) {
            return Err(io::Error::other("the kernel's io_uring has no send"));
        }
        let (a, _b) = std::os::unix::net::UnixStream::pair()?;
        a.set_nonblocking(true)?;
        let fill = [0u8; 4096];
        loop {
            match io::Write::write(&mut &a, &fill) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        static BYTE: [u8; 1] = [0];
        let entry = opcode::Send::new(types::Fd(a.as_raw_fd()), BYTE.as_ptr(), 1)
            .flags(FLAGS)
            .build();
        // SAFETY: `BYTE` is static, so it outlives any request.
        unsafe { uring.submission().push(&entry) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        uring.submit()?;
        let answer = uring.completion().next().map(|c| c.result());
        match answer {
            Some(r) if r == -libc::EAGAIN => Ok(uring),
            Some(r) => Err(io::Error::other(format!(
                "a send on a full socket returned {r} instead of EAGAIN"
            ))),
            None => Err(io::Error::other(
                "a send on a full socket waited instead of returning EAGAIN",
            )),
        }
    }

    fn report_unavailable(e: &io::Error) {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            tracing::info!(error = %e, "io_uring unavailable; relaying with one send per peer");
        });
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::os::fd::RawFd;

    use bytes::Bytes;

    pub fn send_all(_: &Bytes, _: &[RawFd], _: &mut Vec<io::Result<usize>>) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn every_socket_gets_the_frame_or_says_what_it_took() {
        let frame = Bytes::from_static(b"hello, peers");
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..5).map(|_| UnixStream::pair().expect("pair")).collect();
        // One peer's socket is full: it takes nothing and says EAGAIN.
        let full = &pairs[2].0;
        full.set_nonblocking(true).expect("nonblocking");
        while std::io::Write::write(&mut &*full, &[0u8; 4096]).is_ok() {}
        // One peer hung up: its send fails without stopping the others.
        let (gone_ours, gone_theirs) = UnixStream::pair().expect("pair");
        drop(gone_theirs);
        let mut fds: Vec<RawFd> = pairs.iter().map(|(a, _)| a.as_raw_fd()).collect();
        fds.push(gone_ours.as_raw_fd());
        let mut results = Vec::new();
        assert!(send_all(&frame, &fds, &mut results), "io_uring runs here");
        assert_eq!(results.len(), 6);
        for (i, r) in results.iter().enumerate() {
            match i {
                2 => assert_eq!(
                    r.as_ref().map_err(|e| e.kind()),
                    Err(io::ErrorKind::WouldBlock)
                ),
                5 => assert_eq!(
                    r.as_ref().map_err(|e| e.kind()),
                    Err(io::ErrorKind::BrokenPipe)
                ),
                _ => assert_eq!(r.as_ref().ok(), Some(&frame.len())),
            }
        }
        for (i, (_, theirs)) in pairs.iter().enumerate() {
            if i == 2 {
                continue;
            }
            let mut got = vec![0u8; frame.len()];
            (&*theirs).read_exact(&mut got).expect("read");
            assert_eq!(got, frame);
        }
    }

    #[test]
    fn more_sockets_than_the_ring_holds_all_get_the_frame() {
        let frame = Bytes::from_static(b"x");
        let pairs: Vec<(UnixStream, UnixStream)> = (0..2500)
            .map(|_| UnixStream::pair().expect("pair"))
            .collect();
        let fds: Vec<RawFd> = pairs.iter().map(|(a, _)| a.as_raw_fd()).collect();
        let mut results = Vec::new();
        assert!(send_all(&frame, &fds, &mut results));
        assert!(results.iter().all(|r| r.as_ref().ok() == Some(&1)));
        for (_, theirs) in &pairs {
            let mut got = [0u8; 1];
            (&*theirs).read_exact(&mut got).expect("read");
        }
    }
}
