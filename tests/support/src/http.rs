//! Reading a daemon's HTTP endpoints (metrics) from inside its namespace.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::netns::{Netns, try_in_netns};

/// `GET <path>` from `127.0.0.1:<port>` inside `ns`: the whole response,
/// status line and headers included. The error says why nothing answered
/// (nothing listens yet, the namespace is gone).
pub fn try_http_get(ns: &Netns, port: u16, path: &str) -> io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    try_in_netns(ns, move || {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// [`try_http_get`], failing the test when nothing answers.
pub fn http_get(ns: &Netns, port: u16, path: &str) -> String {
    try_http_get(ns, port, path)
        .unwrap_or_else(|e| panic!("GET {path} on port {port} in {}: {e}", ns.name()))
}

/// The value of the Prometheus series `series` (name and labels, exactly as
/// exported) in the scrape `metrics`; `None` if it is not there.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
