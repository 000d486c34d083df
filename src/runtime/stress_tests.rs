//! Virtual-bus stress tests: many threads on one bus at once, listeners
//! and buses opened and closed while frames flow. They check that nothing
//! is lost, duplicated or reordered per sender, and that nothing deadlocks;
//! `scripts/sanitize` runs them (with the other runtime tests) under
//! ThreadSanitizer and AddressSanitizer, where data races and memory errors
//! in the runtime's threads show up. Sizes are small enough for a
//! sanitizer build (a few seconds each); they wait on conditions, never on
//! the wall clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use canx_core::frame::make_id;
use canx_core::{CanFrame, Frame};

use super::*;

const T: Duration = Duration::from_secs(30);

fn open(name: &str) -> Bus {
    Bus::open(BusConfig::virtual_bus(name)).unwrap()
}

fn frame(id: u32, data: &[u8]) -> Frame {
    Frame::Can(CanFrame::new(make_id(id, false).unwrap(), data).unwrap())
}

/// 8 threads send on one shared bus; a second bus receives every frame
/// exactly once, in each sender's order (the identifier says which thread,
/// the data the sequence number).
#[test]
fn eight_threads_send_on_one_bus_nothing_lost_or_duplicated() {
    const THREADS: u32 = 8;
    const EACH: u32 = 1_500;
    let tx = Arc::new(open("stress-8"));
    let rx = open("stress-8");
    let l = rx.listen(ListenerFilter::default(), (THREADS * EACH) as usize, DropPolicy::DropNewest);
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    tx.send(&frame(0x100 + t, &i.to_le_bytes()), T).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; THREADS as usize];
    for _ in 0..THREADS * EACH {
        let f = l.recv_timeout(T).expect("every frame arrives");
        let t = (f.frame.key() - 0x100) as usize;
        let i = u32::from_le_bytes(f.frame.data().try_into().unwrap());
        assert_eq!(i, next[t], "thread {t}: frame {i} out of order or duplicated");
        next[t] += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    assert!(l.recv_timeout(Duration::from_millis(50)).is_none(), "a frame arrived twice");
    assert_eq!(l.dropped(), 0);
    assert_eq!(tx.stats().sent, u64::from(THREADS * EACH));
}

/// Listeners come and go, and buses join and leave the virtual bus, while
/// 2 threads send and 2 threads read: no deadlock, no panic, and the
/// listener that stays sees every frame.
#[test]
fn listeners_and_buses_churn_while_frames_flow() {
    const EACH: u32 = 2_000;
    let tx = Arc::new(open("stress-churn"));
    let rx = Arc::new(open("stress-churn"));
    let steady = rx.listen(ListenerFilter::default(), 2 * EACH as usize, DropPolicy::DropNewest);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..2u32 {
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..EACH {
                tx.send(&frame(0x200 + t, &i.to_le_bytes()), T).unwrap();
            }
        }));
    }
    let mut churners = Vec::new();
    // Listeners added and removed on the receiving bus, read from meanwhile.
    for _ in 0..2 {
        let rx = rx.clone();
        let stop = stop.clone();
        churners.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let l = rx.listen(ListenerFilter::default(), 16, DropPolicy::DropOldest);
                for _ in 0..4 {
                    let _ = l.recv_timeout(Duration::from_millis(1));
                }
                rx.unlisten(&l);
            }
        }));
    }
    // Whole buses joining and leaving the same virtual bus.
    {
        let stop = stop.clone();
        churners.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let b = open("stress-churn");
                let l = b.listen(ListenerFilter::default(), 8, DropPolicy::DropOldest);
                let _ = l.recv_timeout(Duration::from_millis(2));
                b.shutdown();
            }
        }));
    }
    for _ in 0..2 * EACH {
        steady.recv_timeout(T).expect("the steady listener sees every frame");
    }
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    assert_eq!(steady.dropped(), 0);
}

/// `shutdown` from one thread while others send and receive: every call
/// returns (a frame or `Closed`), nothing hangs.
#[test]
fn shutdown_races_send_and_receive() {
    for round in 0..20 {
        let name = format!("stress-shut-{round}");
        let a = Arc::new(open(&name));
        let b = Arc::new(open(&name));
        let l = b.listen(ListenerFilter::default(), 64, DropPolicy::DropOldest);
        let sender = {
            let a = a.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u32 {
                    match a.send(&frame(0x300, &i.to_le_bytes()), Duration::from_millis(100)) {
                        Ok(()) => {}
                        Err(Error::Closed) => return,
                        Err(e) => panic!("send during shutdown: {e}"),
                    }
                }
            })
        };
        let reader = std::thread::spawn(move || while l.recv_timeout(Duration::from_millis(20)).is_some() {});
        std::thread::sleep(Duration::from_millis(2));
        let (a2, b2) = (a.clone(), b.clone());
        let closer = std::thread::spawn(move || {
            b2.shutdown();
            a2.shutdown();
        });
        closer.join().unwrap();
        sender.join().unwrap();
        reader.join().unwrap();
        assert!(a.is_shut_down() && b.is_shut_down());
    }
}
