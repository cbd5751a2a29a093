//! Keeping idle connections alive and finding dead ones, for all of a
//! server's connections from one thread.
//!
//! Two things need a write to an idle connection now and then:
//!
//! - The stock client reconnects after 30 s without an application message
//!   (WebSocket pings are invisible to page code), so every connection hears
//!   from the server at least once per ping interval: the room's own
//!   messages, or else a keepalive message (an empty awareness update,
//!   chosen by the room side: this module knows no Yjs; SPEC §2).
//! - A connection not heard from for a ping interval is pinged, to tell a
//!   silent connection from a dead one. One that leaves its ping unanswered
//!   for the ping timeout is closed. Anything it sends answers.
//!
//! One thread does this for every connection. It visits a connection only
//! when something of it falls due, on a wheel of `clock::STEP` slots, and
//! writes each step's keepalives to all their sockets as one io_uring batch
//! (`Fanout`). A timer in each session would wake that session's task at
//! every tick and write with a system call of its own: at thousands of idle
//! connections those wake-ups and writes were most of an idle server's work
//! (docs/performance.md, "Many connections on one node").
//!
//! A ping that falls due waits for the connection's next keepalive, to go
//! out in the same write, unless nothing was heard for two intervals: a
//! silent connection that answers its pings costs one write per interval,
//! every other one carrying a ping, and one read of a pong.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::net::outbox::{Fanout, Outbox, Overflow};
use crate::net::wire::{self, OP_PING};
use crate::net::{clock, CloseCode};

/// The wheel's slots at most (about three minutes of steps): the memory of
/// the wheel does not grow with the configured ping interval.
const MAX_SLOTS: u64 = 4096;

/// The ping interval and timeout are held to this many steps (about 1,700
/// years), so that no sum of steps overflows, whatever duration the
/// settings name.
const MAX_STEPS: u64 = 1 << 40;

/// The longest the keepalive thread sleeps.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What a session tells the keepalive about its connection.
#[derive(Debug)]
pub struct Liveness {
    /// When the client was last heard from, in `clock` steps.
    heard: AtomicU64,
    /// The session holds a frame it read and cannot hand on yet (a full
    /// room mailbox): the client may be sending, but nothing is read.
    waiting: AtomicBool,
}

impl Liveness {
    /// The client sent something: it is alive.
    pub fn heard(&self) {
        let now = clock::now();
        // Stored only when the step changed: a busy connection's reads
        // leave the cache line alone.
        if self.heard.load(Ordering::Relaxed) != now {
            self.heard.store(now, Ordering::Relaxed);
        }
    }

    /// Whether the session is waiting to hand on a frame; a client that is
    /// sending into a full mailbox is alive.
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }
}

/// The keepalive of one server: `watch` each connection once it serves.
pub struct Keepalive {
    joining: Arc<Mutex<Vec<Entry>>>,
}

/// A watched connection, as the keepalive thread holds it.
struct Entry {
    /// For the log.
    conn: u64,
    /// Weak: a connection that ended is closed at once, not at its next
    /// visit, and the visit then finds it gone.
    outbox: Weak<Outbox>,
    liveness: Arc<Liveness>,
    /// When the ping that nothing has answered yet was sent.
    unanswered: Option<u64>,
}

/// What a visit found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Nothing,
    Ping,
    Keepalive,
    PingAndKeepalive,
    /// The ping timeout passed: close the connection.
    Close,
}

/// The ping interval and timeout in `clock` steps.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// A keepalive goes out this many steps after the last data frame: one
    /// step under the interval, as stamps are late by up to a step.
    keepalive: u64,
    interval: u64,
    timeout: u64,
}

impl Schedule {
    fn new(interval: Duration, timeout: Duration) -> Self {
        let interval = clock::steps(interval).clamp(2, MAX_STEPS);
        Schedule {
            keepalive: interval - 1,
            interval,
            timeout: clock::steps(timeout).min(MAX_STEPS).max(interval + 1),
        }
    }

    /// The longest wait from one visit to the next, in steps.
    fn horizon(&self) -> u64 {
        self.keepalive.max(2 * self.interval).max(self.timeout)
    }

    /// What is due for a connection at step `now`, given when it was last
    /// sent data and heard from, and its unanswered ping; updates the
    /// latter. Returns the step of the next visit with it.
    fn visit(
        &self,
        now: u64,
        last_data: u64,
        heard: u64,
        unanswered: &mut Option<u64>,
    ) -> (Due, u64) {
        if unanswered.is_some_and(|ping| heard >= ping) {
            // Any read stamped in the step of the ping or later answers
            // it: a pong often comes back within the step.
            *unanswered = None;
        }
        if let Some(ping) = *unanswered {
            if now >= ping + self.timeout {
                return (Due::Close, now);
            }
        }
        let keepalive = now >= last_data + self.keepalive;
        let ping = unanswered.is_none()
            && ((keepalive && now >= heard + self.interval) || now >= heard + 2 * self.interval);
        if ping {
            *unanswered = Some(now);
        }
        let due = match (ping, keepalive) {
            (true, true) => Due::PingAndKeepalive,
            (true, false) => Due::Ping,
            (false, true) => Due::Keepalive,
            (false, false) => Due::Nothing,
        };
        let last_data = if keepalive { now } else { last_data };
        let next_ping = match *unanswered {
            Some(ping) => ping + self.timeout,
            None => heard + 2 * self.interval,
        };
        let next = (last_data + self.keepalive).min(next_ping).max(now + 1);
        (due, next)
    }
}

impl Keepalive {
    /// Starts the keepalive thread of a server, which sends `message` as a
    /// binary frame to keep a connection alive. It stops once `shutdown`
    /// is cancelled or the `Keepalive` is dropped.
    pub fn start(
        interval: Duration,
        timeout: Duration,
        message: &[u8],
        shutdown: CancellationToken,
    ) -> std::io::Result<Keepalive> {
        let joining = Arc::new(Mutex::new(Vec::new()));
        let schedule = Schedule::new(interval, timeout);
        let mut wheel = Wheel::new(schedule, message, Arc::downgrade(&joining));
        std::thread::Builder::new()
            .name("tandem-keepalive".into())
            .spawn(move || wheel.run(&shutdown))?;
        Ok(Keepalive { joining })
    }

    /// Starts watching a connection that now serves; it is dropped from
    /// the watch once its outbox is closed or gone.
    pub fn watch(&self, conn: u64, outbox: &Arc<Outbox>) -> Arc<Liveness> {
        let liveness = Arc::new(Liveness {
            heard: AtomicU64::new(clock::now()),
            waiting: AtomicBool::new(false),
        });
        let entry = Entry {
            conn,
            outbox: Arc::downgrade(outbox),
            liveness: Arc::clone(&liveness),
            unanswered: None,
        };
        lock(&self.joining).push(entry);
        liveness
    }
}

fn lock(joining: &Mutex<Vec<Entry>>) -> std::sync::MutexGuard<'_, Vec<Entry>> {
    // Held to push or swap a vector; a poisoned one is still a valid vector.
    joining.lock().unwrap_or_else(|p| p.into_inner())
}

/// The keepalive thread's state: every watched connection, in the slot of
/// the step it is next visited at.
struct Wheel {
    schedule: Schedule,
    joining: Weak<Mutex<Vec<Entry>>>,
    slots: Vec<Vec<Entry>>,
    /// The last step whose slot was visited.
    swept: u64,
    keepalive: Bytes,
    ping_and_keepalive: Bytes,
    /// This step's writes: the connections that get each frame.
    keepalives: Vec<Arc<Outbox>>,
    pings_and_keepalives: Vec<Arc<Outbox>>,
    fanout: Fanout,
}

impl Wheel {
    fn new(schedule: Schedule, message: &[u8], joining: Weak<Mutex<Vec<Entry>>>) -> Self {
        // One slot more than the longest wait, so an entry never lands in
        // the slot being visited; at most `MAX_SLOTS`, however long the
        // configured interval (a wait past the wheel is cut to its length
        // and the connection visited again).
        let len = usize::try_from((schedule.horizon() + 2).min(MAX_SLOTS)).unwrap_or(1024);
        let keepalive = wire::binary_frame(message);
        let (ping, ping_len) = wire::header(OP_PING, 0);
        let mut both = BytesMut::with_capacity(ping_len + keepalive.len());
        both.put_slice(&ping[..ping_len]);
        both.put_slice(&keepalive);
        Wheel {
            schedule,
            joining,
            slots: (0..len).map(|_| Vec::new()).collect(),
            swept: clock::tick(),
            keepalive,
            ping_and_keepalive: both.freeze(),
            keepalives: Vec::new(),
            pings_and_keepalives: Vec::new(),
            fanout: Fanout::default(),
        }
    }

    fn run(&mut self, shutdown: &CancellationToken) {
        loop {
            let next = clock::instant_of(self.next_busy_step());
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            if shutdown.is_cancelled() {
                return;
            }
            let Some(joining) = self.joining.upgrade() else {
                return; // the server is gone
            };
            let now = clock::tick();
            let joined = std::mem::take(&mut *lock(&joining));
            drop(joining);
            // A bug in a visit must not end every connection's keepalive:
            // the entries of that sweep are lost (their clients reconnect
            // when they hear nothing), the others carry on.
            let swept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.sweep(now, joined);
            }));
            if swept.is_err() {
                tracing::error!("the keepalive's sweep panicked; carrying on");
                self.swept = now;
                // Nothing of the broken sweep is written later.
                self.keepalives.clear();
                self.pings_and_keepalives.clear();
            }
        }
    }

    /// The next step whose slot holds a connection, or the step a second
    /// on: the thread sleeps through empty slots (a server with few
    /// connections wakes seldom) but looks at least once a second for
    /// connections that joined and for the shutdown. A joiner cannot fall
    /// due sooner: its stamps are no older than the last sweep, and nothing
    /// falls due before a keepalive's wait from them.
    ///
    /// While the thread sleeps the clock stands still, so stamps taken
    /// meanwhile are early: keepalives and pings can only come sooner for
    /// it, and a ping's answer is never stamped before the ping's own step.
    fn next_busy_step(&self) -> u64 {
        let len = self.slots.len() as u64;
        let most = clock::steps(MAX_SLEEP)
            .min(self.schedule.keepalive)
            .clamp(1, len - 1);
        (1..=most)
            .map(|ahead| self.swept + ahead)
            .find(|step| !self.slots[usize::try_from(step % len).unwrap_or(0)].is_empty())
            .unwrap_or(self.swept + most)
    }

    /// Visits every connection due by step `now` and writes what is due.
    fn sweep(&mut self, now: u64, joined: Vec<Entry>) {
        for entry in joined {
            // Placed at the step it falls due (it acts only if due now).
            self.visit(entry, now);
        }
        let len = self.slots.len() as u64;
        // The slots of every step since the last sweep: after a sleep
        // through empty slots or a stall (at most a whole turn).
        let first = (self.swept + 1).max(now.saturating_sub(len - 1));
        for step in first..=now {
            let slot = usize::try_from(step % len).unwrap_or(0);
            for entry in std::mem::take(&mut self.slots[slot]) {
                self.visit(entry, now);
            }
        }
        self.swept = now;
        self.write();
    }

    fn place(&mut self, entry: Entry, step: u64) {
        let len = self.slots.len() as u64;
        let slot = usize::try_from(step % len).unwrap_or(0);
        self.slots[slot].push(entry);
    }

    fn visit(&mut self, mut entry: Entry, now: u64) {
        let Some(outbox) = entry.outbox.upgrade() else {
            return; // the connection ended
        };
        if outbox.is_closed() {
            return;
        }
        let heard = if entry.liveness.waiting.load(Ordering::Relaxed) {
            now
        } else {
            entry.liveness.heard.load(Ordering::Relaxed)
        };
        let (due, next) =
            self.schedule
                .visit(now, outbox.last_data(), heard, &mut entry.unanswered);
        match due {
            Due::Nothing => {}
            Due::Ping => outbox.ping(),
            Due::Keepalive => self.keepalives.push(outbox),
            Due::PingAndKeepalive => self.pings_and_keepalives.push(outbox),
            Due::Close => {
                tracing::info!(conn = entry.conn, "no answer to pings; closing");
                outbox.close(CloseCode::GoingAway, "ping timeout");
                return;
            }
        }
        // A visit acts only on what is due, so one before `next` is harmless.
        let last = now + self.slots.len() as u64 - 1;
        self.place(entry, next.min(last));
    }

    /// Writes this step's keepalives, one batch per frame. A connection
    /// whose queue overflows is closed by its outbox, and dropped from the
    /// watch at its next visit.
    fn write(&mut self) {
        for (frame, outboxes) in [
            (&self.keepalive, &mut self.keepalives),
            (&self.ping_and_keepalive, &mut self.pings_and_keepalives),
        ] {
            if outboxes.is_empty() {
                continue;
            }
            let list = &*outboxes;
            self.fanout.push_frame(
                frame,
                0..list.len(),
                |i| &list[i],
                |_, _: Result<(), Overflow>| {},
            );
            outboxes.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: &[u8] = &[1, 1, 0];

    /// A connection as `watch` hands it to the thread, heard from now.
    fn watched(outbox: Weak<Outbox>) -> Entry {
        Entry {
            conn: 1,
            outbox,
            liveness: Arc::new(Liveness {
                heard: AtomicU64::new(clock::now()),
                waiting: AtomicBool::new(false),
            }),
            unanswered: None,
        }
    }

    fn schedule() -> Schedule {
        // 1 s and 2 s: 20 and 40 steps.
        Schedule::new(Duration::from_secs(1), Duration::from_secs(2))
    }

    #[test]
    fn a_connection_sent_data_recently_gets_no_keepalive() {
        let s = schedule();
        let mut unanswered = None;
        let (due, next) = s.visit(100, 95, 100, &mut unanswered);
        assert_eq!(due, Due::Nothing);
        assert_eq!(
            next,
            95 + s.keepalive,
            "visited again when the keepalive falls due"
        );
    }

    #[test]
    fn a_silent_connection_that_answers_gets_a_ping_every_other_keepalive() {
        let s = schedule();
        let (mut last_data, mut heard, mut unanswered) = (0, 0, None);
        let mut now = 1;
        let mut writes = Vec::new();
        while now < 400 {
            let (due, next) = s.visit(now, last_data, heard, &mut unanswered);
            match due {
                Due::Keepalive => last_data = now,
                Due::PingAndKeepalive => {
                    last_data = now;
                    heard = now; // the pong comes back within the step
                }
                Due::Nothing => {}
                other => panic!("{other:?} at step {now}"),
            }
            if due != Due::Nothing {
                writes.push((now, due));
            }
            assert!(next > now);
            now = next;
        }
        // One write each 19 steps (under the interval), alternately with a ping.
        for pair in writes.windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, s.keepalive, "{writes:?}");
            assert_ne!(pair[0].1, pair[1].1, "{writes:?}");
        }
        assert!(writes.len() >= 20);
    }

    #[test]
    fn an_unanswered_ping_closes_after_the_timeout_and_an_answer_clears_it() {
        let s = schedule();
        let mut unanswered = None;
        // Not heard for two intervals, data flowing: a ping on its own.
        let (due, next) = s.visit(100, 99, 60, &mut unanswered);
        assert_eq!(due, Due::Ping);
        assert_eq!(unanswered, Some(100));
        assert_eq!(next, 99 + s.keepalive);
        // No answer; data flowing; the timeout comes at step 140.
        let (due, _) = s.visit(139, 139, 60, &mut unanswered);
        assert_eq!(due, Due::Nothing);
        let (due, _) = s.visit(140, 139, 60, &mut unanswered);
        assert_eq!(due, Due::Close);
        // Heard in the step of the ping: answered, and no ping falls due
        // until two intervals after it.
        let mut unanswered = Some(100);
        let (due, next) = s.visit(120, 119, 100, &mut unanswered);
        assert_eq!(due, Due::Nothing);
        assert_eq!(unanswered, None);
        assert_eq!(next, 119 + s.keepalive);
        let (due, _) = s.visit(140, 139, 100, &mut unanswered);
        assert_eq!(due, Due::Ping);
    }

    #[test]
    fn a_talking_connection_is_never_pinged() {
        let s = schedule();
        let mut unanswered = None;
        for now in (10..1000).step_by(7) {
            let (due, _) = s.visit(now, now - 1, now - 3, &mut unanswered);
            assert_eq!(due, Due::Nothing);
        }
    }

    #[test]
    fn the_thread_sleeps_through_empty_slots() {
        let joining = Arc::new(Mutex::new(Vec::new()));
        let mut wheel = Wheel::new(schedule(), KEEPALIVE, Arc::downgrade(&joining));
        let swept = wheel.swept;
        // Nothing watched: a look a keepalive's wait on (19 steps at a 1 s
        // interval; a second, 20 steps, at longer ones), no sooner.
        assert_eq!(wheel.next_busy_step(), swept + 19);
        wheel.place(watched(Weak::new()), swept + 7);
        assert_eq!(wheel.next_busy_step(), swept + 7);
        // A connection that ended is dropped at its visit.
        wheel.sweep(swept + 7, Vec::new());
        assert!(wheel.slots.iter().all(Vec::is_empty));
    }

    #[tokio::test]
    async fn a_day_long_interval_keeps_the_wheel_small() {
        let day = Duration::from_secs(86_400);
        let joining = Arc::new(Mutex::new(Vec::new()));
        let mut wheel = Wheel::new(
            Schedule::new(day, 2 * day),
            KEEPALIVE,
            Arc::downgrade(&joining),
        );
        assert_eq!(wheel.slots.len() as u64, MAX_SLOTS);
        // A live connection, due in a day, is visited again at the wheel's
        // last step instead.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let outbox = Outbox::new(Arc::new(server), 1 << 20);
        let now = wheel.swept;
        wheel.visit(watched(Arc::downgrade(&outbox)), now);
        let placed: Vec<u64> = (0..MAX_SLOTS)
            .filter(|&i| !wheel.slots[i as usize].is_empty())
            .collect();
        assert_eq!(placed, vec![(now + MAX_SLOTS - 1) % MAX_SLOTS]);
    }

    #[test]
    fn an_interval_of_any_length_schedules_without_overflow() {
        // `humantime` reads durations up to `Duration::MAX`.
        let s = Schedule::new(Duration::MAX, Duration::MAX);
        let mut unanswered = None;
        let (due, next) = s.visit(1_000, 1_000, 1_000, &mut unanswered);
        assert_eq!(due, Due::Nothing, "a connection heard from this step");
        assert!(next > 1_000);
        let joining = Arc::new(Mutex::new(Vec::new()));
        let wheel = Wheel::new(s, KEEPALIVE, Arc::downgrade(&joining));
        assert_eq!(wheel.slots.len() as u64, MAX_SLOTS);
        assert!(wheel.next_busy_step() > wheel.swept);
    }

    #[test]
    fn no_wait_outlasts_the_wheel() {
        let s = schedule();
        for (last_data, heard, unanswered) in [(0, 0, None), (50, 0, None), (0, 50, Some(49))] {
            let mut u = unanswered;
            let (_, next) = s.visit(50, last_data, heard, &mut u);
            assert!(next - 50 <= s.horizon(), "{next}");
        }
    }
}
