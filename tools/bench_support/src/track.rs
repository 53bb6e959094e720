//! Which messages reached how many of their recipients: the bookkeeping of
//! a fan-out load (messages in flight, completed, measured, lost, stray).

use std::cell::{Cell, RefCell};

use crate::digits;

/// The deliveries of numbered messages `SEQ TIMESTAMP...` (10 digits, a
/// space, 20 digits of ns since the load's epoch) to `recipients` each, on
/// one thread (the generator's).
#[derive(Debug)]
pub struct Tracker {
    /// How many receive each message.
    pub recipients: u32,
    /// Deliveries per message, indexed by sequence number.
    pub counts: RefCell<Vec<u32>>,
    /// Messages from `track_from` on, sent but not yet at every recipient.
    pub in_flight: Cell<usize>,
    /// Completions of earlier messages (a probe or warm-up message arriving
    /// late) do not count against `in_flight`.
    pub track_from: Cell<u64>,
    /// Messages with a sequence number from here on are measured.
    pub measure_from: Cell<u64>,
    /// Measured deliveries.
    pub delivered: Cell<u64>,
    /// Every delivery, measured or not.
    pub received: Cell<u64>,
    /// When the last measured delivery came (ns since the epoch).
    pub last_receive_ns: Cell<u64>,
    /// Tracked messages that reached every recipient.
    pub completed: Cell<u64>,
    /// Deliveries that were not this load's messages.
    pub malformed: Cell<u64>,
    /// Deliveries beyond `recipients` for one message.
    pub stray: Cell<u64>,
}

/// What one delivery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Its message has now reached every recipient (and is tracked).
    pub completed: bool,
    /// Send-to-receive time in ns, when the message is measured.
    pub latency_ns: Option<u64>,
}

impl Tracker {
    /// Nothing sent yet; nothing measured until [`Tracker::measure_from`] is set.
    pub fn new(recipients: usize) -> Tracker {
        Tracker {
            recipients: recipients as u32,
            counts: RefCell::new(Vec::with_capacity(1 << 16)),
            in_flight: Cell::new(0),
            track_from: Cell::new(0),
            measure_from: Cell::new(u64::MAX),
            delivered: Cell::new(0),
            received: Cell::new(0),
            last_receive_ns: Cell::new(0),
            completed: Cell::new(0),
            malformed: Cell::new(0),
            stray: Cell::new(0),
        }
    }

    /// A new message: its sequence number; it counts as in flight.
    pub fn send(&self) -> u64 {
        let mut counts = self.counts.borrow_mut();
        counts.push(0);
        self.in_flight.set(self.in_flight.get() + 1);
        counts.len() as u64 - 1
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.counts.borrow().len() as u64
    }

    /// Starts a phase: only messages sent from now on count as in flight.
    pub fn new_phase(&self) -> u64 {
        let from = self.sent();
        self.track_from.set(from);
        self.in_flight.set(0);
        from
    }

    /// The most recipients one message has reached.
    pub fn best(&self) -> u32 {
        self.counts.borrow().iter().copied().max().unwrap_or(0)
    }

    /// A delivery of `m` (`SEQ TIMESTAMP...`) received at `now` (ns since the epoch).
    pub fn receive(&self, m: &[u8], now: u64) -> Receipt {
        let (Some(seq), Some(ts)) = (m.get(..10).and_then(digits), m.get(11..31).and_then(digits))
        else {
            self.malformed.set(self.malformed.get() + 1);
            return Receipt::default();
        };
        let mut counts = self.counts.borrow_mut();
        let Some(c) = counts.get_mut(seq as usize) else {
            self.malformed.set(self.malformed.get() + 1);
            return Receipt::default();
        };
        *c += 1;
        if *c > self.recipients {
            self.stray.set(self.stray.get() + 1);
            return Receipt::default();
        }
        self.received.set(self.received.get() + 1);
        let completed = *c == self.recipients && seq >= self.track_from.get();
        if completed {
            self.completed.set(self.completed.get() + 1);
            self.in_flight.set(self.in_flight.get().saturating_sub(1));
        }
        let latency_ns = (seq >= self.measure_from.get()).then(|| {
            self.delivered.set(self.delivered.get() + 1);
            self.last_receive_ns.set(now);
            now.saturating_sub(ts)
        });
        Receipt {
            completed,
            latency_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, ts: u64) -> Vec<u8> {
        format!("{seq:010} {ts:020} xxxx").into_bytes()
    }

    #[test]
    fn counts_completions_measures_and_strays() {
        let t = Tracker::new(2);
        let warm = t.send();
        assert_eq!(t.new_phase(), 1);
        t.measure_from.set(1);
        let m = t.send();
        assert_eq!((warm, m, t.in_flight.get()), (0, 1, 1));
        // The warm-up message completes without counting against in_flight.
        t.receive(&message(warm, 0), 10);
        assert!(!t.receive(&message(warm, 0), 10).completed);
        assert_eq!(t.in_flight.get(), 1);
        assert_eq!(
            t.receive(&message(m, 100), 150),
            Receipt {
                completed: false,
                latency_ns: Some(50)
            }
        );
        assert!(t.receive(&message(m, 100), 170).completed);
        assert_eq!(
            (t.in_flight.get(), t.completed.get(), t.delivered.get()),
            (0, 1, 2)
        );
        assert_eq!(t.receive(&message(m, 100), 180), Receipt::default());
        assert_eq!(t.stray.get(), 1);
        t.receive(b"junk", 1);
        t.receive(&message(99, 0), 1);
        assert_eq!(t.malformed.get(), 2);
        assert_eq!(
            (t.best(), t.last_receive_ns.get(), t.received.get()),
            (3, 170, 4)
        );
    }
}
