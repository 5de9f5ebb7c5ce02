//! Native journald output: structured fields (INTERFACE and VHID from the
//! per-VHID span, STATE, REASON, ...) through `tracing-journald`, never on
//! the runtime's threads.
//!
//! `tracing-journald` sends each record synchronously on a blocking
//! datagram socket, which waits while journald's queue is full. So the
//! subscriber only copies each event (its fields, and those of its spans)
//! into a bounded queue ([`Relay`]); one writer thread replays the copies
//! into its own subscriber that holds the journald layer. A full queue drops
//! the record and counts it, as the other outputs do.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use tracing::field::{Field, Value, ValueSet, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Metadata, Span, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::logging::Progress;

/// Fields replayed per event or span; more are left out (none of carpd's
/// has that many).
const MAX_FIELDS: usize = 32;

/// Whether systemd connected stderr to the journal: `JOURNAL_STREAM` names
/// the device and inode of that stream (`<dev>:<ino>`), and fd 2 still is
/// it (a child whose stderr was redirected inherits the variable, not the
/// stream), as systemd.exec(5) documents.
pub(crate) fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream == format!("{}:{}", st.st_dev, st.st_ino)
}

/// The fields of one event or span, copied.
#[derive(Debug, Clone)]
struct Fields(Vec<(&'static str, String)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
}

/// One event with the spans it was in (root first), to replay.
#[derive(Debug)]
struct Copied {
    spans: Vec<(&'static Metadata<'static>, Fields)>,
    meta: &'static Metadata<'static>,
    fields: Fields,
}

/// The subscriber's side: copies events into the bounded queue.
#[derive(Debug)]
pub(crate) struct Relay {
    queue: SyncSender<Copied>,
    counts: Arc<Counts>,
}

/// What went into the queue and what did not fit.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) queued: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

/// Open journald's socket through `tracing-journald` and start the writer
/// thread; `queued` records may wait for it. Returns the layer and its
/// counts; the writer reports each send to `progress`.
pub(crate) fn start(
    queued: usize,
    identifier: &str,
    progress: Arc<Progress>,
) -> io::Result<(Relay, Arc<Counts>)> {
    let layer = tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier(identifier.to_string());
    let (queue, rx) = mpsc::sync_channel(queued);
    let counts = Arc::new(Counts::default());
    std::thread::Builder::new()
        .name("carpd-log-journald".into())
        .spawn(move || replay_all(rx, layer, &progress))?;
    let relay = Relay {
        queue,
        counts: Arc::clone(&counts),
    };
    Ok((relay, counts))
}

impl<S> Layer<S> for Relay
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let spans = ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|scope| scope.from_root())
            .map(|span| {
                let fields = span
                    .extensions()
                    .get::<Fields>()
                    .cloned()
                    .unwrap_or(Fields(Vec::new()));
                (span.metadata(), fields)
            })
            .collect();
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let copied = Copied {
            spans,
            meta: event.metadata(),
            fields,
        };
        match self.queue.try_send(copied) {
            Ok(()) => {
                self.counts.queued.fetch_add(1, Ordering::Release);
            }
            // full, or the writer thread is gone: never wait
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writer thread: every copy replayed into a subscriber of its own
/// that holds the journald layer.
fn replay_all(rx: Receiver<Copied>, layer: tracing_journald::Layer, progress: &Progress) {
    let dispatch = Dispatch::new(Registry::default().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        for copied in rx {
            progress.begin();
            replay(&copied.spans, &copied);
            progress.end();
        }
    });
}

/// Recreate the spans (outermost first), then the event inside them.
fn replay(spans: &[(&'static Metadata<'static>, Fields)], copied: &Copied) {
    match spans.split_first() {
        None => with_values(copied.meta, &copied.fields, |values| {
            Event::dispatch(copied.meta, values);
        }),
        Some(((meta, fields), inner)) => {
            let span = with_values(meta, fields, |values| Span::new(meta, values));
            span.in_scope(|| replay(inner, copied));
        }
    }
}

/// Call `f` with `fields` as a value set of `meta`'s field set.
fn with_values<R>(
    meta: &'static Metadata<'static>,
    fields: &Fields,
    f: impl FnOnce(&ValueSet<'_>) -> R,
) -> R {
    let set = meta.fields();
    let resolved: Vec<(Field, &str)> = fields
        .0
        .iter()
        .filter_map(|(name, value)| Some((set.field(name)?, value.as_str())))
        .take(MAX_FIELDS)
        .collect();
    let Some(first) = set.iter().next() else {
        let none: [(&Field, Option<&dyn Value>); 0] = [];
        return f(&set.value_set(&none));
    };
    // A value set takes an array: the unused entries name a field with no
    // value, which is skipped.
    let mut values: [(&Field, Option<&dyn Value>); MAX_FIELDS] = [(&first, None); MAX_FIELDS];
    for (slot, (field, value)) in values.iter_mut().zip(&resolved) {
        *slot = (field, Some(value as &dyn Value));
    }
    f(&set.value_set(&values))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records every event it sees with the fields of its spans, as the
    /// journald layer would.
    #[derive(Default, Clone)]
    struct Capture(Arc<Mutex<Vec<Vec<CapturedField>>>>);

    /// One field's name and value, as captured.
    type CapturedField = (&'static str, String);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut fields = Fields(Vec::new());
            attrs.record(&mut fields);
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(fields);
            }
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let mut all = Vec::new();
            for span in ctx
                .event_scope(event)
                .into_iter()
                .flat_map(|s| s.from_root())
            {
                if let Some(f) = span.extensions().get::<Fields>() {
                    all.extend(f.0.iter().cloned());
                }
            }
            let mut fields = Fields(Vec::new());
            event.record(&mut fields);
            all.extend(fields.0);
            self.0.lock().unwrap().push(all);
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_copies_replay_with_their_span_fields() {
        let (queue, rx) = mpsc::sync_channel(1);
        let counts = Arc::new(Counts::default());
        let relay = Relay {
            queue,
            counts: Arc::clone(&counts),
        };
        let source = Dispatch::new(Registry::default().with(relay));
        tracing::dispatcher::with_default(&source, || {
            let span = tracing::error_span!("vhid", interface = "eth0", vhid = 7u8);
            let _in = span.enter();
            for n in 0..3 {
                tracing::info!(state = "MASTER", reason = "master_down", n, "transition");
            }
        });
        assert_eq!(counts.queued.load(Ordering::Relaxed), 1);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 2);

        let capture = Capture::default();
        let sink = Dispatch::new(Registry::default().with(capture.clone()));
        let copied = rx.try_recv().unwrap();
        tracing::dispatcher::with_default(&sink, || replay(&copied.spans, &copied));
        let seen = capture.0.lock().unwrap().clone();
        let want: Vec<(&str, String)> = [
            ("interface", "eth0"),
            ("vhid", "7"),
            ("message", "transition"),
            ("state", "MASTER"),
            ("reason", "master_down"),
            ("n", "0"),
        ]
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
        assert_eq!(seen, vec![want]);
    }
}
