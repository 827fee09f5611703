//! A TCP relay that adds a fixed one-way delay in each direction: puts a loopback Redis
//! "a network away" for benchmarks (`bench/ab.sh`, `REDIS_RTT_MS`), so round trips cost
//! what they cost in production (0.2–1 ms between hosts) instead of loopback's ~20 µs.
//!
//! ```text
//! cargo run --release --example delay_proxy -- LISTEN_ADDR TARGET_ADDR ONE_WAY_MICROS
//! ```
//!
//! Every chunk read on one side is written to the other `ONE_WAY_MICROS` after it was read,
//! in order; chunks in flight overlap (a delay line, not a stop-and-wait), so pipelined
//! traffic keeps its throughput and only pays the latency, as on a real link. Prints
//! `listening on ADDR` once bound; runs until killed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target, micros] = args.as_slice() else {
        return Err("usage: delay_proxy LISTEN_ADDR TARGET_ADDR ONE_WAY_MICROS".into());
    };
    let target: SocketAddr = target.parse()?;
    let delay = Duration::from_micros(micros.parse()?);
    let listener = TcpListener::bind(listen.as_str())?;
    println!("listening on {}", listener.local_addr()?);
    // Plain threads, not an async runtime: a thread's sleep is exact to tens of
    // microseconds, where tokio's timer rounds up to whole milliseconds. A benchmark's
    // gateway opens a handful of store connections, so four threads each is cheap.
    for client in listener.incoming() {
        let client = client?;
        let server = TcpStream::connect(target)?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        for (from, to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
            delay_line(from, to, delay);
        }
    }
    Ok(())
}

/// Copies `from` to `to` on two threads, each chunk `delay` after it was read.
fn delay_line(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
