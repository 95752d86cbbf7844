//! `chaos-proxy`: a transparent TCP proxy that delays every chunk it relays, so a chaos test can
//! make one KMA's links slow without touching the KMA.
//!
//! The harness starts it inside a KMA container's network namespace (`nsenter -t <pid> -n`) and
//! adds an iptables `REDIRECT` rule there that sends the KMA's connections to one peer to the
//! proxy's port, except those carrying `--mark`. The proxy reads each connection's original
//! destination (`SO_ORIGINAL_DST`), connects to it with `SO_MARK` set to `--mark` (so the rule
//! lets that connection through instead of looping it back), and relays both directions. With
//! `--to`, the destination is fixed instead (tests without iptables).
//!
//! Each chunk read is written on after `--delay-ms` ± a uniform `--jitter-ms`, in order: each
//! direction is a queue of chunks with a deadline each, so throughput is not one chunk per delay.
//! What the proxy must never do: reorder or alter bytes, buffer without bound, or die because one
//! connection failed (it logs the error on stderr and goes on).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Above a minute a link is no longer slow but dead, which other faults already cover.
const DELAY_MS_MAX: u64 = 60_000;
/// Default bound on concurrent connections; a KMA opens a handful per peer. Beyond it a new
/// connection is accepted and closed at once, so the client sees a failure, not a hang.
const CONNECTIONS_MAX: usize = 256;
/// Upper bound of `--connections-max`: each connection may buffer 2 × `IN_FLIGHT_BYTES_MAX`.
const CONNECTIONS_MAX_MAX: u64 = 4096;
/// Bytes read but not yet written, per direction. Beyond it the proxy stops reading, so the
/// sender sees backpressure (TCP window) as it would on a slow link. 1 MiB holds 150 ms of a
/// link at about 7 MiB/s, plenty for Raft traffic.
const IN_FLIGHT_BYTES_MAX: usize = 1 << 20;
/// Chunks queued per direction: bounds the per-chunk overhead when the sender writes tiny pieces.
const IN_FLIGHT_CHUNKS_MAX: usize = 1024;
/// One read; smaller than `IN_FLIGHT_BYTES_MAX` so that several chunks are in flight at once.
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Connecting to an unreachable destination would otherwise hold a connection slot for the
/// kernel's SYN retries (about two minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (file descriptors exhausted, say), so the loop does not spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Help for errors that should not happen and that nothing but the error itself explains.
const RETRY: &str = "unexpected: retry, and report the error if it persists";
/// Exit code for bad arguments, the same as clap's.
const EXIT_USAGE: u8 = 2;
/// Exit code for anything else that stops the proxy before it serves (a port in use).
const EXIT_OTHER: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "chaos-proxy",
    about = "Transparent TCP proxy that delays every chunk it relays (chaos tests)",
    after_help = "Inside a network namespace, with a rule such as\n  \
        iptables -t nat -A OUTPUT -p tcp -d <peer ip> -m mark ! --mark 19277 \
        -j REDIRECT --to-ports 17001\n\
        run\n  chaos-proxy --listen 127.0.0.1:17001 --delay-ms 150 --jitter-ms 50 --mark 19277\n\
        It prints `chaos-proxy: listening on ADDR` once it listens and exits on SIGTERM/SIGINT."
)]
struct Args {
    /// Address to listen on (port 0: any free port, printed on stdout).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Delay added to every chunk, each direction, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=DELAY_MS_MAX))]
    delay_ms: u64,
    /// Uniform jitter around the delay (delay ± jitter), in milliseconds; at most --delay-ms.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=DELAY_MS_MAX))]
    jitter_ms: u64,
    /// SO_MARK for the outgoing connections, which the REDIRECT rule must skip (needs
    /// CAP_NET_ADMIN).
    #[arg(long, value_name = "MARK")]
    mark: Option<u32>,
    /// Fixed destination HOST:PORT, instead of each connection's original destination.
    #[arg(long, value_name = "HOST:PORT")]
    to: Option<String>,
    /// Concurrent connections; beyond them new ones are accepted and closed.
    #[arg(long, value_name = "N", default_value_t = CONNECTIONS_MAX as u64,
          value_parser = clap::value_parser!(u64).range(1..=CONNECTIONS_MAX_MAX))]
    connections_max: u64,
}

/// An error that stops the proxy before it serves: what failed, then the next step.
struct Fatal {
    error: anyhow::Error,
    help: String,
    exit_code: u8,
}

impl Fatal {
    fn other(error: anyhow::Error, help: impl Into<String>) -> Fatal {
        Fatal { error, help: help.into(), exit_code: EXIT_OTHER }
    }
}

/// What every connection needs: where to connect, with which mark, and how long to hold chunks.
#[derive(Debug)]
struct Relay {
    to: Option<SocketAddr>,
    mark: Option<u32>,
    delay: Delay,
}

/// `delay ± jitter`, uniform, in microseconds so that jitter is not stepped by whole milliseconds.
#[derive(Debug, Clone, Copy)]
struct Delay {
    delay_us: u64,
    jitter_us: u64,
}

impl Delay {
    fn new(delay_ms: u64, jitter_ms: u64) -> Delay {
        assert!(delay_ms <= DELAY_MS_MAX, "delay {delay_ms} ms above the bound");
        assert!(jitter_ms <= delay_ms, "jitter {jitter_ms} ms above delay {delay_ms} ms");
        Delay { delay_us: delay_ms * 1000, jitter_us: jitter_ms * 1000 }
    }

    fn sample(&self, rng: &mut Rng) -> Duration {
        if self.jitter_us == 0 {
            return Duration::from_micros(self.delay_us);
        }
        let offset_us = rng.next_u64() % (2 * self.jitter_us + 1);
        Duration::from_micros(self.delay_us - self.jitter_us + offset_us)
    }
}

/// splitmix64: jitter needs no more than a cheap, well-spread sequence.
struct Rng {
    state: u64,
}

impl Rng {
    fn seeded(salt: u64) -> Rng {
        Rng { state: RandomState::new().hash_one(salt) }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: the traffic between a few KMAs needs no more, and it keeps the proxy light
    // inside a container with many cores.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the tokio runtime: {error}");
            return ExitCode::from(EXIT_OTHER);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("error: {:#}", fatal.error);
            eprintln!("help: {}", fatal.help);
            ExitCode::from(fatal.exit_code)
        }
    }
}

async fn run(args: Args) -> Result<(), Fatal> {
    if args.jitter_ms > args.delay_ms {
        return Err(Fatal {
            error: anyhow!(
                "--jitter-ms {} is above --delay-ms {}: a chunk cannot be delayed by less than zero",
                args.jitter_ms,
                args.delay_ms
            ),
            help: format!("pass --jitter-ms at most {} (or raise --delay-ms)", args.delay_ms),
            exit_code: EXIT_USAGE,
        });
    }
    let to = match &args.to {
        Some(to) => Some(resolve(to).await?),
        None => None,
    };
    if let Some(mark) = args.mark {
        check_mark(mark)?;
    }
    let relay =
        Arc::new(Relay { to, mark: args.mark, delay: Delay::new(args.delay_ms, args.jitter_ms) });
    let listener = bind(args.listen).await?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Fatal::other(anyhow!("installing the SIGTERM handler: {e}"), RETRY))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Fatal::other(anyhow!("installing the SIGINT handler: {e}"), RETRY))?;
    let connections_max = usize::try_from(args.connections_max).unwrap_or(CONNECTIONS_MAX);
    serve(&listener, &relay, connections_max, async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
            () = parent_gone() => eprintln!("chaos-proxy: the process that started it is gone"),
        }
    })
    .await;
    Ok(())
}

/// Resolves once the process that started the proxy has died (the proxy is then adopted): a
/// chaos run killed with SIGKILL cannot stop its proxies, and one left behind would keep
/// delaying the connections of whatever container next used its namespace.
async fn parent_gone() {
    let parent = std::os::unix::process::parent_id();
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(PARENT_POLL).await;
    }
}

const PARENT_POLL: Duration = Duration::from_millis(500);

async fn resolve(to: &str) -> Result<SocketAddr, Fatal> {
    let help = "give --to as HOST:PORT, e.g. 127.0.0.1:7000";
    let mut addrs = tokio::net::lookup_host(to)
        .await
        .with_context(|| format!("resolving --to {to}"))
        .map_err(|error| Fatal { error, help: help.into(), exit_code: EXIT_USAGE })?;
    addrs.next().ok_or_else(|| Fatal {
        error: anyhow!("resolving --to {to}: no address"),
        help: help.into(),
        exit_code: EXIT_USAGE,
    })
}

/// Fails early when the mark cannot be set: without it every outgoing connection would be
/// redirected to the proxy again, a loop that only ends at `--connections-max`.
fn check_mark(mark: u32) -> Result<(), Fatal> {
    let set = TcpSocket::new_v4().and_then(|socket| SockRef::from(&socket).set_mark(mark));
    set.with_context(|| format!("setting SO_MARK {mark} on a socket")).map_err(|error| {
        Fatal::other(
            error,
            "SO_MARK needs CAP_NET_ADMIN: run chaos-proxy as root (nsenter as root keeps it), \
             or leave out --mark when --to names the destination",
        )
    })
}

async fn bind(listen: SocketAddr) -> Result<TcpListener, Fatal> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        let help = match e.kind() {
            io::ErrorKind::AddrInUse => format!(
                "another process listens on {listen}: stop it (`ss -ltnp 'sport = :{}'` names \
                 it) or pick another --listen port",
                listen.port()
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                "{} is not an address of this host (or network namespace): pick one that \
                 `ip addr` shows, e.g. 127.0.0.1",
                listen.ip()
            ),
            io::ErrorKind::PermissionDenied => {
                "ports below 1024 need root (CAP_NET_BIND_SERVICE): pick a higher port".to_string()
            }
            _ => "check the --listen address".to_string(),
        };
        Fatal::other(anyhow!("binding --listen {listen}: {e}"), help)
    })?;
    let local = listener.local_addr().map_err(|e| {
        Fatal::other(anyhow!("reading the address of the listener on {listen}: {e}"), RETRY)
    })?;
    // The harness waits for this line; `println!` flushes stdout at the newline.
    println!("chaos-proxy: listening on {local}");
    Ok(listener)
}

/// Accepts until `shutdown` completes, then aborts every connection (closing its sockets).
async fn serve(
    listener: &TcpListener,
    relay: &Arc<Relay>,
    connections_max: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    assert!(connections_max >= 1);
    let mut connections = JoinSet::new();
    let mut connection_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        eprintln!("chaos-proxy: accepting a connection: {error}");
                        tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                        continue;
                    }
                };
                connection_id += 1;
                while let Some(joined) = connections.try_join_next() {
                    log_panic(joined);
                }
                if connections.len() >= connections_max {
                    eprintln!(
                        "chaos-proxy: connection {connection_id} from {peer}: {} connections \
                         open (--connections-max): closing it",
                        connections.len()
                    );
                    drop(stream);
                    continue;
                }
                let relay = Arc::clone(relay);
                connections.spawn(async move {
                    if let Err(error) = proxy(stream, &relay, connection_id).await {
                        eprintln!("chaos-proxy: connection {connection_id} from {peer}: {error:#}");
                    }
                });
            }
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                log_panic(joined);
            }
        }
    }
    connections.shutdown().await;
    assert!(connections.is_empty());
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        if error.is_panic() {
            eprintln!("chaos-proxy: a connection task panicked: {error}");
        }
    }
}

/// One accepted connection: find the destination, connect, relay both directions until both
/// have ended. Any error ends the whole connection (both sockets closed).
async fn proxy(inbound: TcpStream, relay: &Relay, connection_id: u64) -> anyhow::Result<()> {
    let dest = match relay.to {
        Some(to) => to,
        None => original_destination(&inbound)?,
    };
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, connect(dest, relay.mark))
        .await
        .map_err(|_| anyhow!("connecting to {dest}: no answer within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("connecting to {dest}"))?;
    // The delay is ours to add: Nagle would hold small chunks back on top of it.
    inbound.set_nodelay(true).context("setting TCP_NODELAY on the accepted socket")?;
    outbound.set_nodelay(true).with_context(|| format!("setting TCP_NODELAY towards {dest}"))?;
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let mut rng = Rng::seeded(connection_id);
    let rng_back = Rng::seeded(rng.next_u64());
    let forth = async {
        let relayed = direction(inbound_read, outbound_write, relay.delay, rng).await;
        relayed.with_context(|| format!("relaying to {dest}"))
    };
    let back = async {
        let relayed = direction(outbound_read, inbound_write, relay.delay, rng_back).await;
        relayed.with_context(|| format!("relaying from {dest}"))
    };
    tokio::try_join!(forth, back)?;
    Ok(())
}

fn original_destination(inbound: &TcpStream) -> anyhow::Result<SocketAddr> {
    let local = inbound.local_addr().context("reading the accepted socket's local address")?;
    let socket = SockRef::from(inbound);
    let original =
        if local.is_ipv4() { socket.original_dst_v4() } else { socket.original_dst_v6() };
    let dest = original
        .context("reading SO_ORIGINAL_DST (was the connection redirected by iptables?)")?
        .as_socket()
        .ok_or_else(|| anyhow!("SO_ORIGINAL_DST is not an IP address"))?;
    if dest == local {
        // Not redirected: relaying would connect the proxy to itself, again and again.
        return Err(anyhow!(
            "the original destination is the proxy itself ({local}): the connection was not \
             redirected, closing it (give --to for a fixed destination)"
        ));
    }
    Ok(dest)
}

async fn connect(dest: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let socket = if dest.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(mark) = mark {
        SockRef::from(&socket).set_mark(mark)?;
    }
    socket.connect(dest).await
}

/// A chunk read, to be written on at `deadline`; `_bytes` holds its share of
/// `IN_FLIGHT_BYTES_MAX` until it is written.
struct Chunk {
    deadline: Instant,
    data: Vec<u8>,
    _bytes: OwnedSemaphorePermit,
}

/// One direction: a reader that stamps chunks with their deadline and a writer that sends them
/// on in order, running together so that many chunks are in flight. At EOF, the writer flushes
/// what is queued and then shuts down its write side (half-close).
async fn direction(
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    delay: Delay,
    rng: Rng,
) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::channel(IN_FLIGHT_CHUNKS_MAX);
    let bytes = Arc::new(Semaphore::new(IN_FLIGHT_BYTES_MAX));
    tokio::try_join!(read_chunks(read, sender, bytes, delay, rng), write_chunks(write, receiver))?;
    Ok(())
}

async fn read_chunks(
    mut read: OwnedReadHalf,
    sender: mpsc::Sender<Chunk>,
    bytes: Arc<Semaphore>,
    delay: Delay,
    mut rng: Rng,
) -> anyhow::Result<()> {
    let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
    loop {
        let n = read.read(&mut buffer).await.context("reading")?;
        if n == 0 {
            return Ok(()); // EOF: dropping `sender` lets the writer flush and shut down.
        }
        let deadline = Instant::now() + delay.sample(&mut rng);
        assert!(n <= CHUNK_BYTES_MAX);
        let permits = u32::try_from(n).context("chunk size")?;
        // Waits while `IN_FLIGHT_BYTES_MAX` are queued: no reading, so the sender slows down.
        let Ok(permit) = Arc::clone(&bytes).acquire_many_owned(permits).await else {
            return Ok(()); // Never closed; nothing more to do if it were.
        };
        let chunk = Chunk { deadline, data: buffer[..n].to_vec(), _bytes: permit };
        if sender.send(chunk).await.is_err() {
            return Ok(()); // The writer has stopped (its error ends the connection).
        }
    }
}

async fn write_chunks(
    mut write: OwnedWriteHalf,
    mut receiver: mpsc::Receiver<Chunk>,
) -> anyhow::Result<()> {
    while let Some(chunk) = receiver.recv().await {
        tokio::time::sleep_until(chunk.deadline).await;
        write.write_all(&chunk.data).await.context("writing")?;
    }
    write.shutdown().await.context("shutting down the write side after EOF")?;
    Ok(())
}
