//! Prometheus metrics: an HTTP listener (off unless `[metrics] listen` is
//! set) answering `GET /metrics` with the OpenMetrics text format.
//!
//! Nothing is counted here: every scrape takes a snapshot of the engine
//! (the counters its tasks keep anyway) and of the log outputs' drop count,
//! and encodes them with `prometheus-client` through [`Collector`]s over
//! those snapshots. The series are listed in README.md ("Metrics").

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use carp_engine::engine::InterfaceDrops;
use carp_engine::{LATENESS_BUCKETS_US, LatenessSummary, OffsetSummary, VhidStatus};
use carp_proto::{DropReason, State};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::blocking::off_runtime;
use crate::error::Error;
use crate::run::Shared;
use crate::{accept, logging};

/// A request line and headers fit in this; anything longer is not a scrape.
const MAX_REQUEST: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CLIENTS: usize = 8;
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape reports.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub vhids: Vec<VhidStatus>,
    /// Drops of no known VHID by interface (`*`: unknown interface).
    pub interface_drops: InterfaceDrops,
    pub lateness: LatenessSummary,
    /// Control socket connections refused by their peer credentials.
    pub control_refused: u64,
    /// Link and address events not delivered to a VHID (its queue was full).
    pub kernel_events_dropped: u64,
    /// The runtime thread's SCHED_RR priority (`realtime`), if real-time.
    pub realtime: Option<u8>,
    /// The origin of the advertisement grid, in seconds since the Unix
    /// epoch.
    pub advert_grid_origin: f64,
}

/// A running metrics listener; dropping it stops it.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bind the listener (so a bad address fails start-up or reload before
/// anything else changes).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Metrics { addr, source })
}

pub fn spawn(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) -> Server {
    Server {
        addr,
        task: tokio::spawn(serve(listener, shared)),
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    accept::serve("metrics", listener, MAX_CLIENTS, |stream: TcpStream| {
        let shared = Arc::clone(&shared);
        async move {
            if let Err(e) = connection(stream, &shared).await {
                debug!(error = %e, "metrics: connection");
            }
            // a scrape of many VHIDs is large; see `memory.rs`
            crate::memory::release_freed();
        }
    })
    .await
}

async fn connection(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let head = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let (status, body) = match route(&head) {
        Route::Metrics => match shared.snapshot().await {
            Some(s) => match render_off_runtime(s).await {
                Some(text) => ("200 OK", text),
                None => ("500 Internal Server Error", "encoding failed\n".into()),
            },
            None => ("503 Service Unavailable", "shutting down\n".into()),
        },
        Route::NotFound => ("404 Not Found", "try /metrics\n".into()),
        Route::Bad => ("400 Bad Request", "bad request\n".into()),
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.push_str(&body);
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(out.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.shutdown().await
}

/// The request line and headers, up to the blank line (at most
/// [`MAX_REQUEST`] bytes; the body of a GET is never read).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    Bad,
}

fn route(head: &[u8]) -> Route {
    let Some(line) = head.split(|b| *b == b'\n').next() else {
        return Route::Bad;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    if method == "GET" && path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// [`render`] on the blocking pool (see `blocking`), at most
/// [`MAX_CLIENTS`] at once (one per connection); `None` if encoding failed.
async fn render_off_runtime(snapshot: Snapshot) -> Option<String> {
    let log_lines_dropped = logging::lines_dropped();
    off_runtime(move || render(snapshot, log_lines_dropped))
        .await?
        .ok()
}

/// Encode a snapshot and the count of dropped log lines in the OpenMetrics
/// text format.
pub fn render(snapshot: Snapshot, log_lines_dropped: u64) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    registry.register_collector(Box::new(LogDrops(log_lines_dropped)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// `interface`, `vhid` and more labels.
type Labels = Vec<(&'static str, String)>;

fn vhid_labels(s: &VhidStatus) -> Labels {
    vec![
        ("interface", s.key.interface.clone()),
        ("vhid", s.key.vhid.to_string()),
    ]
}

fn with(mut l: Labels, key: &'static str, value: &str) -> Labels {
    l.push((key, value.to_string()));
    l
}

/// One metric family: a descriptor and its samples.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, m) in samples {
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

const STATES: [State; 3] = [State::Init, State::Backup, State::Master];

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = &self.vhids;
        family(
            &mut enc,
            "carpd_vhid_state",
            "Current state of the VHID: 1 for the state it is in, 0 for the others",
            MetricType::Gauge,
            v.iter().flat_map(|s| {
                STATES.iter().map(move |st| {
                    (
                        with(vhid_labels(s), "state", st.as_str()),
                        ConstGauge::new(i64::from(s.state == *st)),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "carpd_vhid_transitions",
            "State transitions by reason since the VHID (re)started",
            MetricType::Counter,
            v.iter().flat_map(|s| {
                s.transitions_by_reason
                    .iter()
                    .map(move |(r, n)| (with(vhid_labels(s), "reason", r), ConstCounter::new(*n)))
            }),
        )?;
        family(
            &mut enc,
            "carpd_vhid_advertisements_sent",
            "Advertisements sent",
            MetricType::Counter,
            v.iter()
                .map(|s| (vhid_labels(s), ConstCounter::new(s.adverts_sent))),
        )?;
        family(
            &mut enc,
            "carpd_vhid_advertisements_received",
            "Valid advertisements received",
            MetricType::Counter,
            v.iter()
                .map(|s| (vhid_labels(s), ConstCounter::new(s.adverts_received))),
        )?;
        family(
            &mut enc,
            "carpd_vhid_drops",
            "Advertisements for the VHID dropped, by reason",
            MetricType::Counter,
            v.iter().flat_map(|s| {
                DropReason::ALL.iter().map(move |r| {
                    let n = s.drops.get(r.as_str()).copied().unwrap_or(0);
                    (
                        with(vhid_labels(s), "reason", r.as_str()),
                        ConstCounter::new(n),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "carpd_interface_drops",
            "Packets dropped before they could be matched to a VHID, by interface (\"*\": one without VHIDs) and reason",
            MetricType::Counter,
            self.interface_drops.iter().flat_map(|(i, d)| {
                d.iter().map(move |(r, n)| {
                    (
                        vec![("interface", i.clone()), ("reason", r.to_string())],
                        ConstCounter::new(*n),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "carpd_vhid_demote",
            "Demotion in effect",
            MetricType::Gauge,
            v.iter()
                .map(|s| (vhid_labels(s), ConstGauge::new(i64::from(s.demote)))),
        )?;
        family(
            &mut enc,
            "carpd_vhid_priority",
            "VRRP priority advertised (after demotion); VRRP VHIDs only",
            MetricType::Gauge,
            v.iter().filter_map(|s| {
                s.priority
                    .map(|p| (vhid_labels(s), ConstGauge::new(i64::from(p))))
            }),
        )?;
        family(
            &mut enc,
            "carpd_hook_runs",
            "Up/down hook commands started",
            MetricType::Counter,
            v.iter()
                .map(|s| (vhid_labels(s), ConstCounter::new(s.hook_runs))),
        )?;
        family(
            &mut enc,
            "carpd_hook_failures",
            "Hook commands that exited non-zero, were killed, timed out or could not be run",
            MetricType::Counter,
            v.iter()
                .map(|s| (vhid_labels(s), ConstCounter::new(s.hook_failures))),
        )?;
        family(
            &mut enc,
            "carpd_address_restored",
            "Addresses removed by something else while MASTER and added back (or the up hook run again)",
            MetricType::Counter,
            v.iter()
                .map(|s| (vhid_labels(s), ConstCounter::new(s.address_restored))),
        )?;
        family(
            &mut enc,
            "carpd_address_removed_foreign",
            "Addresses of a VHID added by something else while not MASTER and removed",
            MetricType::Counter,
            v.iter()
                .map(|s| (vhid_labels(s), ConstCounter::new(s.address_removed_foreign))),
        )?;
        family(
            &mut enc,
            "carpd_address_conflicts",
            "ARP packets and neighbour advertisements claiming a MASTER's address for another MAC",
            MetricType::Counter,
            v.iter()
                .map(|s| (vhid_labels(s), ConstCounter::new(s.address_conflicts))),
        )?;
        family(
            &mut enc,
            "carpd_control_refused",
            "Control socket connections refused: the peer was not root, carpd's user or in control_group",
            MetricType::Counter,
            [(Labels::new(), ConstCounter::new(self.control_refused))],
        )?;
        family(
            &mut enc,
            "carpd_kernel_events_dropped",
            "Link and address events not delivered to a VHID because its command queue was full",
            MetricType::Counter,
            [(Labels::new(), ConstCounter::new(self.kernel_events_dropped))],
        )?;
        family(
            &mut enc,
            "carpd_realtime",
            "SCHED_RR priority of the runtime thread, memory locked (realtime = true); 0 when not real-time",
            MetricType::Gauge,
            [(
                Labels::new(),
                ConstGauge::new(i64::from(self.realtime.unwrap_or(0))),
            )],
        )?;
        family(
            &mut enc,
            "carpd_advert_grid_origin_seconds",
            "Unix time of the origin of the advertisement grid: MASTERs advertise at origin + interval * (vhid % 4) / 4 + k * interval",
            MetricType::Gauge,
            [(Labels::new(), ConstGauge::new(self.advert_grid_origin))],
        )?;
        histogram(
            &mut enc,
            "carpd_timer_lateness_seconds",
            "How late advertisements left after their deadline (those sent at or after it)",
            &self.lateness.late,
        )?;
        histogram(
            &mut enc,
            "carpd_timer_earliness_seconds",
            "How early advertisements left before their deadline (those sent before it)",
            &self.lateness.early,
        )?;
        Ok(())
    }
}

/// One side of the advertisement timing as a histogram in seconds.
fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    side: &OffsetSummary,
) -> Result<(), std::fmt::Error> {
    // The encoder takes per-bucket counts and accumulates them itself.
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(LATENESS_BUCKETS_US.len() + 1);
    for (bound, cumulative) in LATENESS_BUCKETS_US.iter().zip(side.buckets) {
        buckets.push((us_to_secs(*bound), cumulative.saturating_sub(below)));
        below = cumulative;
    }
    buckets.push((f64::INFINITY, side.count.saturating_sub(below)));
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(us_to_secs(side.sum_us), side.count, &buckets, None)
}

/// Log lines dropped because a log output was full (its reader stalled).
#[derive(Debug)]
struct LogDrops(u64);

impl Collector for LogDrops {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        family(
            &mut enc,
            "carpd_log_lines_dropped",
            "Log lines dropped because the log output (stderr or syslog) was not read fast enough",
            MetricType::Counter,
            [(Labels::new(), ConstCounter::new(self.0))],
        )
    }
}

fn us_to_secs(us: u64) -> f64 {
    Duration::from_micros(us).as_secs_f64()
}

/// A one-line description of where metrics are served, for logs.
pub fn describe(addr: Option<SocketAddr>) -> String {
    let mut s = String::new();
    match addr {
        Some(a) => {
            let _ = write!(s, "http://{a}/metrics");
        }
        None => s.push_str("off"),
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use carp_engine::{VhidKey, VirtualAddr};

    /// A VHID with a bit of everything set (shared with the control tests).
    pub(crate) fn status(state: State) -> VhidStatus {
        VhidStatus {
            key: VhidKey {
                interface: "eth0".into(),
                vhid: 7,
            },
            state,
            addresses: vec![VirtualAddr {
                addr: "192.0.2.1".parse().unwrap(),
                prefix_len: 24,
            }],
            advbase: 1,
            protocol: "carp",
            priority: None,
            advskew: 0,
            demote: 0,
            master: None,
            in_state_for: Duration::from_secs(3),
            last_transition: Some("BACKUP -> MASTER (master_down)".into()),
            last_reason: Some("master_down"),
            transitions: 2,
            transitions_by_reason: [("startup", 1), ("master_down", 1)].into(),
            hook_runs: 1,
            hook_failures: 0,
            adverts_sent: 5,
            adverts_received: 0,
            drops: [("bad_hmac", 2)].into(),
            address_restored: 1,
            address_removed_foreign: 0,
            address_conflicts: 4,
            waiting_for: None,
            peers: Vec::new(),
            explanation: None,
        }
    }

    #[test]
    fn scrape_text() {
        let mut late = OffsetSummary {
            count: 3,
            sum_us: 1600,
            ..OffsetSummary::default()
        };
        late.buckets = [3; LATENESS_BUCKETS_US.len()];
        late.buckets[..2].copy_from_slice(&[1, 2]);
        let mut early = OffsetSummary {
            count: 4,
            sum_us: 14_000,
            ..OffsetSummary::default()
        };
        // all between 3 and 4 ms
        early.buckets = [4; LATENESS_BUCKETS_US.len()];
        let at_4ms = LATENESS_BUCKETS_US
            .iter()
            .position(|b| *b == 4_000)
            .unwrap();
        early.buckets[..at_4ms].fill(0);
        let lateness = LatenessSummary { early, late };
        let text = render(
            Snapshot {
                vhids: vec![
                    status(State::Master),
                    VhidStatus {
                        key: VhidKey {
                            interface: "eth0".into(),
                            vhid: 9,
                        },
                        protocol: "vrrp3",
                        priority: Some(150),
                        ..status(State::Backup)
                    },
                ],
                interface_drops: [("*".to_string(), [("bad_ttl", 4)].into())].into(),
                lateness,
                control_refused: 2,
                kernel_events_dropped: 0,
                realtime: Some(50),
                advert_grid_origin: 1_795_000_000.5,
            },
            11,
        )
        .unwrap();
        for line in [
            "# TYPE carpd_vhid_state gauge",
            r#"carpd_vhid_state{interface="eth0",vhid="7",state="MASTER"} 1"#,
            r#"carpd_vhid_state{interface="eth0",vhid="7",state="BACKUP"} 0"#,
            r#"carpd_vhid_transitions_total{interface="eth0",vhid="7",reason="master_down"} 1"#,
            r#"carpd_vhid_advertisements_sent_total{interface="eth0",vhid="7"} 5"#,
            r#"carpd_vhid_advertisements_received_total{interface="eth0",vhid="7"} 0"#,
            r#"carpd_vhid_drops_total{interface="eth0",vhid="7",reason="bad_hmac"} 2"#,
            r#"carpd_vhid_drops_total{interface="eth0",vhid="7",reason="bad_ttl"} 0"#,
            r#"carpd_interface_drops_total{interface="*",reason="bad_ttl"} 4"#,
            r#"carpd_hook_runs_total{interface="eth0",vhid="7"} 1"#,
            r#"carpd_hook_failures_total{interface="eth0",vhid="7"} 0"#,
            r#"carpd_address_restored_total{interface="eth0",vhid="7"} 1"#,
            r#"carpd_address_conflicts_total{interface="eth0",vhid="7"} 4"#,
            r#"carpd_vhid_demote{interface="eth0",vhid="7"} 0"#,
            r#"carpd_vhid_priority{interface="eth0",vhid="9"} 150"#,
            "carpd_control_refused_total 2",
            "# TYPE carpd_log_lines_dropped counter",
            "carpd_log_lines_dropped_total 11",
            "carpd_kernel_events_dropped_total 0",
            "# TYPE carpd_timer_lateness_seconds histogram",
            r#"carpd_timer_lateness_seconds_bucket{le="0.0001"} 1"#,
            r#"carpd_timer_lateness_seconds_bucket{le="+Inf"} 3"#,
            "carpd_timer_lateness_seconds_count 3",
            "# TYPE carpd_timer_earliness_seconds histogram",
            r#"carpd_timer_earliness_seconds_bucket{le="0.003"} 0"#,
            r#"carpd_timer_earliness_seconds_bucket{le="0.004"} 4"#,
            r#"carpd_timer_earliness_seconds_bucket{le="+Inf"} 4"#,
            "carpd_timer_earliness_seconds_count 4",
            "carpd_timer_earliness_seconds_sum 0.014",
            "# TYPE carpd_realtime gauge",
            "carpd_realtime 50",
            "carpd_advert_grid_origin_seconds 1795000000.5",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(
            text.contains("carpd_timer_lateness_seconds_sum 0.0016"),
            "{text}"
        );
        // a CARP VHID has no priority
        assert!(
            !text.contains(r#"carpd_vhid_priority{interface="eth0",vhid="7"}"#),
            "{text}"
        );
    }

    /// The runtime thread runs other tasks (VHID timers) while a large
    /// scrape is encoded: rendered inline, the encoding would finish within
    /// one poll, before the other task ran once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_scrape_is_encoded_off_the_runtime_thread() {
        let vhids = (0..4000u32)
            .map(|i| VhidStatus {
                key: VhidKey {
                    interface: format!("eth{}", i / 250),
                    vhid: u8::try_from(i % 250 + 1).unwrap(),
                },
                ..status(State::Master)
            })
            .collect();
        let snapshot = Snapshot {
            vhids,
            ..Snapshot::default()
        };
        let (text, ran_meanwhile) =
            crate::blocking::turns_of_others_during(render_off_runtime(snapshot)).await;
        let text = text.unwrap();
        assert!(
            text.contains(r#"carpd_vhid_state{interface="eth15",vhid="250",state="MASTER"} 1"#)
        );
        assert!(
            ran_meanwhile > 0,
            "nothing else ran while the scrape was encoded"
        );
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"\xff\xfe"), Route::Bad);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::Bad);
        assert_eq!(route(b""), Route::Bad);
    }
}
